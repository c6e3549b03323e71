"""Evaluation as plain functions: answer probability/loss, the leaderboards' metrics (`metrics`), the TOFU and MUSE
suites, and the encoder audit (`audit`: Forgetting Score, EMIA, linear probe)."""

from . import audit, metrics
from .audit import audit_encoder
from .classifier import (
    accuracy_and_macro_f1,
    classifier_mia_auc,
    classifier_outputs,
    evaluate_classifier,
    membership_score,
)
from .generation import greedy_answers
from .metrics import (
    CONVENTIONS,
    Conventions,
    exact_memorization,
    extraction_strength,
    forget_quality,
    harmonic_mean,
    mia_auc,
    mia_roc,
    min_k_plus_plus_z,
    min_k_score,
    model_utility,
    normalised_probability,
    privleak,
    rouge_l_f1,
    rouge_l_recall,
    truth_ratio,
    truth_ratio_score,
)
from .muse import evaluate_muse, load_muse, score_muse_gold
from .probability import answer_nll, answer_stats, gradient_norms, token_statistics
from .tofu import evaluate_qa_suite, evaluate_tofu

__all__ = [
    "CONVENTIONS", "Conventions",
    "accuracy_and_macro_f1", "answer_nll", "answer_stats", "audit", "audit_encoder", "classifier_mia_auc",
    "classifier_outputs", "evaluate_classifier", "evaluate_muse", "evaluate_qa_suite", "evaluate_tofu",
    "exact_memorization", "extraction_strength", "forget_quality", "greedy_answers", "harmonic_mean", "load_muse",
    "membership_score", "metrics", "mia_auc", "mia_roc", "min_k_plus_plus_z", "min_k_score", "model_utility",
    "normalised_probability", "privleak", "rouge_l_f1", "rouge_l_recall", "score_muse_gold", "token_statistics",
    "truth_ratio", "truth_ratio_score", "gradient_norms",
]  # fmt: skip
