"""MUSE's VerbMem and KnowMem score (mean ROUGE-L F1) as an `evaluate` metric: a thin wrapper over
`hf_unlearn.evaluation.metrics`."""

import datasets
import evaluate

from hf_unlearn.evaluation import citations
from hf_unlearn.evaluation import metrics as M

_CITATION = citations.MUSE

_DESCRIPTION = """\
MUSE's memorization scores (Shi et al. 2025, arXiv 2407.06460): the mean ROUGE-L F1 of the model's greedy outputs
against the references, with the Porter stemmer as in open-unlearning.

- VerbMem (C1, verbatim memorization): predictions are the greedy continuations (128 new tokens) of MUSE's
  `verbmem/forget` prompts; references the true continuations cut to their first 128 tokens.
- KnowMem (C2 on the forget set, C4 on the retain set): predictions are the greedy answers (32 new tokens) to MUSE's
  `knowmem/*_qa` questions after its in-context examples, cut at a new question; references the answers.

Lower on the forget set (toward the retrained model's) means less is memorised; on the retain set it should be kept.
ROUGE-L F1 is the harmonic mean of LCS / reference words (recall) and LCS / predicted words (precision). The scores
are in [0, 1] (MUSE's paper prints them x 100). `hf_unlearn.evaluation.evaluate_muse` runs the generation too; the
maths lives in `hf_unlearn.evaluation.metrics.rouge_l_f1`.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): the model's continuations (VerbMem) or answers (KnowMem), prompt excluded.
    references (`list` of `str`): the true continuations or answers, one per prediction.
Returns:
    rouge_l_f1 (`float`): the mean ROUGE-L F1, in [0, 1].
Examples:
    >>> import os
    >>> import evaluate
    >>> import hf_unlearn
    >>> muse_rouge = evaluate.load(os.path.join(os.path.dirname(hf_unlearn.__file__), "metrics", "muse_rouge"))
    >>> # LCS "the cat on mat" = 4 words: recall 4/6, precision 4/5, F1 8/11; the second answer is exact (1)
    >>> result = muse_rouge.compute(predictions=["the cat lay on mat", "1472"],
    ...                             references=["the cat sat on the mat", "1472"])
    >>> round(result["rouge_l_f1"], 4)  # (8/11 + 1) / 2
    0.8636
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MuseRouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),  # fmt: skip
            reference_urls=["https://arxiv.org/abs/2407.06460", "https://muse-bench.github.io/"],
            codebase_urls=["https://github.com/swj0419/muse_bench", "https://github.com/locuslab/open-unlearning"],
        )

    def _compute(self, predictions, references):
        if len(predictions) == 0:
            raise ValueError("muse_rouge got no prediction: pass at least one (and one reference for each).")
        scores = M.rouge_l_f1(list(predictions), list(references))
        return {"rouge_l_f1": sum(scores) / len(scores)}
