"""The classifier-unlearning suite: accuracy and macro-F1 on forget / retain / test, and a logistic-regression
membership-inference attack on the forget set.

This is how the classifier-unlearning literature reports a method (e.g. SCRUB, Kurmanji et al. 2023; Blend + A-AMU,
Khan 2025, arXiv 2507.09786): an unlearned model should keep retain and test accuracy, bring forget accuracy down to
what a model never trained on it would reach, and leave an attacker unable to tell forget examples from never-seen
ones. The attack feature is the logit-scaled confidence `log p_y − log Σ_{j≠y} p_j` (Carlini et al. 2022, "Membership
Inference Attacks From First Principles"), and the attack is a logistic regression judged by cross-validated ROC AUC.

Everything is batched and vectorised: one eval-mode pass per split, no per-example Python loops over logits.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

from ..data import UnlearningCollator
from .checks import check_int, check_positive_int, check_rows, is_int, kind, show
from .metrics import mia_auc

LABEL_KEYS = ("labels", "label")


def _forward_inputs(model) -> set[str]:
    """The argument names `model.forward` takes by name (a PEFT wrapper's generic `forward` is looked through)."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    parameters = inspect.signature(target.forward).parameters.values()
    return {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - set(LABEL_KEYS)


def _input_keys(model, row: dict) -> list[str]:
    """The keys of `row` that are model inputs (as the Trainer's `remove_unused_columns` decides)."""
    named = _forward_inputs(model)
    keys = [key for key in row if key in named]
    if not keys:
        raise ValueError(
            f"No column of the rows is an input of {type(model).__name__}.forward: the rows have {sorted(row)}, "
            f"the model takes {sorted(named)}. Tokenise the text (input_ids) or process the images (pixel_values) "
            "first."
        )
    return keys


def _label_key(row: dict) -> str:
    for key in LABEL_KEYS:
        if key in row:
            if torch.as_tensor(row[key]).dim() != 0:
                raise ValueError(
                    f"Row {key!r} is {row[key]!r}: a classifier row has one int class label; token-level labels "
                    "(language-model rows) belong to the answer-probability evaluation (`token_statistics`)."
                )
            return key
    raise ValueError(f"The rows have no class label: add an int 'labels' column (the rows have {sorted(row)}).")


def _num_labels(model) -> int | None:
    """The number of classes a transformers classifier predicts (`config.num_labels`); None for other models."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(target, "config", None)
    if config is None or "Classification" not in type(target).__name__:
        return None
    return getattr(config, "num_labels", None)


def _image_shape(model) -> tuple[int | None, tuple[int, int] | None]:
    """`(channels, (height, width))` the model's config fixes for `pixel_values` (None where it fixes none)."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(target, "config", None)
    channels, size = getattr(config, "num_channels", None), getattr(config, "image_size", None)
    if isinstance(size, int):
        size = (size, size)
    elif isinstance(size, (list, tuple)) and len(size) == 2:
        size = tuple(size)
    else:
        size = None
    return (channels if isinstance(channels, int) else None), size


def check_classifier_rows(model, rows, name: str = "rows", min_rows: int = 1) -> None:
    """Classifier rows as `classifier_outputs` takes them, checked against the model before it runs: a list of dicts
    (or a `datasets.Dataset`), each with an int class label in `0..config.num_labels - 1` and the model's inputs;
    `pixel_values` of the `[num_channels, image_size, image_size]` the model's config names."""
    if hasattr(rows, "__len__") and not isinstance(rows, (str, bytes, dict)) and len(rows) == 0:
        raise ValueError(f"classifier_outputs got no rows: {name} is empty; pass at least one classifier example.")
    check_rows(rows, name, (), min_rows=min_rows)
    first = dict(rows[0])
    label_key = _label_key(first)
    check_rows(rows, name, ((label_key,),))
    keys = _input_keys(model, first)
    num_labels = _num_labels(model)
    labels = rows[label_key] if hasattr(rows, "column_names") else [rows[i][label_key] for i in range(len(rows))]
    for index, label in enumerate(labels):
        if not is_int(label):
            raise TypeError(f"{name}[{index}][{label_key!r}]={show(label)} is {kind(label)}: a classifier "
                            f"row's label is one int class index (0..C-1); map class names to ints first.")
        label = int(label)
        if label < 0 or (num_labels is not None and label >= num_labels):
            allowed = f"0..{num_labels - 1}" if num_labels is not None else "0..C-1"
            raise ValueError(
                f"{name}[{index}][{label_key!r}]={label}: {type(model).__name__} has config.num_labels={num_labels}, "
                f"so labels are {allowed}; fix the label (no -100 on classifier rows) or evaluate a model with that "
                "many classes." if num_labels is not None else
                f"{name}[{index}][{label_key!r}]={label}: labels are class indices {allowed}, never negative (no -100 "
                "on classifier rows); fix the label."
            )  # fmt: skip
    channels, size = _image_shape(model)
    if "pixel_values" in keys:
        for index in range(len(rows)):
            shape = tuple(np.shape(rows[index]["pixel_values"]))
            expected = f"[{channels or 'C'}, {size[0] if size else 'H'}, {size[1] if size else 'W'}]"
            if len(shape) != 3 or (channels is not None and shape[0] != channels) or (size and shape[1:] != size):
                raise ValueError(
                    f"{name}[{index}]['pixel_values'] has shape {list(shape)}, but {type(model).__name__}'s config "
                    f"takes {expected} (num_channels={channels}, image_size={size and list(size)}): process the "
                    "images with the model's own image processor (size and channels), or evaluate a model made for "
                    "them."
                )


@torch.no_grad()
def classifier_outputs(model, rows, batch_size: int = 64, pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """One batched pass of a classifier over rows: `{"logits": [N, C] float32 on CPU, "labels": [N] int64}`.

    Rows are dicts (a list or a `datasets.Dataset`) holding an int class label (`labels`, or `label` as in many Hub
    datasets) and the model's inputs: any key `model.forward` takes by name is passed, other columns (raw text, ids)
    are dropped. Sequences are padded as in training (`UnlearningCollator.pad`: input ids with `pad_token_id`, masks
    and token type ids with 0) and fixed-size tensors such as `pixel_values` are stacked. Rows with `input_ids` but no
    `attention_mask` get an all-ones mask before padding, so a row's logits do not depend on the batch it falls in.
    The model runs in eval mode (no dropout) and is put back in the mode it was in.
    """
    check_positive_int("batch_size", batch_size, unit="rows per forward pass")
    check_int("pad_token_id", pad_token_id, 0, note="use tokenizer.pad_token_id (or 0)")
    check_classifier_rows(model, rows)
    return _classifier_outputs(model, rows, batch_size, pad_token_id)


def _classifier_outputs(model, rows, batch_size: int, pad_token_id: int) -> dict[str, torch.Tensor]:
    first = dict(rows[0])
    label_key = _label_key(first)
    keys = _input_keys(model, first)
    add_mask = "input_ids" in keys and "attention_mask" not in keys and "attention_mask" in _forward_inputs(model)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad = UnlearningCollator(pad_token_id).pad
    all_logits, all_labels = [], []
    try:
        for start in range(0, len(rows), batch_size):
            chunk = [dict(rows[i]) for i in range(start, min(start + batch_size, len(rows)))]
            inputs = [{key: row[key] for key in keys} for row in chunk]
            if add_mask:
                for row in inputs:
                    row["attention_mask"] = [1] * len(row["input_ids"])
            batch = {key: value.to(device) for key, value in pad(inputs).items()}
            output = model(**batch)
            logits = output if isinstance(output, torch.Tensor) else getattr(output, "logits", None)
            if logits is None:
                logits = output[0]
            all_logits.append(logits.detach().float().cpu())
            all_labels.append(torch.as_tensor([int(row[label_key]) for row in chunk], dtype=torch.long))
    finally:
        model.train(was_training)
    logits = torch.cat(all_logits)
    if logits.dim() != 2:
        raise ValueError(f"The model returned logits of shape {tuple(logits.shape)}: a classifier returns [N, C].")
    return {"logits": logits, "labels": torch.cat(all_labels)}


def _check_logits_labels(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.as_tensor(logits)
    labels = torch.as_tensor(labels, device=logits.device).long()
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)}: pass logits [N, C] and labels [N]."
        )
    if logits.shape[0] == 0:
        raise ValueError("logits are empty: pass at least one example.")
    if labels.numel() and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(
            f"labels span [{labels.min().item()}, {labels.max().item()}] but there are {logits.shape[1]} classes: "
            "labels must be class indices 0..C-1 (no -100 on classifier rows)."
        )
    return logits, labels


def membership_score(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per example `log p_y − log Σ_{j≠y} p_j` (= `log(p_y / (1 − p_y))`), the logit-scaled confidence of
    Carlini et al. 2022 (LiRA, arXiv 2112.03570) that classifier MIAs use. Higher = more familiar; `[N, C], [N] → [N]`.

    Softmax normalisers cancel, so it is computed as `z_y − logsumexp_{j≠y} z_j` on the logits: no exponential of a
    large number, and finite when `p_y` rounds to 1 (where `log(1 − p_y)` would be `−inf`).

    Worked example, logits `[2, 1, 0]`: p ≈ [0.6652, 0.2447, 0.0900];
    label 0 → `2 − log(e¹ + e⁰)` = 2 − 1.31326 = 0.68674 (= log(0.6652 / 0.3348));
    label 2 → `0 − log(e² + e¹)` = −(1 + log(e + 1)) = −2.31326. Logits `[100, 0, 0]`, label 0 → 100 − log 2.
    """
    logits, labels = _check_logits_labels(logits, labels)
    if logits.shape[1] < 2:
        raise ValueError(f"membership_score needs at least 2 classes, got logits of shape {tuple(logits.shape)}.")
    if not logits.is_floating_point() or logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    chosen = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    is_label = torch.nn.functional.one_hot(labels, logits.shape[1]).bool()
    others = logits.masked_fill(is_label, -torch.inf).logsumexp(-1)
    return chosen - others


def accuracy_and_macro_f1(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """`{"accuracy", "macro_f1"}` of the argmax predictions. Macro-F1 is scikit-learn's
    `f1_score(average="macro", zero_division=0)`: the unweighted mean of per-class F1 over the classes that occur in
    the labels or the predictions (a class in neither is left out, so a one-class forget set is not penalised)."""
    from sklearn.metrics import f1_score

    logits, labels = _check_logits_labels(logits, labels)
    predictions = logits.argmax(-1)
    return {
        "accuracy": (predictions == labels).double().mean().item(),
        "macro_f1": float(f1_score(labels.cpu().numpy(), predictions.cpu().numpy(), average="macro", zero_division=0)),
    }


def _scores(values, name: str) -> np.ndarray:
    array = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
    array = array.reshape(-1)
    if array.size < 2:
        raise ValueError(
            f"{name} has {array.size} example(s): the cross-validated attack needs at least 2 on each side (5 or "
            "more for 5 folds). Pass more rows in that split."
        )
    if not np.isfinite(array).all():
        raise ValueError(f"{name} hold NaN or inf: check the model's logits (membership_score is finite for finite "
                         "logits).")  # fmt: skip
    return array


def classifier_mia_auc(forget_scores, heldout_scores, seed: int = 0, n_splits: int = 5) -> float:
    """ROC AUC of the logistic-regression membership attack of the classifier-unlearning literature (SCRUB,
    Kurmanji et al. 2023; Blend + A-AMU, Khan 2025): forget examples (label 1) against held-out ones (label 0).

    A `LogisticRegression` (class-balanced, on the standardised 1-D score) is fitted with stratified K-fold
    cross-validation — `n_splits` folds, fewer when the smaller side has fewer examples; shuffled with `seed` — and the
    AUC (`metrics.mia_auc`) is that of the out-of-fold predicted membership probabilities. So every example is scored
    by an attacker that never saw it. 0.5 = the forget set looks like never-seen data; 1.0 = fully separable.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    check_int("n_splits", n_splits, 2, unit="cross-validation folds")
    check_int("seed", seed, 0)
    forget = _scores(forget_scores, "forget_scores")
    heldout = _scores(heldout_scores, "heldout_scores")
    features = np.concatenate([forget, heldout]).reshape(-1, 1)
    membership = np.concatenate([np.ones(forget.size, dtype=int), np.zeros(heldout.size, dtype=int)])
    folds = StratifiedKFold(n_splits=max(2, min(n_splits, forget.size, heldout.size)), shuffle=True, random_state=seed)
    attacker = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced"))
    probability = cross_val_predict(attacker, features, membership, cv=folds, method="predict_proba")[:, 1]
    return mia_auc(probability[membership == 1], probability[membership == 0])


def evaluate_classifier(
    model, forget, retain, test, heldout=None, batch_size: int = 64, pad_token_id: int = 0, seed: int = 0
) -> dict[str, float]:
    """The classifier-unlearning numbers for `model` as a flat dict: `forget_accuracy`, `forget_macro_f1`,
    `retain_accuracy`, `retain_macro_f1`, `test_accuracy`, `test_macro_f1` and `mia_auc`.

    `mia_auc` is `classifier_mia_auc` of the forget rows' membership scores against `heldout`'s — rows the model never
    trained on. `heldout` defaults to `test` (the usual choice in the literature), whose pass is then reused. Each split
    is rows as `classifier_outputs` takes them.
    """
    splits = {"forget": forget, "retain": retain, "test": test}
    if heldout is not None:
        splits["heldout"] = heldout
    for name, rows in splits.items():
        if rows is None or (hasattr(rows, "__len__") and not isinstance(rows, (str, bytes, dict)) and len(rows) == 0):
            raise ValueError(f"The {name} split is empty: pass at least one row (two or more for forget and heldout).")
    check_positive_int("batch_size", batch_size, unit="rows per forward pass")
    check_int("pad_token_id", pad_token_id, 0, note="use tokenizer.pad_token_id (or 0)")
    check_int("seed", seed, 0)
    attacked = "heldout" if heldout is not None else "test"
    for name, rows in splits.items():  # every split before the model runs on any
        minimum = 2 if name in ("forget", attacked) else 1
        if len(rows) < minimum:
            raise ValueError(f"The {name} split has {len(rows)} row: the membership attack needs at least 2 forget and "
                             f"2 {attacked} rows (5 or more for 5 folds); pass more rows.")  # fmt: skip
        check_classifier_rows(model, rows, name)
    outputs = {name: _classifier_outputs(model, rows, batch_size, pad_token_id) for name, rows in splits.items()}
    for name, output in outputs.items():
        bad = (~output["logits"].isfinite()).any(-1)
        if bad.any():
            raise ValueError(f"The model's logits on the {name} split hold NaN or inf ({int(bad.sum())} of {len(bad)} "
                             "rows): its weights are not finite (a diverged unlearning run?), so no accuracy or attack "
                             "number of it means anything; evaluate a checkpoint from before it diverged.")
    outputs.setdefault("heldout", outputs["test"])
    results = {}
    for name in ("forget", "retain", "test"):
        for metric, value in accuracy_and_macro_f1(outputs[name]["logits"], outputs[name]["labels"]).items():
            results[f"{name}_{metric}"] = value
    forget_scores = membership_score(outputs["forget"]["logits"], outputs["forget"]["labels"])
    heldout_scores = membership_score(outputs["heldout"]["logits"], outputs["heldout"]["labels"])
    results["mia_auc"] = classifier_mia_auc(forget_scores, heldout_scores, seed=seed)
    return results
