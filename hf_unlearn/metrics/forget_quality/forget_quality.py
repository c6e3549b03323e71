"""TOFU forget quality as an `evaluate` metric: a thin wrapper over `hf_unlearn.evaluation.metrics`."""

import datasets
import evaluate

from hf_unlearn.evaluation import citations
from hf_unlearn.evaluation import metrics as M

_CITATION = citations.TOFU

_DESCRIPTION = """\
Forget quality (TOFU, Maini et al. 2024): the p-value of a two-sample Kolmogorov-Smirnov test between the forget-set
truth ratios of the unlearned model and those of the "gold" model, trained on the retain data only (it never saw the
forget set). A high p-value (>= 0.05) means the two distributions cannot be told apart, i.e. the unlearned model
behaves on the forget set like a model that never learned it; a tiny p-value means it still behaves differently.

Input shape: evaluate stores a metric's inputs as the columns of one table, so every input column must have the same
length, but the two samples of a two-sample test usually do not. The unlearned model's truth ratios are therefore the
metric's input column (one row per forget question; they can be streamed with `add` / `add_batch`), and the gold
model's truth ratios are a `compute` argument: a fixed reference sample of any length.

The maths lives in `hf_unlearn.evaluation.metrics.forget_quality`; this module only feeds it.
"""

_KWARGS_DESCRIPTION = """
Args:
    unlearned_truth_ratios (`list` of `float`): per forget question, the truth ratio of the unlearned model (the
        `truth_ratio` module gives them with `return_ratios=True`).
    gold_truth_ratios (`list` of `float`, required): per forget question, the truth ratio of the gold (retain-only)
        model; its length may differ from `unlearned_truth_ratios`.
Returns:
    forget_quality (`float`): the Kolmogorov-Smirnov p-value, in [0, 1]; higher is better.
Examples:
    >>> import os
    >>> import evaluate
    >>> import hf_unlearn
    >>> forget_quality = evaluate.load(os.path.join(os.path.dirname(hf_unlearn.__file__), "metrics", "forget_quality"))
    >>> # Fully separated samples of sizes 2 and 3: D = 1, exact p = 2 / C(5, 2) = 0.2
    >>> forget_quality.compute(unlearned_truth_ratios=[0.1, 0.2], gold_truth_ratios=[0.3, 0.4, 0.5])
    {'forget_quality': 0.2}
    >>> forget_quality.compute(unlearned_truth_ratios=[0.3, 0.4, 0.5], gold_truth_ratios=[0.3, 0.4, 0.5])
    {'forget_quality': 1.0}
    >>> # The unlearned ratios can also be streamed:
    >>> for batch in ([0.1], [0.2]):
    ...     forget_quality.add_batch(unlearned_truth_ratios=batch)
    >>> forget_quality.compute(gold_truth_ratios=[0.3, 0.4, 0.5])
    {'forget_quality': 0.2}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ForgetQuality(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"unlearned_truth_ratios": datasets.Value("float64")}),
            reference_urls=["https://arxiv.org/abs/2401.06121", "https://locuslab.github.io/tofu/"],
            codebase_urls=["https://github.com/locuslab/tofu"],
        )

    def _compute(self, unlearned_truth_ratios, gold_truth_ratios=None):
        if gold_truth_ratios is None:
            raise ValueError("forget_quality needs gold_truth_ratios=: the gold (retain-only) model's forget truth "
                             "ratios, e.g. from the truth_ratio module with return_ratios=True.")  # fmt: skip
        return {"forget_quality": M.forget_quality(unlearned_truth_ratios, gold_truth_ratios)}
