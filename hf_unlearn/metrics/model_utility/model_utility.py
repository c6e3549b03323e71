"""TOFU model utility as an `evaluate` metric: a thin wrapper over `hf_unlearn.evaluation.metrics`."""

import datasets
import evaluate

from hf_unlearn.evaluation import citations
from hf_unlearn.evaluation import metrics as M

# The nine numbers, named as `hf_unlearn.evaluation.tofu.evaluate_tofu` reports them.
UTILITY_NAMES = tuple(f"{split}_{metric}" for split in ("retain", "real_authors", "world_facts")
                      for metric in ("probability", "rouge", "truth_ratio"))  # fmt: skip

_CITATION = citations.TOFU

_DESCRIPTION = """\
Model utility (TOFU, Maini et al. 2024): the harmonic mean of nine numbers, {probability, ROUGE-L recall, truth
ratio} on each of {retain set, real authors, world facts}. Being a harmonic mean, it drops to 0 as soon as one of
them does, so an unlearning method cannot hide a collapse on one split behind good numbers on the others.

The nine inputs, named as `hf_unlearn.evaluation.tofu.evaluate_tofu` reports them: retain_probability, retain_rouge,
retain_truth_ratio, real_authors_probability, real_authors_rouge, real_authors_truth_ratio, world_facts_probability,
world_facts_rouge, world_facts_truth_ratio. Each must be finite and >= 0.

Input shape: each number is an input column and one row is one model's nine numbers; the module scores exactly one
row. Either `add(**numbers)` with plain floats then `compute()`, or `compute(**{name: [value]})` with one-element
lists (evaluate's inputs are columns, so `compute` takes lists).

The maths lives in `hf_unlearn.evaluation.metrics.model_utility`; this module only feeds it.
"""

_KWARGS_DESCRIPTION = """
Args:
    retain_probability, retain_rouge, retain_truth_ratio, real_authors_probability, real_authors_rouge,
    real_authors_truth_ratio, world_facts_probability, world_facts_rouge, world_facts_truth_ratio
        (`float` in `add`, one-element `list` of `float` in `compute`): the nine TOFU numbers of one model, all
        required.
Returns:
    model_utility (`float`): their harmonic mean, 0 when any of them is 0; higher is better.
Examples:
    >>> import os
    >>> import evaluate
    >>> import hf_unlearn
    >>> model_utility = evaluate.load(os.path.join(os.path.dirname(hf_unlearn.__file__), "metrics", "model_utility"))
    >>> numbers = {
    ...     "retain_probability": 1.0, "retain_rouge": 0.5, "retain_truth_ratio": 0.5,
    ...     "real_authors_probability": 1.0, "real_authors_rouge": 0.5, "real_authors_truth_ratio": 0.5,
    ...     "world_facts_probability": 1.0, "world_facts_rouge": 0.5, "world_facts_truth_ratio": 0.5,
    ... }
    >>> # harmonic mean: 9 / (3 * 1/1.0 + 6 * 1/0.5) = 9 / 15 = 0.6
    >>> model_utility.compute(**{name: [value] for name, value in numbers.items()})
    {'model_utility': 0.6}
    >>> model_utility.add(**numbers)  # the same from a dict of plain floats
    >>> model_utility.compute()
    {'model_utility': 0.6}
    >>> numbers["world_facts_rouge"] = 0.0  # one number at 0 sets the utility to 0
    >>> model_utility.compute(**{name: [value] for name, value in numbers.items()})
    {'model_utility': 0.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ModelUtility(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({name: datasets.Value("float64") for name in UTILITY_NAMES}),
            reference_urls=["https://arxiv.org/abs/2401.06121", "https://locuslab.github.io/tofu/"],
            codebase_urls=["https://github.com/locuslab/tofu"],
        )

    def _compute(self, **columns):
        unknown = sorted(set(columns) - set(UTILITY_NAMES))
        if unknown:
            raise ValueError(f"model_utility got unknown arguments {unknown}: it takes the nine {list(UTILITY_NAMES)}.")
        rows = {len(values) for values in columns.values()}
        if rows != {1}:
            raise ValueError(f"model_utility scores one model at a time, got {rows.pop()} rows of the nine numbers: "
                             "pass each as a one-element list, or add(**numbers) once then compute().")  # fmt: skip
        return {"model_utility": M.model_utility({name: values[0] for name, values in columns.items()})}
