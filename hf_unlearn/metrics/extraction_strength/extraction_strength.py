"""Extraction strength and exact memorization as an `evaluate` metric: a thin wrapper over
`hf_unlearn.evaluation.metrics`."""

import datasets
import evaluate
import torch

from hf_unlearn.evaluation import citations
from hf_unlearn.evaluation import metrics as M

_CITATION = citations.EXTRACTION

_DESCRIPTION = """\
Extraction strength and exact memorization of answers under teacher forcing (Carlini et al. 2021; the definitions of
MUSE and open-unlearning). Per example, feed the prompt and the reference answer, take the model's argmax prediction
at each answer position, and mark whether it equals the answer token ("correct"). Then:

- extraction strength = 1 - k / |y|, with k the length of the shortest answer prefix after which every remaining
  answer token is predicted correctly: 1 = the whole answer is extracted from the prompt alone, 0 = even the last
  token needs the whole answer before it;
- exact memorization = the share of answer tokens predicted correctly.

The module returns the mean of each over the examples; lower on a forget set means less is memorised.

The maths lives in `hf_unlearn.evaluation.metrics.extraction_strength` and `exact_memorization`, which take padded
`[batch, tokens]` tensors; this module builds them (and their answer mask) from the ragged per-example lists.
"""

_KWARGS_DESCRIPTION = """
Args:
    correct (`list` of `list` of `bool` or `int`): per example, one flag per answer token (answer tokens only, no
        prompt or padding), true (or 1) where the teacher-forced argmax equals the label. Examples may have different
        lengths; each needs at least one token.
Returns:
    extraction_strength (`float`): mean extraction strength over the examples, in [0, 1].
    exact_memorization (`float`): mean exact memorization over the examples, in [0, 1].
Examples:
    >>> import os
    >>> import evaluate
    >>> import hf_unlearn
    >>> path = os.path.join(os.path.dirname(hf_unlearn.__file__), "metrics", "extraction_strength")
    >>> extraction_strength = evaluate.load(path)
    >>> # per example (ES, EM): all right (1, 1); last wrong token at 3 of 4 (0.25, 0.5);
    >>> # last token wrong (0, 0.5); only the first of 4 wrong (0.75, 0.75)
    >>> correct = [[1, 1, 1, 1], [0, 1, 0, 1], [True, False], [0, 1, 1, 1]]
    >>> extraction_strength.compute(correct=correct)
    {'extraction_strength': 0.5, 'exact_memorization': 0.6875}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ExtractionStrength(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"correct": datasets.Sequence(datasets.Value("bool"))}),
            reference_urls=["https://arxiv.org/abs/2012.07805", "https://arxiv.org/abs/2407.06460"],
            codebase_urls=["https://github.com/locuslab/open-unlearning"],
        )

    def _compute(self, correct):
        if len(correct) == 0:
            raise ValueError("extraction_strength got no example: pass at least one.")
        width = max(len(row) for row in correct)
        flags = torch.zeros(len(correct), width, dtype=torch.bool)
        mask = torch.zeros(len(correct), width, dtype=torch.bool)
        for index, row in enumerate(correct):
            flags[index, : len(row)] = torch.tensor(row, dtype=torch.bool)
            mask[index, : len(row)] = True
        return {
            "extraction_strength": M.extraction_strength(flags, mask).mean().item(),
            "exact_memorization": M.exact_memorization(flags, mask).mean().item(),
        }
