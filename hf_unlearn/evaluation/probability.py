"""One batched, teacher-forced pass of a model over tokenised rows, and the per-example numbers built on it.

Answer tokens are masked exactly as in training (`labels` of -100 are prompt or padding; position t predicts the
label at t+1). Everything is vectorised over the batch: no per-token Python loops.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data import UnlearningCollator
from ..losses import IGNORE_INDEX, align_logits_and_labels
from .metrics import standardised_logps


@torch.no_grad()
def token_statistics(
    model, rows, batch_size: int = 32, pad_token_id: int = 0, min_k_plus_plus: bool = True
) -> dict[str, torch.Tensor]:
    """Per answer position, padded to `[N, T]`: `token_logps` (log p of the label), `mask` (answer positions),
    `correct` (teacher-forced argmax equals the label) and, when asked, `min_k_plus_plus` (standardised log-prob);
    per example: `sum_logps` and `num_tokens`. Rows are batched by length (less padding) and returned in their
    order. The model runs in eval mode and is put back as it was."""
    if len(rows) == 0:
        raise ValueError("token_statistics got no rows: pass at least one tokenised example.")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad = UnlearningCollator(pad_token_id).pad
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    accepts_logits_to_keep = "logits_to_keep" in inspect.signature(model.forward).parameters
    names = ["token_logps", "mask", "correct"] + (["min_k_plus_plus"] if min_k_plus_plus else [])
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    try:
        for start in tqdm(range(0, len(rows), batch_size), desc="scoring answers", leave=False, disable=None):
            batch = pad([rows[i] for i in order[start:start + batch_size]])
            batch = {key: value.to(device) for key, value in batch.items()}
            inputs = {"input_ids": batch["input_ids"], "attention_mask": batch.get("attention_mask")}
            width = batch["labels"].shape[-1]
            if accepts_logits_to_keep:  # the vocabulary projection only where answers are predicted
                first_answer = int((batch["labels"] != IGNORE_INDEX).float().argmax(-1).min())
                inputs["logits_to_keep"] = min(width, width - first_answer + 1)
            logits = model(**inputs).logits
            logits, labels = align_logits_and_labels(logits, batch["labels"][:, width - logits.shape[1]:])
            mask = labels != IGNORE_INDEX
            logp = logits.float().log_softmax(-1)
            index = labels.masked_fill(~mask, 0)
            parts["token_logps"].append((logp.gather(-1, index.unsqueeze(-1)).squeeze(-1) * mask).cpu())
            parts["mask"].append(mask.cpu())
            parts["correct"].append(((logits.argmax(-1) == labels) & mask).cpu())
            if min_k_plus_plus:
                parts["min_k_plus_plus"].append((standardised_logps(logp, index) * mask).cpu())
    finally:
        model.train(was_training)
    width = max(part.shape[-1] for part in parts["mask"])
    restore = torch.empty(len(order), dtype=torch.long)
    restore[torch.tensor(order)] = torch.arange(len(order))
    stats = {name: torch.cat([F.pad(p, (0, width - p.shape[-1])) for p in values])[restore]
             for name, values in parts.items()}  # fmt: skip
    stats["sum_logps"] = stats["token_logps"].sum(-1)
    stats["num_tokens"] = stats["mask"].sum(-1)
    return stats


def answer_nll(model, rows, batch_size: int = 32, pad_token_id: int = 0) -> torch.Tensor:
    """Per-example mean answer-token NLL of tokenised rows (`input_ids`, `labels`) under `model`."""
    stats = token_statistics(model, rows, batch_size, pad_token_id, min_k_plus_plus=False)
    return -stats["sum_logps"] / stats["num_tokens"].clamp(min=1)


def answer_stats(model, rows, batch_size: int = 32, pad_token_id: int = 0) -> dict[str, float]:
    """`{"probability": mean exp(−ℓ), "loss": mean ℓ}` over rows, ℓ the per-example mean answer-token NLL."""
    nll = answer_nll(model, rows, batch_size, pad_token_id)
    return {"probability": nll.neg().exp().mean().item(), "loss": nll.mean().item()}
