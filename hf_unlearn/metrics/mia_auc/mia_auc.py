"""Membership-inference AUC (and MUSE's PrivLeak) as an `evaluate` metric: a thin wrapper over
`hf_unlearn.evaluation.metrics`."""

import datasets
import evaluate

from hf_unlearn.evaluation import citations
from hf_unlearn.evaluation import metrics as M

_CITATION = citations.MIN_K + citations.MUSE

_DESCRIPTION = """\
Membership-inference AUC: the ROC AUC of a membership score (LOSS, zlib, Min-K% Prob (Shi et al. 2024), Min-K%++,
reference...) at telling forget examples (positive class) from holdout examples the model never saw (negative class).
Scores are "membership scores": higher means the example looks more like training data. 1.0 = the forget set looks
far more familiar than unseen data; 0.5 = indistinguishable.

Given the AUC of the gold (retain-only) model on the same forget/holdout data, the module also returns MUSE's
PrivLeak (Shi et al. 2025, arXiv 2407.06460) in MUSE's form and sign. MUSE orients the AUC the other way (1 - the AUC
above: a model that memorised the forget set scores about 0), so PrivLeak = (A' - R') / R' * 100 with
A' = 1 - AUC_unlearned and R' = 1 - AUC_gold, as open-unlearning computes it. 0 = leaks like a model never trained on
the forget data; negative = under-unlearned (-100: every forget example outscores every holdout one); positive =
over-unlearned. The returned `auc` keeps the orientation above (forget positive, 0.5 = chance).

Input shape: evaluate stores a metric's inputs as the columns of one table, so every input column must have the same
length, but the forget and holdout sets usually differ in size. The forget scores are therefore the metric's input
column (one row per forget example; they can be streamed with `add` / `add_batch`), and the holdout scores a
`compute` argument of any length.

The maths lives in `hf_unlearn.evaluation.metrics.mia_auc` and `privleak`; this module only feeds them.
"""

_KWARGS_DESCRIPTION = """
Args:
    forget_scores (`list` of `float`): the membership score of each forget example (higher = more member-like).
    holdout_scores (`list` of `float`, required): the membership score of each holdout (never-trained-on) example,
        computed the same way; its length may differ from `forget_scores`.
    gold_auc (`float`, optional): the gold (retain-only) model's AUC with the same attack and data, oriented like
        `auc` (in [0, 1)); when given, the result also holds `privleak`.
Returns:
    auc (`float`): the ROC AUC, forget positive and holdout negative, in [0, 1].
    privleak (`float`): MUSE's PrivLeak in percent (< 0: under-unlearned), only when `gold_auc` is given.
Examples:
    >>> import os
    >>> import evaluate
    >>> import hf_unlearn
    >>> mia_auc = evaluate.load(os.path.join(os.path.dirname(hf_unlearn.__file__), "metrics", "mia_auc"))
    >>> # 3 of the 4 (forget, holdout) pairs rank the forget example higher: 0.9 > 0.5, 0.9 > 0.1, 0.3 > 0.1
    >>> mia_auc.compute(forget_scores=[0.9, 0.3], holdout_scores=[0.5, 0.1])
    {'auc': 0.75}
    >>> # PrivLeak against a gold model at chance, on MUSE's 1 - AUC: (0.25 - 0.5) / 0.5 * 100 = -50 (under-unlearned)
    >>> mia_auc.compute(forget_scores=[0.9, 0.3], holdout_scores=[0.5, 0.1], gold_auc=0.5)
    {'auc': 0.75, 'privleak': -50.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MiaAuc(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"forget_scores": datasets.Value("float64")}),
            reference_urls=[
                "https://arxiv.org/abs/2310.16789",
                "https://arxiv.org/abs/2407.06460",
                "https://muse-bench.github.io/",
            ],
            codebase_urls=["https://github.com/swj0419/detect-pretrain-code", "https://github.com/swj0419/muse_bench"],
        )

    def _compute(self, forget_scores, holdout_scores=None, gold_auc=None):
        if holdout_scores is None:
            raise ValueError("mia_auc needs holdout_scores=: the membership scores of examples the model never saw.")
        auc = M.mia_auc(forget_scores, holdout_scores)
        results = {"auc": auc}
        if gold_auc is not None:
            results["privleak"] = M.privleak(auc, gold_auc)
        return results
