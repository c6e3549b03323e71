"""The `evaluate` modules in hf_unlearn/metrics: each loads offline from its folder with `evaluate.load(path)`,
returns what the pure function of `hf_unlearn.evaluation.metrics` returns on the same inputs, and its documented
example runs."""

from __future__ import annotations

import doctest
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import datasets  # noqa: E402
import evaluate  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import hf_unlearn  # noqa: E402
from hf_unlearn.evaluation import metrics as M  # noqa: E402
from hf_unlearn.evaluation.tofu import UTILITY_SPLITS  # noqa: E402

METRICS_DIR = Path(hf_unlearn.__file__).resolve().parent / "metrics"
MODULES = ("truth_ratio", "forget_quality", "mia_auc", "model_utility", "extraction_strength", "muse_rouge")

# TOFU-style toy: question 1 has P(paraphrase) 0.5 and perturbed answers 0.25, 0.25 → TR 0.5; question 2 has
# P(paraphrase) 0.2 and perturbed 0.4, 0.1 (geometric mean 0.2) → TR 1.0. Forget score mean(min(TR, 1/TR)) = 0.75,
# other splits mean(max(0, 1 − TR)) = 0.25.
PARAPHRASED = [math.log(0.5), math.log(0.2)]
PERTURBED = [[math.log(0.25), math.log(0.25)], [math.log(0.4), math.log(0.1)]]


def load(name: str) -> evaluate.EvaluationModule:
    return evaluate.load(str(METRICS_DIR / name))


@pytest.mark.parametrize("name", MODULES)
def test_module_is_documented_and_its_example_runs(name):
    assert (METRICS_DIR / name / f"{name}.py").is_file()
    module = load(name)
    assert module.name == name
    assert module.description.strip() and module.citation.lstrip().startswith("@")
    assert isinstance(module.features, datasets.Features) and module.reference_urls
    assert ">>>" in module.inputs_description
    # The example in the docs is real: run it as a doctest (it loads the module from the installed package).
    test = doctest.DocTestParser().get_doctest(module.inputs_description, {}, name, str(METRICS_DIR / name), 0)
    results = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE).run(test)
    assert results.attempted > 0 and results.failed == 0


def test_truth_ratio_matches_the_pure_functions_and_the_hand_worked_numbers():
    truth_ratio = load("truth_ratio")
    ratios = M.truth_ratio(torch.tensor(PARAPHRASED, dtype=torch.float64), torch.tensor(PERTURBED, dtype=torch.float64))
    assert ratios.tolist() == pytest.approx([0.5, 1.0])
    for split, hand_worked in (("forget", 0.75), ("retain", 0.25)):
        result = truth_ratio.compute(paraphrased_mean_logps=PARAPHRASED, perturbed_mean_logps=PERTURBED, split=split)
        assert result == {"truth_ratio": M.truth_ratio_score(ratios, split)}
        assert result["truth_ratio"] == pytest.approx(hand_worked)

    result = truth_ratio.compute(paraphrased_mean_logps=PARAPHRASED, perturbed_mean_logps=PERTURBED, split="forget",
                                 return_ratios=True)  # fmt: skip
    assert result["truth_ratios"] == ratios.tolist()

    # Questions with different numbers of perturbed answers: each is its own geometric mean.
    ragged = [[math.log(0.25)], [math.log(0.4), math.log(0.1), math.log(0.2)]]
    result = truth_ratio.compute(paraphrased_mean_logps=PARAPHRASED, perturbed_mean_logps=ragged, split="forget",
                                 return_ratios=True)  # fmt: skip
    expected = [M.truth_ratio(torch.tensor(p, dtype=torch.float64), torch.tensor(q, dtype=torch.float64)).item()
                for p, q in zip(PARAPHRASED, ragged, strict=True)]  # fmt: skip
    assert result["truth_ratios"] == expected == pytest.approx([0.5, 1.0])

    with pytest.raises(ValueError, match="split"):
        truth_ratio.compute(paraphrased_mean_logps=PARAPHRASED, perturbed_mean_logps=PERTURBED)
    with pytest.raises(ValueError, match="no perturbed answer"):
        truth_ratio.compute(paraphrased_mean_logps=PARAPHRASED, perturbed_mean_logps=[[-1.0], []], split="forget")


def test_forget_quality_takes_samples_of_different_lengths():
    forget_quality = load("forget_quality")
    unlearned, gold = [0.1, 0.2], [0.3, 0.4, 0.5]
    # Fully separated samples of sizes 2 and 3: D = 1 and the exact two-sided p-value is 2 / C(5, 2) = 0.2.
    result = forget_quality.compute(unlearned_truth_ratios=unlearned, gold_truth_ratios=gold)
    assert result == {"forget_quality": M.forget_quality(unlearned, gold)}
    assert result["forget_quality"] == pytest.approx(0.2)
    assert forget_quality.compute(unlearned_truth_ratios=gold, gold_truth_ratios=gold) == {"forget_quality": 1.0}

    for batch in ([0.1], [0.2]):  # the unlearned model's ratios stream in; the gold sample comes with compute
        forget_quality.add_batch(unlearned_truth_ratios=batch)
    assert forget_quality.compute(gold_truth_ratios=gold) == result

    with pytest.raises(ValueError, match="gold_truth_ratios"):
        forget_quality.compute(unlearned_truth_ratios=unlearned)


def test_truth_ratio_feeds_forget_quality():
    truth_ratio, forget_quality = load("truth_ratio"), load("forget_quality")
    unlearned = truth_ratio.compute(paraphrased_mean_logps=PARAPHRASED, perturbed_mean_logps=PERTURBED,
                                    split="forget", return_ratios=True)["truth_ratios"]  # fmt: skip
    gold = [0.9, 1.1, 1.2]
    assert forget_quality.compute(unlearned_truth_ratios=unlearned, gold_truth_ratios=gold) == {
        "forget_quality": M.forget_quality(unlearned, gold)
    }


def test_mia_auc_and_privleak():
    mia_auc = load("mia_auc")
    forget, holdout = [0.9, 0.3], [0.5, 0.1]
    # 3 of the 4 (forget, holdout) pairs rank the forget example higher → AUC 0.75; against a gold AUC of 0.5,
    # PrivLeak (MUSE's orientation, 1 − AUC) = ((1 − 0.75) − (1 − 0.5)) / (1 − 0.5) × 100 = −50: under-unlearned.
    result = mia_auc.compute(forget_scores=forget, holdout_scores=holdout)
    assert result == {"auc": M.mia_auc(forget, holdout)}
    assert result["auc"] == pytest.approx(0.75)
    result = mia_auc.compute(forget_scores=forget, holdout_scores=holdout, gold_auc=0.5)
    assert result == {"auc": M.mia_auc(forget, holdout), "privleak": M.privleak(M.mia_auc(forget, holdout), 0.5)}
    assert result["privleak"] == pytest.approx(-50.0)
    # Holdout larger than forget, and the forget scores streamed.
    mia_auc.add_batch(forget_scores=[0.2, 0.8])
    assert mia_auc.compute(holdout_scores=[0.1, 0.5, 0.9]) == {"auc": M.mia_auc([0.2, 0.8], [0.1, 0.5, 0.9])}

    with pytest.raises(ValueError, match="holdout_scores"):
        mia_auc.compute(forget_scores=forget)


def test_model_utility_takes_the_nine_tofu_numbers():
    model_utility = load("model_utility")
    names = {f"{split}_{metric}" for split in UTILITY_SPLITS for metric in ("probability", "rouge", "truth_ratio")}
    assert set(model_utility.features) == names  # the names `evaluate_tofu` reports
    numbers = {name: 1.0 if name.endswith("probability") else 0.5 for name in sorted(names)}
    # Harmonic mean of three 1.0 and six 0.5: 9 / (3 + 12) = 0.6.
    result = model_utility.compute(**{name: [value] for name, value in numbers.items()})
    assert result == {"model_utility": M.model_utility(numbers)}
    assert result["model_utility"] == pytest.approx(0.6)
    model_utility.add(**numbers)  # a dict of plain floats
    assert model_utility.compute() == result

    numbers["world_facts_rouge"] = 0.0
    assert model_utility.compute(**{name: [value] for name, value in numbers.items()}) == {"model_utility": 0.0}
    with pytest.raises(ValueError, match="one model at a time"):
        model_utility.compute(**{name: [value, value] for name, value in numbers.items()})


def test_extraction_strength_from_ragged_correct_flags():
    extraction_strength = load("extraction_strength")
    correct = [[1, 1, 1, 1], [0, 1, 0, 1], [1, 0], [0, 1, 1, 1]]
    # Per example (ES, EM): (1, 1); last wrong token 3 of 4 → (0.25, 0.5); last token wrong → (0, 0.5);
    # only the first of 4 wrong → (0.75, 0.75). Means: ES 0.5, EM 0.6875.
    flags = torch.tensor([row + [0] * (4 - len(row)) for row in correct], dtype=torch.bool)
    mask = torch.tensor([[1] * len(row) + [0] * (4 - len(row)) for row in correct], dtype=torch.bool)
    expected = {
        "extraction_strength": M.extraction_strength(flags, mask).mean().item(),
        "exact_memorization": M.exact_memorization(flags, mask).mean().item(),
    }
    result = extraction_strength.compute(correct=correct)
    assert result == expected
    assert result == pytest.approx({"extraction_strength": 0.5, "exact_memorization": 0.6875})
    assert extraction_strength.compute(correct=[[bool(x) for x in row] for row in correct]) == expected

    with pytest.raises(ValueError, match="no answer token"):
        extraction_strength.compute(correct=[[1], []])
