"""The leaderboards' metrics as pure functions on per-example numbers (TOFU, MUSE, open-unlearning definitions).

Conventions, as the leaderboards compute them:
- log-probabilities are of answer tokens only; `mean_logps` are length-normalised (mean over answer tokens);
- MIA scores are "membership scores": higher means the example looks more like training data, and AUC is computed
  with forget examples as the positive class against holdout examples, so 1.0 = the forget set looks far more
  familiar than never-seen data, 0.5 = indistinguishable (the MIA literature's orientation). MUSE's PrivLeak reads
  its AUC the other way (1 − ours); `privleak` converts, so every `mia_*_auc` here keeps the usual orientation.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..losses import token_logps
from .checks import check_choice, check_fraction, check_number, check_strings, kind, numbers_array, show


@dataclass(frozen=True)
class Conventions:
    """How the metrics whose definition differs between implementations are computed. The defaults are the
    leaderboards' (open-unlearning, which the TOFU and MUSE leaderboards run on); `CONVENTIONS["hf-unlearn"]` is
    this package's own choice, with the reasons below. Every other metric has one definition (docs/evaluation.md).

    - `end_token`: count the last answer token (a question/answer row's end-of-answer token) in extraction strength,
      exact memorisation, Min-K and Min-K++. The leaderboards leave the last scored token out (on MUSE's raw texts,
      a text's last word). Ours counts it: knowing where an answer stops is part of having memorised it.
    - `min_k_rounding`: Min-K and Min-K++ average the lowest `floor(k·n)` ("floor", the leaderboards') or
      `ceil(k·n)` ("ceil", ours: a short answer's k-share is never rounded down) of `n` tokens, at least one.
    - `zlib_text`: ZLib divides the NLL by the zlib-compressed length of the answer's tokens decoded ("decoded",
      the leaderboards') or of the answer text as written ("raw", ours: the same number whatever the tokenizer).
    """

    end_token: bool = False
    min_k_rounding: str = "floor"
    zlib_text: str = "decoded"

    def __post_init__(self):
        if not isinstance(self.end_token, bool):
            raise TypeError(f"end_token={show(self.end_token)} is {kind(self.end_token)}: pass True or False.")
        check_choice("min_k_rounding", self.min_k_rounding, ("floor", "ceil"))
        check_choice("zlib_text", self.zlib_text, ("decoded", "raw"))


CONVENTIONS = {"leaderboard": Conventions(), "hf-unlearn": Conventions(True, "ceil", "raw")}


def conventions(value) -> Conventions:
    """A `Conventions` from itself, a preset's name (`"leaderboard"`, `"hf-unlearn"`) or None (the leaderboards')."""
    if value is None:
        return CONVENTIONS["leaderboard"]
    if isinstance(value, Conventions):
        return value
    if isinstance(value, str) and value in CONVENTIONS:
        return CONVENTIONS[value]
    raise ValueError(f"conventions={show(value)}: pass {' or '.join(repr(n) for n in CONVENTIONS)}, or a "
                     "hf_unlearn.evaluation.Conventions(end_token=..., min_k_rounding=..., zlib_text=...).")


def scored_mask(mask: torch.Tensor, end_token: bool) -> torch.Tensor:
    """The answer positions a per-token metric scores: all of `mask` with `end_token`, else all but each row's last
    (a row of one answer token keeps it)."""
    mask = torch.as_tensor(mask).bool()
    if end_token:
        return mask
    last = mask & (mask.long().cumsum(-1) == mask.sum(-1, keepdim=True))
    kept = mask & ~last
    return torch.where(kept.any(-1, keepdim=True), kept, mask)


def _non_empty(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError(f"{name} is empty: a metric needs at least one example.")
    return array


def truth_ratio(paraphrased_mean_logps: torch.Tensor, perturbed_mean_logps: torch.Tensor) -> torch.Tensor:
    """Per-question truth ratio `P̄(perturbed) / P̄(paraphrased)` (TOFU, Maini et al. 2024).

    `P̄` is the length-normalised answer probability `exp(mean token log-prob)`; the perturbed side is the geometric
    mean over the K perturbed answers. Shapes: `[N]` and `[N, K]` → `[N]`.
    """
    paraphrased, perturbed = _paired(paraphrased_mean_logps, perturbed_mean_logps, "paraphrased_mean_logps")
    return torch.exp(perturbed.mean(-1) - paraphrased)


def _paired(per_question, perturbed, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """`[N]` and `[N, K]` mean log-probs as float tensors; a clear error for shapes that would broadcast wrongly."""
    per_question = torch.as_tensor(per_question, dtype=torch.float)
    perturbed = torch.as_tensor(perturbed, dtype=torch.float)
    if perturbed.dim() != per_question.dim() + 1 or perturbed.shape[:-1] != per_question.shape or not perturbed.numel():
        raise ValueError(f"{name} has shape {tuple(per_question.shape)} and perturbed_mean_logps "
                         f"{tuple(perturbed.shape)}: pass [N] and [N, K] (K >= 1 perturbed answers per question).")
    return per_question, perturbed


def truth_ratio_score(ratios: torch.Tensor, split: str) -> float:
    """TOFU's reported truth ratio: `mean min(TR, 1/TR)` on a forget split, `mean max(0, 1 − TR)` on the others."""
    if not isinstance(split, str):
        raise TypeError(f"split={split!r} is {kind(split)}: pass the split's name ('forget', 'retain').")
    ratios = torch.as_tensor(_non_empty(ratios, "truth ratios"))
    if split == "forget":
        return torch.minimum(ratios, 1 / ratios).mean().item()
    return (1 - ratios).clamp(min=0).mean().item()


def forget_quality(unlearned_truth_ratios, gold_truth_ratios) -> float:
    """p-value of the two-sample Kolmogorov–Smirnov test between the forget-set truth ratios of the unlearned model
    and of the retain-only ("gold") model. High (≥ 0.05) = indistinguishable from never having seen the data."""
    from scipy.stats import ks_2samp

    unlearned = _non_empty(unlearned_truth_ratios, "unlearned_truth_ratios")
    gold = _non_empty(gold_truth_ratios, "gold_truth_ratios")
    numbers_array("unlearned_truth_ratios", unlearned, allow_inf=True, minimum=0)
    numbers_array("gold_truth_ratios", gold, allow_inf=True, minimum=0)
    return float(ks_2samp(unlearned, gold).pvalue)


def harmonic_mean(values: Sequence[float] | Mapping[str, float]) -> float:
    """Harmonic mean; 0 when any value is 0 (TOFU's model utility is 0 once one of its nine numbers is)."""
    array = _non_empty(list(values.values()) if isinstance(values, Mapping) else values, "values")
    if (array < 0).any() or not np.isfinite(array).all():
        raise ValueError(f"harmonic_mean needs finite values >= 0, got {array.tolist()}.")
    if (array == 0).any():
        return 0.0
    return float(array.size / np.sum(1.0 / array))


def model_utility(values: Mapping[str, float]) -> float:
    """TOFU model utility: the harmonic mean of {probability, ROUGE-L recall, truth ratio} × {retain, real authors,
    world facts} — nine numbers, named e.g. `retain_probability`."""
    if len(values) != 9:
        raise ValueError(f"model_utility takes the 9 TOFU numbers, got {len(values)}: {sorted(values)}.")
    return harmonic_mean(values)


def normalised_probability(correct_mean_logps: torch.Tensor, perturbed_mean_logps: torch.Tensor) -> torch.Tensor:
    """`P̄(correct) / (P̄(correct) + Σ P̄(perturbed))` per question (TOFU's probability on real authors/world facts)."""
    correct, perturbed = _paired(correct_mean_logps, perturbed_mean_logps, "correct_mean_logps")
    return torch.softmax(torch.cat([correct.unsqueeze(-1), perturbed], dim=-1), dim=-1)[..., 0]


def mia_auc(forget_scores, holdout_scores) -> float:
    """ROC AUC of a membership score, forget examples positive and holdout examples negative."""
    from sklearn.metrics import roc_auc_score

    forget = _non_empty(forget_scores, "forget_scores")
    holdout = _non_empty(holdout_scores, "holdout_scores")
    scores = np.concatenate([forget, holdout])
    if not np.isfinite(scores).all():
        raise ValueError("MIA scores hold NaN or inf (a log-probability of −inf?): clamp or drop those examples.")
    labels = np.concatenate([np.ones(forget.size), np.zeros(holdout.size)])
    return float(roc_auc_score(labels, scores))


def mia_roc(forget_scores, holdout_scores) -> dict[str, list[float] | float]:
    """The ROC curve behind `mia_auc`: `{"fpr": [...], "tpr": [...], "auc": float}` (numbers only, for plots)."""
    from sklearn.metrics import roc_curve

    forget = _non_empty(forget_scores, "forget_scores")
    holdout = _non_empty(holdout_scores, "holdout_scores")
    auc = mia_auc(forget, holdout)  # first: it refuses NaN and inf scores, which roc_curve cannot take
    labels = np.concatenate([np.ones(forget.size), np.zeros(holdout.size)])
    fpr, tpr, _ = roc_curve(labels, np.concatenate([forget, holdout]))
    return {"fpr": fpr.round(4).tolist(), "tpr": tpr.round(4).tolist(), "auc": auc}


def privleak(auc_unlearned: float, auc_gold: float) -> float:
    """MUSE's PrivLeak (Shi et al. 2025, arXiv 2407.06460), in percent, from two `mia_auc` values.

    `auc_unlearned` and `auc_gold` (the retrained, retain-only model's, same attack and data) are oriented as `mia_auc`
    orients them: forget examples positive, 1 = the forget set looks familiar, 0.5 = chance. MUSE orients its AUC the
    other way (a model that memorised the forget set scores ≈ 0), so PrivLeak is computed on `A' = 1 − auc_unlearned`
    and `R' = 1 − auc_gold`: `(A' − R') / R' × 100` — open-unlearning's `privleak` (which adds 1e-10 to `R'`).

    0 = leaks like never having trained on the forget set; negative = under-unlearned (−100 for a model whose forget
    examples all outscore the holdout ones, as MUSE's target models do); positive = over-unlearned (the forget set
    looks less familiar than never-seen data, which an attacker can also detect).
    """
    auc_unlearned = check_number("auc_unlearned", auc_unlearned, 0, 1,
                                 note="an ROC AUC, e.g. mia_min_k_auc of evaluate_tofu")  # fmt: skip
    auc_gold = check_number("auc_gold", auc_gold, 0, 1, note="an ROC AUC, e.g. the gold model's mia_min_k_auc")
    if not auc_gold < 1:
        raise ValueError(f"privleak needs the gold model's AUC < 1, got {auc_gold}: PrivLeak divides by 1 − AUC "
                         "(MUSE's orientation); a retain-only model that tells every forget example from the holdout "
                         "ones means the two sets differ: check the data and the gold model's MIA evaluation.")
    muse_unlearned, muse_gold = 1 - auc_unlearned, 1 - auc_gold
    return (muse_unlearned - muse_gold) / muse_gold * 100


def add_mia_results(results: dict, scores: dict, privleak_attack: str, gold_auc: float | None, non_finite: str,
                    no_gold: str) -> None:
    """Fill a suite's `results` from membership `scores` (`{"forget": {attack: [N]}, "holdout": {...}}`): each
    attack's ROC and AUC (`mia_<attack>_auc`) or, where a score is NaN/inf, the reason `non_finite` under `missing`;
    then `privleak` of `privleak_attack` against the gold model's AUC, or the reason it is missing (`no_gold`)."""
    results["mia_roc"] = {}
    for attack in scores["forget"]:
        forget, holdout = scores["forget"][attack], scores["holdout"][attack]
        if not (forget.isfinite().all() and holdout.isfinite().all()):
            results["missing"][f"mia_{attack}_auc"] = f"a membership score came out NaN or inf ({non_finite})"
            continue
        results["mia_roc"][attack] = mia_roc(forget, holdout)
        results[f"mia_{attack}_auc"] = results["mia_roc"][attack]["auc"]
    if gold_auc is None:
        results["missing"]["privleak"] = no_gold
    elif f"mia_{privleak_attack}_auc" not in results:
        reason = results["missing"][f"mia_{privleak_attack}_auc"]
        results["missing"]["privleak"] = f"mia_{privleak_attack}_auc is missing: {reason}"
    else:
        results["privleak"] = privleak(results[f"mia_{privleak_attack}_auc"], gold_auc)


def loss_score(mean_nll: torch.Tensor) -> torch.Tensor:
    """LOSS attack membership score: the negative mean answer-token NLL."""
    return -mean_nll


def zlib_score(mean_nll: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
    """ZLib attack (Carlini et al. 2021): NLL relative to the text's zlib-compressed length; score = −NLL / zlib."""
    lengths = torch.tensor([len(zlib.compress(text.encode("utf-8"))) for text in texts], dtype=mean_nll.dtype)
    return -mean_nll / lengths


def membership_scores(mean_nll: torch.Tensor, stats: dict, texts: Sequence[str], conventions: Conventions) -> dict:
    """Per example, the LOSS, ZLib, Min-K (k = 0.4) and Min-K++ (k = 0.4) membership scores from `token_statistics`'
    `stats` (with `min_k_plus_plus`), `texts` the strings ZLib compresses, under `conventions`."""
    mask = scored_mask(stats["mask"], conventions.end_token)
    return {
        "loss": loss_score(mean_nll),
        "zlib": zlib_score(mean_nll, texts),
        "min_k": min_k_score(stats["token_logps"], mask, 0.4, conventions.min_k_rounding),
        "min_k_plus_plus": lowest_k_mean(stats["min_k_plus_plus"], mask, 0.4, conventions.min_k_rounding),
    }


def lowest_k_mean(values: torch.Tensor, mask: torch.Tensor, k: float = 0.4, rounding: str = "floor") -> torch.Tensor:
    """Per row, the mean of the lowest `floor(k·n)` (`rounding="ceil"`: `ceil(k·n)`) of its `n` unmasked values, at
    least one."""
    check_fraction("k", k, note="the share of lowest answer-token values averaged, e.g. 0.4 for Min-40%")
    check_choice("rounding", rounding, ("floor", "ceil"))
    values, mask = torch.as_tensor(values), torch.as_tensor(mask)
    if values.shape != mask.shape or values.dim() < 1:
        raise ValueError(f"values {tuple(values.shape)} and mask {tuple(mask.shape)}: pass two [N, T] tensors of one "
                         "shape (a mask of the answer positions).")  # fmt: skip
    mask = mask.bool()
    counts = mask.sum(-1)
    if (counts == 0).any():
        raise ValueError("a row has no answer token: every label is masked.")
    ordered = values.masked_fill(~mask, math.inf).sort(dim=-1).values
    share = counts.double() * k
    keep = (share.ceil() if rounding == "ceil" else share.floor()).clamp(min=1).long()
    taken = torch.arange(values.shape[-1], device=values.device) < keep.unsqueeze(-1)
    return (ordered.masked_fill(~taken, 0)).sum(-1) / keep


def min_k_score(token_logps: torch.Tensor, mask: torch.Tensor, k: float = 0.4, rounding: str = "floor") -> torch.Tensor:
    """Min-K% Prob (Shi et al. 2024): the mean of the lowest k% answer-token log-probs (`rounding`: `lowest_k_mean`)."""
    return lowest_k_mean(token_logps, mask, k, rounding)


def min_k_plus_plus_z(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Min-K%++ token scores (Zhang et al. 2024): `(log p(y_t) − μ_t) / σ_t`, with μ_t and σ_t the mean and standard
    deviation of `log p(·)` under the model's own next-token distribution. `logits` `[..., V]`, `labels` `[...]`."""
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)}: pass logits [..., V] and "
                         "labels [...] (one label per position, aligned with align_logits_and_labels).")
    # each position as a one-label example (labels [N]), so token_logps shifts nothing
    logps, _ = token_logps(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    return standardised_logps(logits, logps.view(labels.shape))


def standardised_logps(logits: torch.Tensor, label_logps: torch.Tensor) -> torch.Tensor:
    """`min_k_plus_plus_z` from the labels' log-probabilities already computed (`hf_unlearn.losses.token_logps`) and
    the aligned `logits` `[..., V]` they come from, whose distribution gives μ and σ."""
    flat = logits.reshape(-1, logits.shape[-1])
    rows = max(1, 2**22 // max(flat.shape[-1], 1))  # float32 temporaries of at most 16 MiB, never a [B, T, V] copy
    mu, variance = [], []
    for chunk in flat.split(rows):
        logp = chunk.float().log_softmax(-1)
        weighted = logp.exp() * logp  # p·log p, reused for both moments
        mu.append(weighted.sum(-1))
        variance.append((weighted * logp).sum(-1) - mu[-1].square())
    mu, variance = torch.cat(mu).view(label_logps.shape), torch.cat(variance).view(label_logps.shape)
    return (label_logps - mu) / variance.clamp(min=1e-6).sqrt()  # variance floor 1e-6, as open-unlearning


def reference_score(mean_nll: torch.Tensor, reference_mean_nll: torch.Tensor) -> torch.Tensor:
    """Reference attack: `−(NLL_target − NLL_reference)`; calibrates away how hard each text is in general."""
    return -(mean_nll - reference_mean_nll)


def extraction_strength(correct: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per example `1 − k/|y|`, k the shortest answer prefix after which teacher-forced greedy predictions match
    every remaining answer token (Carlini et al. 2021; MUSE/open-unlearning). `correct`, `mask`: `[B, T]` bools."""
    correct, mask = _flags(correct, mask)
    counts = mask.sum(-1)
    if (counts == 0).any():
        raise ValueError("a row has no answer token: every label is masked.")
    position = mask.long().cumsum(-1)  # 1-based index among answer tokens
    last_wrong = (position * (mask & ~correct)).amax(-1)
    return 1 - last_wrong.float() / counts


def exact_memorization(correct: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per example, the share of answer tokens whose teacher-forced argmax equals the label."""
    correct, mask = _flags(correct, mask)
    counts = mask.sum(-1)
    if (counts == 0).any():
        raise ValueError("a row has no answer token: every label is masked.")
    return (correct & mask).sum(-1).float() / counts


def _flags(correct, mask) -> tuple[torch.Tensor, torch.Tensor]:
    correct, mask = torch.as_tensor(correct), torch.as_tensor(mask)
    if correct.shape != mask.shape or correct.dim() != 2:
        raise ValueError(f"correct {tuple(correct.shape)} and mask {tuple(mask.shape)}: pass two [B, T] bool tensors "
                         "of one shape (token_statistics' 'correct' and 'mask').")  # fmt: skip
    return correct.bool(), mask.bool()


def rouge_l_recall(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """ROUGE-L recall of each generation against its reference answer: LCS / reference words (Porter stemmer, as
    TOFU)."""
    return [score.recall for score in _rouge_l(predictions, references)]


def rouge_l_f1(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """ROUGE-L F1 of each generation against its reference: the harmonic mean of LCS / reference words (recall) and
    LCS / generated words (precision), Porter stemmer — MUSE's VerbMem and KnowMem (open-unlearning's `rougeL_f1`)."""
    return [score.fmeasure for score in _rouge_l(predictions, references)]


def _rouge_l(predictions: Sequence[str], references: Sequence[str]) -> list:
    from rouge_score import rouge_scorer

    check_strings("predictions", predictions, unit="generated answers")
    check_strings("references", references, unit="reference answers")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references: pass one of each.")
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_stemming_tokenizer())
    return [scorer.score(ref, pred)["rougeL"] for pred, ref in zip(predictions, references, strict=True)]


@functools.cache
def _stemming_tokenizer():
    """rouge-score's own tokenizer with its Porter stemmer (`use_stemmer=True`), each word stemmed once per process:
    the same tokens, in less than half the time (stemming is most of ROUGE-L's cost)."""
    from nltk.stem import porter
    from rouge_score import tokenize, tokenizers

    class StemmingTokenizer(tokenizers.Tokenizer):
        stem = staticmethod(functools.lru_cache(maxsize=100_000)(porter.PorterStemmer().stem))

        def tokenize(self, text):
            return tokenize.tokenize(text, self)

    return StemmingTokenizer()
