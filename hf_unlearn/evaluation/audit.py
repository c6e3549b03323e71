"""Auditing an encoder's unlearning with query access to its embeddings (Wang et al. 2024, arXiv
2406.03603), plus the white-box linear-probe suite when labels are known.

For a set of examples x_1..x_N and T random views t(x) (augmentations), with f the encoder and cos the cosine:

- Alignment Matrix `AM[i, j] = E_{t≠t'} cos(f(t(x_i)), f(t'(x_j)))`: the diagonal is each example's positive
  alignment pa_i (how consistently the encoder maps views of it), the rest negative alignment.
- Alignment Gap Matrix `AGM = AM(θ_0) − AM(θ)` (the original minus the audited encoder).
- Forgetting Score `FS = (pa_f(θ_0) − pa_f(θ)) / (pa_f(θ_0) − pa_t(θ_0))`, pa_f / pa_t the mean positive alignment of
  forget / held-out examples: 0 = nothing forgotten, 1 = the forget examples look exactly like never-seen ones; with a
  bootstrap 95% interval (forget and held-out examples resampled).
- EMIA (EncoderMI-threshold, Liu et al. 2021): pa_i is the membership feature; a threshold fitted on members (retain
  examples, or the forget examples under θ_0 when no retain examples are given) against held-out ones;
  EMIA = % of forget examples judged non-members. The threshold maximises balanced accuracy (EncoderMI's rule) or,
  with `emia_threshold="logistic"`, is a 1-D logistic regression's decision point (steadier; see `fit_threshold`).
- White box (with labels): a logistic-regression linear probe fitted on the retain examples' features gives RA / TA /
  UA (retain / test (= held-out) / forget accuracy, %); CMIA = an SVC on the probe's true-class confidence (members:
  retain, non-members: held-out), % of forget examples judged non-members.

Examples are whatever `augment` and `embed_fn` take: image tensors `[N, C, H, W]`, lists of strings, ... Nothing from
the examples reaches the results or the plots: only similarities and counts. The heatmaps are drawn by
`hf_unlearn.plots.save_heatmaps` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..plots import HEATMAPS, save_heatmaps
from .checks import (
    check_callable,
    check_int,
    check_positive_int,
    check_same_length,
    check_sized,
    is_finite_number,
    is_int,
    kind,
    numbers_array,
    show,
)

__all__ = [
    "EMIA_THRESHOLDS", "HEATMAPS", "NON_FINITE", "alignment_matrix", "audit_encoder", "audit_numbers",
    "bootstrap_interval", "embed_views", "emia", "fit_threshold", "forgetting_score", "linear_probe_suite",
    "positive_alignment", "save_heatmaps",
]  # fmt: skip


def _chunks(examples, batch_size: int):
    for start in range(0, len(examples), batch_size):
        yield examples[start : start + batch_size]


@torch.no_grad()
def embed_views(embed_fn: Callable, examples, augment: Callable | None, num_views: int, batch_size: int = 256,
                seed: int = 0) -> torch.Tensor:  # fmt: skip
    """`[T, N, d]` L2-normalised embeddings of `num_views` random views of each example (the examples themselves when
    `augment` is None). Views are drawn with torch's generator seeded by `seed`, so two encoders see the same views."""
    views = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(num_views):
            parts = []
            for chunk in _chunks(examples, batch_size):
                shown = augment(chunk) if augment is not None else chunk
                parts.append(F.normalize(torch.as_tensor(embed_fn(shown)).float().cpu(), dim=-1))
            views.append(torch.cat(parts))
    return torch.stack(views)


def alignment_matrix(views: torch.Tensor) -> torch.Tensor:
    """`AM[i, j]` = mean over view pairs t ≠ t' of cos(v_t(x_i), v_t'(x_j)), from `[T, N, d]` normalised views:
    (Σ_t v_t)(Σ_t v_t)ᵀ minus the T same-view terms Σ_t v_t v_tᵀ, over T(T − 1)."""
    count = views.size(0)
    if count < 2:
        raise ValueError(f"num_views={count}: the alignment of an example needs at least 2 views of it.")
    total = views.sum(0)
    same = torch.einsum("tid,tjd->ij", views, views)
    return (total @ total.T - same) / (count * (count - 1))


def positive_alignment(views: torch.Tensor) -> torch.Tensor:
    """The diagonal of `alignment_matrix` without the N×N matrix: `[N]`, (|Σ_t v_t|² − T) / (T(T − 1))."""
    count = views.size(0)
    if count < 2:
        raise ValueError(f"num_views={count}: the alignment of an example needs at least 2 views of it.")
    return (views.sum(0).pow(2).sum(-1) - views.pow(2).sum(-1).sum(0)) / (count * (count - 1))


def forgetting_score(pa_forget_reference, pa_forget, pa_heldout_reference) -> float:
    """`(mean pa_f(θ_0) − mean pa_f(θ)) / (mean pa_f(θ_0) − mean pa_t(θ_0))`; NaN when the original encoder does not
    align its forget examples more than held-out ones (nothing measurable to forget)."""
    reference, audited, heldout = (float(np.asarray(a, dtype=np.float64).mean())
                                   for a in (pa_forget_reference, pa_forget, pa_heldout_reference))  # fmt: skip
    gap = reference - heldout
    return (reference - audited) / gap if gap > 1e-12 else float("nan")


def bootstrap_interval(pa_forget_reference, pa_forget, pa_heldout_reference, num_samples: int = 1000,
                       seed: int = 0) -> tuple[float, float]:  # fmt: skip
    """The percentile bootstrap 95% interval of the Forgetting Score: forget examples resampled (the same draw for θ_0
    and θ) and held-out examples resampled independently."""
    rng = np.random.default_rng(seed)
    forget_ref, forget, heldout = (np.asarray(a, dtype=np.float64) for a in
                                   (pa_forget_reference, pa_forget, pa_heldout_reference))  # fmt: skip
    scores = []
    for _ in range(num_samples):
        f = rng.integers(0, len(forget), len(forget))
        h = rng.integers(0, len(heldout), len(heldout))
        scores.append(forgetting_score(forget_ref[f], forget[f], heldout[h]))
    scores = np.asarray(scores)
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        return float("nan"), float("nan")
    return float(np.percentile(scores, 2.5)), float(np.percentile(scores, 97.5))


EMIA_THRESHOLDS = ("accuracy", "logistic")


def fit_threshold(member_scores, nonmember_scores, rule: str = "accuracy") -> float:
    """The member/non-member threshold t of "member iff score ≥ t", fitted on the two score samples.

    - `"accuracy"` (EncoderMI-threshold, Liu et al. 2021): the t maximising balanced accuracy; among equal accuracies
      the lowest t. Every observed score is a candidate, scored at once from the sorted scores. Where the two samples
      overlap a lot the accuracy curve is flat, and its argmax (hence EMIA) jumps between runs.
    - `"logistic"`: the decision point `−b/w` of a class-balanced, unpenalised 1-D logistic regression: a smooth
      function of all the scores, so it moves less from run to run (`bench/ac_digits.py` measures how much less).
    """
    if rule not in EMIA_THRESHOLDS:
        raise ValueError(f"fit_threshold: unknown rule {rule!r}; use one of {EMIA_THRESHOLDS}.")
    members = np.sort(numbers_array("member_scores", member_scores))
    nonmembers = np.sort(numbers_array("nonmember_scores", nonmember_scores))
    if rule == "logistic":
        from sklearn.linear_model import LogisticRegression

        scores = np.concatenate([members, nonmembers])
        center, scale = scores.mean(), scores.std() or 1.0  # standardised for the solver; mapped back below
        is_member = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
        fit = LogisticRegression(C=1e8, class_weight="balanced", max_iter=1000)  # C 1e8: no penalty to speak of
        fit.fit(((scores - center) / scale)[:, None], is_member)
        weight, bias = float(fit.coef_[0, 0]), float(fit.intercept_[0])
        if weight <= 0:  # members do not score higher: no "member iff score ≥ t" rule beats chance
            raise ValueError("fit_threshold(rule='logistic'): the member scores are not higher than the non-member "
                             "ones, so there is no member-above threshold; use rule='accuracy' for this audit.")
        return float(center - scale * bias / weight)
    if rule != "accuracy":
        raise ValueError(f"fit_threshold: unknown rule {rule!r}; use one of {EMIA_THRESHOLDS}.")
    candidates = np.unique(np.concatenate([members, nonmembers]))
    members_above = (len(members) - np.searchsorted(members, candidates, "left")) / len(members)  # members ≥ t
    nonmembers_below = np.searchsorted(nonmembers, candidates, "left") / len(nonmembers)  # non-members < t
    return float(candidates[int(np.argmax((members_above + nonmembers_below) / 2))])


def emia(forget_scores, member_scores, nonmember_scores, rule: str = "accuracy") -> float:
    """% of forget examples whose membership feature falls below the member/non-member threshold (`fit_threshold`'s
    `rule`)."""
    forget = numbers_array("forget_scores", forget_scores)
    threshold = fit_threshold(member_scores, nonmember_scores, rule)
    return float(100.0 * (forget < threshold).mean())


def linear_probe_suite(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], seed: int = 0) -> dict:
    """RA / TA / UA (% accuracy of a logistic-regression probe fitted on `features["retain"]`, on retain / heldout /
    forget) and CMIA (% of forget examples an SVC on the probe's true-class confidence, fitted on retain = members vs
    heldout = non-members, judges non-members)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    probe.fit(features["retain"], labels["retain"])
    results = {}
    for key, name in (("retain", "retain_accuracy"), ("heldout", "test_accuracy"), ("forget", "forget_accuracy")):
        results[name] = float(100.0 * (probe.predict(features[key]) == labels[key]).mean())

    column = {label: index for index, label in enumerate(probe.classes_)}

    def confidence(key):  # the probe's probability of the true class (0 for a class absent from retain)
        probabilities = probe.predict_proba(features[key])
        true = [probabilities[i, column[y]] if y in column else 0.0 for i, y in enumerate(labels[key])]
        return np.array(true)[:, None]

    rng = np.random.default_rng(seed)
    heldout = confidence("heldout")
    members = confidence("retain")
    members = members[rng.permutation(len(members))[: len(heldout)]]  # balanced, as the paper's shadow sets
    attacker = SVC(C=3, gamma="auto", kernel="rbf")
    attacker.fit(np.concatenate([members, heldout]), np.r_[np.ones(len(members)), np.zeros(len(heldout))])
    results["cmia"] = float(100.0 * (attacker.predict(confidence("forget")) == 0).mean())
    return results


def audit_encoder(
    embed_fn: Callable,
    forget_examples,
    heldout_examples,
    reference_embed_fn: Callable | None = None,
    retrained_embed_fn: Callable | None = None,
    augment: Callable | None = None,
    num_views: int = 10,
    retain_examples=None,
    labels: dict[str, Sequence[int]] | None = None,
    feature_fn: Callable | None = None,
    output_dir: str | Path | None = None,
    num_bootstrap: int = 1000,
    batch_size: int = 256,
    seed: int = 0,
    emia_threshold: str = "accuracy",
) -> dict[str, Any]:
    """Audit the encoder `embed_fn` (a batch of examples → `[B, d]` embeddings) on `forget_examples` against
    `heldout_examples` (never trained on), over `num_views` views drawn by `augment` (a batch → a batch of views).

    `reference_embed_fn` is the original encoder θ_0 (gives the Forgetting Score, the Alignment Gap Matrix and, without
    `retain_examples`, the members for EMIA's threshold); `retrained_embed_fn` a model retrained without the forget
    set (its gap matrix is drawn beside). `retain_examples` are members for EMIA's threshold and the probe's training
    set. With `labels` (`{"forget", "heldout", "retain"}` class indices) and `retain_examples`, the white-box suite
    runs on `feature_fn` (default `embed_fn`) of the un-augmented examples. `emia_threshold` is `fit_threshold`'s rule
    for EMIA ("accuracy", EncoderMI's, or the steadier "logistic"). With `output_dir`, the heatmaps are saved
    there as PNG and the numbers as `audit.json`.

    Returns a dict: `forgetting_score`, `forgetting_score_ci` [low, high], `reference_alignment_gap` (FS's
    denominator: small means a noisy score), `emia`, `positive_alignment` (means per set and encoder), the matrices
    (`alignment_matrix`, `alignment_gap_matrix`, `retrained_alignment_gap_matrix`, as nested lists; None where not
    computable), `missing` (why a number is absent) and, with labels, `retain_accuracy`, `test_accuracy`,
    `forget_accuracy`, `cmia`.
    """
    _check_audit_arguments(**locals())

    def views(fn, examples):
        return embed_views(fn, examples, augment, num_views, batch_size, seed)

    forget_views, heldout_views = views(embed_fn, forget_examples), views(embed_fn, heldout_examples)
    matrix = alignment_matrix(forget_views)
    pa = {"forget": positive_alignment(forget_views), "heldout": positive_alignment(heldout_views)}
    result: dict[str, Any] = {
        "num_forget": len(forget_examples), "num_heldout": len(heldout_examples), "num_views": num_views,
        "alignment_matrix": matrix.tolist(), "alignment_gap_matrix": None, "retrained_alignment_gap_matrix": None,
        "forgetting_score": None, "forgetting_score_ci": None, "emia": None, "missing": {},
    }  # fmt: skip
    positive = {"forget": float(pa["forget"].mean()), "heldout": float(pa["heldout"].mean())}
    result["positive_alignment"] = {"audited": positive}
    reference_pa = None
    if reference_embed_fn is not None:
        reference_forget = views(reference_embed_fn, forget_examples)
        reference_pa = {"forget": positive_alignment(reference_forget),
                        "heldout": positive_alignment(views(reference_embed_fn, heldout_examples))}  # fmt: skip
        reference_matrix = alignment_matrix(reference_forget)
        result["alignment_gap_matrix"] = (reference_matrix - matrix).tolist()
        result["positive_alignment"]["reference"] = {k: float(v.mean()) for k, v in reference_pa.items()}
        result["forgetting_score"] = forgetting_score(reference_pa["forget"], pa["forget"], reference_pa["heldout"])
        # FS's denominator: how much more the original aligns forget than held-out examples; when it is small the score
        # is noisy (its interval says how much)
        result["reference_alignment_gap"] = float(reference_pa["forget"].mean() - reference_pa["heldout"].mean())
        if not all(values.isfinite().all() for values in (*pa.values(), *reference_pa.values())):
            result["forgetting_score"] = None
            result["missing"]["forgetting_score"] = f"a positive alignment came out NaN or inf ({NON_FINITE})"
        elif np.isnan(result["forgetting_score"]):
            result["missing"]["forgetting_score"] = (
                "the original encoder aligns forget examples no more than held-out ones: nothing to forget"
            )
        else:
            result["forgetting_score_ci"] = list(
                bootstrap_interval(reference_pa["forget"], pa["forget"], reference_pa["heldout"], num_bootstrap, seed)
            )
        if retrained_embed_fn is not None:
            retrained = alignment_matrix(views(retrained_embed_fn, forget_examples))
            result["retrained_alignment_gap_matrix"] = (reference_matrix - retrained).tolist()
    else:
        result["missing"]["forgetting_score"] = "no reference_embed_fn (the original encoder) was given"
    members = None
    if retain_examples is not None:
        members = positive_alignment(views(embed_fn, retain_examples)), pa["heldout"]
    elif reference_pa is not None:
        members = reference_pa["forget"], reference_pa["heldout"]
        result["emia_members"] = "the forget examples under the original encoder"
    else:
        result["missing"]["emia"] = "no members to fit the threshold: pass retain_examples or reference_embed_fn"
    if members is not None:
        try:
            result["emia"] = emia(pa["forget"], *members, emia_threshold)
        except ValueError as error:  # the logistic rule finds members no higher than held-out examples
            result["missing"]["emia"] = str(error)
    if labels is not None:
        feature = feature_fn or embed_fn
        features = {}
        for name, examples in (("forget", forget_examples), ("heldout", heldout_examples), ("retain", retain_examples)):
            with torch.no_grad():
                parts = [torch.as_tensor(feature(chunk)).float().cpu() for chunk in _chunks(examples, batch_size)]
            features[name] = torch.cat(parts).numpy()
        not_finite = [name for name, values in features.items() if not np.isfinite(values).all()]
        if not_finite:
            for key in ("retain_accuracy", "test_accuracy", "forget_accuracy", "cmia"):
                result["missing"][key] = f"the {'/'.join(not_finite)} features hold NaN or inf ({NON_FINITE})"
        else:
            result.update(linear_probe_suite(features, {k: np.asarray(labels[k]) for k in features}, seed))
    _move_non_finite(result)
    if output_dir is not None:
        import json

        output_dir = Path(output_dir)
        result["plots"] = save_heatmaps(result, output_dir)
        (output_dir / "audit.json").write_text(json.dumps(audit_numbers(result) | {"missing": result["missing"]},
                                                          indent=2))  # fmt: skip
    return result


NON_FINITE = "an encoder's embeddings are not finite: its weights hold NaN or inf (a diverged run?)"


def _move_non_finite(result: dict) -> None:
    """Numbers that came out NaN or inf go to `missing` with the reason (a NaN Forgetting Score already has its own);
    EMIA is judged on the alignments themselves (a NaN alignment compares False, so EMIA would look finite)."""
    for key in ("forgetting_score", "reference_alignment_gap", "emia", "retain_accuracy", "test_accuracy",
                "forget_accuracy", "cmia"):  # fmt: skip
        value = result.get(key)
        if value is not None and not is_finite_number(value):
            result[key] = None
            result["missing"].setdefault(key, f"came out {value} ({NON_FINITE})")
    interval = result.get("forgetting_score_ci")
    if interval is not None and not all(is_finite_number(v) for v in interval):
        result["forgetting_score_ci"] = None
        result["missing"].setdefault("forgetting_score_ci", "no bootstrap resample gave a finite Forgetting Score")


def _kind(examples) -> str:
    if isinstance(examples, torch.Tensor):
        return "tensor"
    if isinstance(examples, np.ndarray):
        return "array"
    if isinstance(examples, (list, tuple)) and examples and all(isinstance(x, str) for x in examples):
        return "list of strings"
    return type(examples).__name__


def _check_audit_arguments(embed_fn, forget_examples, heldout_examples, reference_embed_fn, retrained_embed_fn,
                           augment, num_views, retain_examples, labels, feature_fn, output_dir, num_bootstrap,
                           batch_size, seed, emia_threshold) -> None:  # fmt: skip
    """Every argument of `audit_encoder`, before any encoder runs."""
    if emia_threshold not in EMIA_THRESHOLDS:
        raise ValueError(f"audit_encoder: emia_threshold={emia_threshold!r} is not a threshold rule; use one of "
                         f"{EMIA_THRESHOLDS} (see fit_threshold).")  # fmt: skip
    check_callable("embed_fn", embed_fn, what="a function from a batch of examples to [B, d] embeddings")
    for name, fn in (("reference_embed_fn", reference_embed_fn), ("retrained_embed_fn", retrained_embed_fn),
                     ("augment", augment), ("feature_fn", feature_fn)):  # fmt: skip
        check_callable(name, fn, optional=True)
    if retrained_embed_fn is not None and reference_embed_fn is None:
        raise ValueError("retrained_embed_fn was given without reference_embed_fn: its gap matrix is original − "
                         "retrained, so pass the original encoder as reference_embed_fn too (or drop "
                         "retrained_embed_fn).")  # fmt: skip
    check_int("num_views", num_views, 2, unit="views", note="the alignment of an example compares 2 or more views")
    check_positive_int("num_bootstrap", num_bootstrap, unit="resamples", note="1000 gives a steady 95% interval")
    check_positive_int("batch_size", batch_size, unit="examples per encoder call")
    check_int("seed", seed, 0)
    sets = {"forget_examples": forget_examples, "heldout_examples": heldout_examples}
    if retain_examples is not None:
        sets["retain_examples"] = retain_examples
    for name, examples in sets.items():
        check_sized(name, examples, what="a batch of examples (an [N, ...] tensor, a list of strings, ...)",
                    min_count=1 if name == "retain_examples" else 2)  # fmt: skip
    kinds = {name: _kind(examples) for name, examples in sets.items()}
    if len(set(kinds.values())) > 1:
        listed = ", ".join(f"{name}: {kind}" for name, kind in kinds.items())
        raise ValueError(f"the example sets are of different kinds ({listed}): pass them all as the same kind (all "
                         "[N, ...] tensors, or all lists of strings), for the same encoder.")  # fmt: skip
    shapes = {name: tuple(examples.shape[1:]) for name, examples in sets.items() if hasattr(examples, "shape")}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name}: {list(shape)}" for name, shape in shapes.items())
        raise ValueError(f"the example sets have different shapes per example ({listed}): process them all alike "
                         "(the same image size and channels).")  # fmt: skip
    for name, examples in sets.items():
        if isinstance(examples, (torch.Tensor, np.ndarray)):
            values = torch.as_tensor(examples)
            if values.is_floating_point() and not values.isfinite().all():
                raise ValueError(f"{name} hold NaN or inf values: pass finite examples (check how they were made).")
    if labels is None:
        return
    if retain_examples is None:
        raise ValueError("labels were given but no retain_examples: the linear probe is fitted on retain examples; "
                         "pass retain_examples (with labels['retain']) or drop labels.")  # fmt: skip
    if not isinstance(labels, dict) or not {"forget", "heldout", "retain"} <= set(labels):
        raise (TypeError if not isinstance(labels, dict) else ValueError)(
            f"labels={show(labels)}: pass a dict with 'forget', 'heldout' and 'retain', each a list of int class "
            "indices, one per example of that set."
        )
    for key in ("forget", "heldout", "retain"):
        check_sized(f"labels[{key!r}]", labels[key], what="a list of int class indices", min_count=0, unit="labels")
        check_same_length(f"{key}_examples", len(sets[f"{key}_examples"]), f"labels[{key!r}]", len(labels[key]))
        for index, label in enumerate(labels[key]):
            if not is_int(label):
                raise TypeError(f"labels[{key!r}][{index}]={show(label)} is {kind(label)}: pass int class "
                                "indices.")  # fmt: skip


def audit_numbers(audit: dict) -> dict[str, float]:
    """The scalar results of an audit (what the card's metric table and `audit.json` hold)."""
    numbers = {k: float(v) for k, v in audit.items()
               if k not in ("num_forget", "num_heldout", "num_views") and isinstance(v, (int, float))
               and not isinstance(v, bool) and np.isfinite(v)}  # fmt: skip
    if audit.get("forgetting_score_ci"):
        low, high = audit["forgetting_score_ci"]
        numbers["forgetting_score_ci_low"], numbers["forgetting_score_ci_high"] = float(low), float(high)
    return numbers
