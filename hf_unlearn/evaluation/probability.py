"""One batched, teacher-forced pass of a model over tokenised rows, and the per-example numbers built on it.

Answer tokens are masked exactly as in training (`labels` of -100 are prompt or padding; position t predicts the
label at t+1). Everything is vectorised over the batch: no per-token Python loops.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from ..data import UnlearningCollator
from ..losses import (
    IGNORE_INDEX,
    align_logits_and_labels,
    kept_labels,
    logits_to_keep,
    mean_nll,
    takes_logits_to_keep,
    token_logps,
)
from ..progress import bar
from .checks import check_int, check_positive_int, check_rows, show
from .metrics import standardised_logps


def _prompt_length(row: dict) -> int:
    """Tokens before the first scored label: the prompt of a question/answer row."""
    labels = torch.as_tensor(row["labels"])
    scored = (labels != IGNORE_INDEX).nonzero()
    return int(scored[0]) if len(scored) else len(labels)


def _shared_prompts(rows) -> tuple[list[list[int]], list[int]] | None:
    """Unique prompts and each row's prompt index, when rows share prompts enough to be worth it (TOFU scores five
    perturbed answers, a paraphrase and the answer of every question); None otherwise."""
    index: dict[tuple[int, ...], int] = {}
    of_row = []
    for row in rows:
        prompt = tuple(int(t) for t in row["input_ids"][: _prompt_length(row)])
        if not prompt:
            return None
        of_row.append(index.setdefault(prompt, len(index)))
    return ([list(p) for p in index], of_row) if len(index) <= 0.6 * len(rows) else None


def _batch_parts(logits, labels, min_k_plus_plus: bool) -> dict[str, torch.Tensor]:
    """The per-position numbers of one batch, aligned as `token_logps` aligns them: causal `labels` `[B, T]` give
    `[B, T-1]`; `labels` `[B]` (the one label each row's logits `[B, V]` predict) give `[B, 1]`."""
    logps, mask = token_logps(logits, labels)
    logits, labels = align_logits_and_labels(logits, labels)
    parts = {"token_logps": logps.cpu(), "mask": mask.cpu(), "correct": ((logits.argmax(-1) == labels) & mask).cpu()}
    if min_k_plus_plus:
        parts["min_k_plus_plus"] = (standardised_logps(logits, logps) * mask).cpu()
    return parts


def _full_batches(model, rows, batch_size, pad, device, min_k_plus_plus):
    """Each row in one pass (rows sorted by length, so batches carry little padding)."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    for start in bar(range(0, len(rows), batch_size), "scoring answers"):
        indices = order[start:start + batch_size]
        batch = {key: value.to(device) for key, value in pad([rows[i] for i in indices]).items()}
        # the vocabulary projection only where answers are predicted
        logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                       **logits_to_keep(model, batch["labels"])).logits  # fmt: skip
        yield indices, _batch_parts(logits, kept_labels(batch["labels"], logits), min_k_plus_plus)


def _prefix_batches(model, rows, prompts, of_row, batch_size, pad_token_id, device, min_k_plus_plus):
    """Rows that share a prompt: the prompt runs once (left-padded, KV cache kept), then all its continuations run
    against that cache. The same numbers as one pass per row, for a fraction of the prompt compute."""
    rows_of: list[list[int]] = [[] for _ in prompts]
    for i, j in enumerate(of_row):
        rows_of[j].append(i)
    # continuations carry most of the compute: batch prompts whose longest continuations are alike (less padding)
    longest = [max(len(rows[i]["input_ids"]) for i in rows_of[j]) - len(prompts[j]) for j in range(len(prompts))]
    order = sorted(range(len(prompts)), key=longest.__getitem__)
    per_batch = max(1, round(batch_size * len(prompts) / len(rows)))  # about batch_size continuations a pass
    for start in bar(range(0, len(order), per_batch), "scoring answers"):
        chosen = order[start:start + per_batch]
        width = max(len(prompts[j]) for j in chosen)
        prompt_ids = torch.full((len(chosen), width), pad_token_id, dtype=torch.long)
        prompt_mask = torch.zeros((len(chosen), width), dtype=torch.long)
        for k, j in enumerate(chosen):  # left padding: every prompt ends at the last column
            prompt_ids[k, width - len(prompts[j]):] = torch.tensor(prompts[j])
            prompt_mask[k, width - len(prompts[j]):] = 1
        prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
        positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
        keep = {"logits_to_keep": 1} if takes_logits_to_keep(model) else {}  # only the last position predicts an answer
        out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions, use_cache=True, **keep)
        indices = [i for j in chosen for i in rows_of[j]]
        source = torch.tensor([k for k, j in enumerate(chosen) for _ in rows_of[j]], device=device)
        cache = out.past_key_values
        cache.batch_select_indices(source)
        tails = [{"input_ids": rows[i]["input_ids"][len(prompts[of_row[i]]):],
                  "labels": rows[i]["labels"][len(prompts[of_row[i]]):]} for i in indices]  # fmt: skip
        tail = UnlearningCollator(pad_token_id).pad(tails)
        tail_ids, labels = tail["input_ids"].to(device), tail["labels"].to(device)
        tail_mask = (torch.arange(tail_ids.shape[1]) < torch.tensor([len(t["input_ids"]) for t in tails])[:, None])
        mask = torch.cat([prompt_mask[source], tail_mask.long().to(device)], dim=1)
        lengths = prompt_mask.sum(-1)[source]
        tail_positions = lengths[:, None] + torch.arange(tail_ids.shape[1], device=device)
        tail_logits = model(input_ids=tail_ids, attention_mask=mask, position_ids=tail_positions,
                            past_key_values=cache, use_cache=True).logits  # fmt: skip
        # the prompt's last position predicts the first continuation token; continuation token t predicts t+1
        first = _batch_parts(out.logits[:, -1][source], labels[:, 0], min_k_plus_plus)
        rest = _batch_parts(tail_logits, labels, min_k_plus_plus)
        yield indices, {name: torch.cat([first[name], rest[name]], dim=1) for name in first}


@torch.no_grad()
def token_statistics(
    model, rows, batch_size: int = 32, pad_token_id: int = 0, min_k_plus_plus: bool = True
) -> dict[str, torch.Tensor]:
    """Per answer position, padded to `[N, T]`: `token_logps` (log p of the label), `mask` (answer positions),
    `correct` (teacher-forced argmax equals the label) and, when asked, `min_k_plus_plus` (standardised log-prob);
    per example: `sum_logps` and `num_tokens`. Rows are returned in their order; columns are answer positions, padded
    (with `mask` False) on either side.

    Rows are batched by length (less padding). Where rows share prompts (TOFU scores seven answers per question), each
    prompt runs once and its answers run against its KV cache. The model runs in eval mode and is put back as it was.
    """
    check_token_rows(rows, batch_size, pad_token_id)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    shared = _shared_prompts(rows) if _takes_cache(model) else None
    names = ["token_logps", "mask", "correct"] + (["min_k_plus_plus"] if min_k_plus_plus else [])
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    order: list[int] = []
    try:
        if shared is not None:
            batches = _prefix_batches(model, rows, *shared, batch_size, pad_token_id, device, min_k_plus_plus)
        else:
            batches = _full_batches(model, rows, batch_size, UnlearningCollator(pad_token_id).pad, device,
                                    min_k_plus_plus)  # fmt: skip
        for indices, batch_parts in batches:
            order += indices
            for name in names:
                parts[name].append(batch_parts[name])
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


def check_token_rows(rows, batch_size, pad_token_id, name: str = "rows") -> None:
    """Tokenised rows (`input_ids` and `labels` of one length, at least one label not -100) and the pass's options."""
    if hasattr(rows, "__len__") and not isinstance(rows, (str, bytes, dict)) and len(rows) == 0:
        raise ValueError(f"token_statistics got no rows: {name} is empty; pass at least one tokenised example.")
    check_rows(rows, name, ("input_ids", "labels"),
               hint="Tokenise question/answer rows first: hf_unlearn.data.prepare_dataset(rows, name, tokenizer, "
                    "template, max_length).")  # fmt: skip
    check_positive_int("batch_size", batch_size, unit="rows per forward pass")
    check_int("pad_token_id", pad_token_id, 0, note="use tokenizer.pad_token_id (or 0)")
    for index in range(len(rows)):
        row = rows[index]
        ids, labels = row["input_ids"], row["labels"]
        if isinstance(ids, str) or isinstance(labels, str):
            raise TypeError(f"{name}[{index}] holds text where token ids belong ({show(ids)}): tokenise the rows "
                            "first (hf_unlearn.data.prepare_dataset).")  # fmt: skip
        ids, labels = torch.as_tensor(ids), torch.as_tensor(labels)
        if ids.dim() != 1 or labels.shape != ids.shape:
            raise ValueError(f"{name}[{index}] has input_ids of shape {tuple(ids.shape)} and labels of shape "
                             f"{tuple(labels.shape)}: give one label per token (-100 on prompt tokens), as "
                             "hf_unlearn.data.prepare_dataset makes them (class labels belong to evaluate_classifier).")
        if not (labels != IGNORE_INDEX).any():
            raise ValueError(f"{name}[{index}] has every label -100: it has no answer token to score; drop the row or "
                             "unmask its answer tokens.")  # fmt: skip


def _takes_cache(model) -> bool:
    """Whether the model is a decoder that takes `past_key_values` and `position_ids` (every HF causal LM)."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    parameters = inspect.signature(target.forward).parameters
    config = getattr(target, "config", None)
    return {"past_key_values", "position_ids"} <= set(parameters) and not getattr(config, "is_encoder_decoder", False)


def answer_nll(model, rows, batch_size: int = 32, pad_token_id: int = 0) -> torch.Tensor:
    """Per-example mean answer-token NLL of tokenised rows (`input_ids`, `labels`) under `model`."""
    stats = token_statistics(model, rows, batch_size, pad_token_id, min_k_plus_plus=False)
    return mean_nll(stats["sum_logps"], stats["num_tokens"])


def answer_stats(model, rows, batch_size: int = 32, pad_token_id: int = 0) -> dict[str, float]:
    """`{"probability": mean exp(−ℓ), "loss": mean ℓ}` over rows, ℓ the per-example mean answer-token NLL."""
    nll = answer_nll(model, rows, batch_size, pad_token_id)
    return {"probability": nll.neg().exp().mean().item(), "loss": nll.mean().item()}


GRADNORM_NORMS = (1, 2, float("inf"))


def gradient_norms(model, rows, p: float = 2) -> torch.Tensor:
    """The GradNorm attack's statistic (Wang et al. 2024, arXiv 2402.17012; as open-unlearning computes it): per row,
    the mean over the model's trainable parameter tensors of the `p`-norm of the gradient of the row's mean
    answer-token NLL. A member (trained on) has a small gradient; the attack's score is the negative norm.

    One row at a time (a microbatch of 1: a batched forward would make each row's backward pass as costly as the
    whole batch's), in eval mode (open-unlearning uses train mode, so dropout would make the scores random); the
    gradients come from `torch.autograd.grad`, so the model's `.grad` is left as it was."""
    check_token_rows(rows, 1, 0)
    if p not in GRADNORM_NORMS:
        raise ValueError(f"p={show(p)} is not a GradNorm norm: use 1, 2 or float('inf').")
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if not parameters:
        raise ValueError("the model has no trainable parameter (requires_grad): GradNorm needs the gradient of at "
                         "least one; unfreeze the weights to score, e.g. model.requires_grad_(True).")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    norms = []
    try:
        for index in bar(range(len(rows)), "gradient norms"):
            ids, labels = (torch.as_tensor(rows[index][key], device=device)[None] for key in ("input_ids", "labels"))
            logps, mask = token_logps(model(input_ids=ids).logits, labels)
            loss = -(logps * mask).sum() / mask.sum()
            grads = torch.autograd.grad(loss, parameters, allow_unused=True)
            norms.append(torch.stack([g.detach().float().norm(p) for g in grads if g is not None]).mean().cpu())
    finally:
        model.train(was_training)
    return torch.stack(norms)
