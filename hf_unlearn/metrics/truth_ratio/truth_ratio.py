"""TOFU truth ratio as an `evaluate` metric: a thin wrapper over `hf_unlearn.evaluation.metrics`."""

import datasets
import evaluate
import torch

from hf_unlearn.evaluation import citations
from hf_unlearn.evaluation import metrics as M

_CITATION = citations.TOFU

_DESCRIPTION = """\
Truth ratio (TOFU, Maini et al. 2024). Per question, the truth ratio compares how likely the model finds wrong
("perturbed") answers with how likely it finds a correct, paraphrased answer:

    TR = P̄(perturbed) / P̄(paraphrased)

where P̄ is the length-normalised answer probability exp(mean answer-token log-prob) and the perturbed side is the
geometric mean over the question's perturbed answers. A model that knows the answer gives TR << 1; a model that has
never seen it gives TR close to 1.

The reported number aggregates the per-question ratios as TOFU does: on a forget split, mean(min(TR, 1/TR)) (higher
= the model no longer prefers the true answer); on any other split (retain, real authors, world facts),
mean(max(0, 1 - TR)) (higher = the model still prefers the true answer).

The maths lives in `hf_unlearn.evaluation.metrics.truth_ratio` and `truth_ratio_score`; this module only feeds them.
"""

_KWARGS_DESCRIPTION = """
Args:
    paraphrased_mean_logps (`list` of `float`): per question, the mean answer-token log-probability of the
        paraphrased correct answer (for splits without a paraphrase, such as TOFU's real authors and world facts,
        pass the correct answer's).
    perturbed_mean_logps (`list` of `list` of `float`): per question, the mean answer-token log-probability of each
        of its perturbed (wrong) answers. Questions may have different numbers of perturbed answers; each question
        needs at least one.
    split (`str`, required): `"forget"` scores with mean(min(TR, 1/TR)); any other value (e.g. `"retain"`) with
        mean(max(0, 1 - TR)).
    return_ratios (`bool`, optional, default `False`): also return the per-question ratios (what `forget_quality`
        compares between an unlearned and a gold model).
Returns:
    truth_ratio (`float`): the aggregated score described above, in [0, 1].
    truth_ratios (`list` of `float`): the per-question ratios, only when `return_ratios=True`.
Examples:
    >>> import math
    >>> import os
    >>> import evaluate
    >>> import hf_unlearn
    >>> truth_ratio = evaluate.load(os.path.join(os.path.dirname(hf_unlearn.__file__), "metrics", "truth_ratio"))
    >>> # question 1: P(paraphrase) = 0.5, perturbed 0.25 and 0.25 -> TR = 0.25 / 0.5 = 0.5
    >>> # question 2: P(paraphrase) = 0.2, perturbed 0.4 and 0.1 (geometric mean 0.2) -> TR = 1.0
    >>> paraphrased = [math.log(0.5), math.log(0.2)]
    >>> perturbed = [[math.log(0.25), math.log(0.25)], [math.log(0.4), math.log(0.1)]]
    >>> truth_ratio.compute(paraphrased_mean_logps=paraphrased, perturbed_mean_logps=perturbed, split="forget")
    {'truth_ratio': 0.75}
    >>> truth_ratio.compute(paraphrased_mean_logps=paraphrased, perturbed_mean_logps=perturbed, split="retain")
    {'truth_ratio': 0.25}
    >>> results = truth_ratio.compute(
    ...     paraphrased_mean_logps=paraphrased, perturbed_mean_logps=perturbed, split="forget", return_ratios=True
    ... )
    >>> [round(ratio, 6) for ratio in results["truth_ratios"]]
    [0.5, 1.0]
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TruthRatio(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "paraphrased_mean_logps": datasets.Value("float64"),
                    "perturbed_mean_logps": datasets.Sequence(datasets.Value("float64")),
                }
            ),
            reference_urls=["https://arxiv.org/abs/2401.06121", "https://locuslab.github.io/tofu/"],
            codebase_urls=["https://github.com/locuslab/tofu"],
        )

    def _compute(self, paraphrased_mean_logps, perturbed_mean_logps, split=None, return_ratios=False):
        if split is None:
            raise ValueError('truth_ratio needs split=: "forget" for a forget split, or the name of another split.')
        ratios = []
        # One question at a time, so that questions may have different numbers of perturbed answers.
        for index, perturbed in enumerate(perturbed_mean_logps):
            if len(perturbed) == 0:
                raise ValueError(f"question {index} has no perturbed answer: each question needs at least one.")
            paraphrased = torch.tensor(paraphrased_mean_logps[index], dtype=torch.float64)
            ratios.append(M.truth_ratio(paraphrased, torch.tensor(perturbed, dtype=torch.float64)))
        ratios = torch.stack(ratios) if ratios else torch.empty(0, dtype=torch.float64)
        results = {"truth_ratio": M.truth_ratio_score(ratios, split)}
        if return_ratios:
            results["truth_ratios"] = ratios.tolist()
        return results
