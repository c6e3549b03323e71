"""Answer probability and loss of question/answer rows (TOFU's "probability": exp of minus the mean token NLL)."""

from __future__ import annotations

import torch

from ..data import UnlearningCollator
from ..losses import mean_nll, sequence_logps


@torch.no_grad()
def answer_nll(model, rows, batch_size: int = 32, pad_token_id: int = 0) -> torch.Tensor:
    """Per-example mean answer-token NLL of tokenised rows (`input_ids`, `labels`) under `model`, in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad = UnlearningCollator(pad_token_id).pad
    values = []
    for start in range(0, len(rows), batch_size):
        batch = pad([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
        batch = {key: value.to(device) for key, value in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits
        values.append(mean_nll(*sequence_logps(logits, batch["labels"])).float().cpu())
    model.train(was_training)
    return torch.cat(values)


def answer_stats(model, rows, batch_size: int = 32, pad_token_id: int = 0) -> dict[str, float]:
    """`{"probability": mean exp(−ℓ), "loss": mean ℓ}` over rows, ℓ the per-example mean answer-token NLL."""
    nll = answer_nll(model, rows, batch_size, pad_token_id)
    return {"probability": nll.neg().exp().mean().item(), "loss": nll.mean().item()}
