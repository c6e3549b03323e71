"""`evaluate_tofu` on real TOFU rows (first rows of each split) with a tiny model: every key, sane ranges, and the
gold-dependent numbers absent — with the reason — until the gold model's numbers are given."""

import copy

import pytest

from hf_unlearn.data import load_tofu
from hf_unlearn.evaluation import evaluate_tofu, harmonic_mean
from hf_unlearn.synthetic import build_tiny_causal_lm, train_tokenizer

KEYS = [
    "forget_probability", "forget_rouge", "forget_truth_ratio", "retain_probability", "retain_rouge",
    "retain_truth_ratio", "real_authors_probability", "real_authors_rouge", "real_authors_truth_ratio",
    "world_facts_probability", "world_facts_rouge", "world_facts_truth_ratio", "model_utility", "mia_loss_auc",
    "mia_zlib_auc", "mia_min_k_auc", "mia_min_k_plus_plus_auc", "extraction_strength", "exact_memorization",
]  # fmt: skip


@pytest.fixture(scope="module")
def tofu_model(tofu_path):
    retain = load_tofu("retain90", tofu_path).select(range(300))
    tokenizer = train_tokenizer([f"{r['question']} {r['answer']}" for r in retain], vocab_size=800)
    return build_tiny_causal_lm(tokenizer, hidden_size=32, num_layers=1, num_heads=2), tokenizer


def test_every_key_and_the_missing_reasons(tofu_model, tofu_path):
    model, tokenizer = tofu_model
    results = evaluate_tofu(model, tokenizer, "forget01", tofu_path, max_new_tokens=8, limit=6)
    for key in KEYS:
        assert 0.0 <= results[key] <= 1.0, key
    utility = [results[f"{s}_{m}"] for s in ("retain", "real_authors", "world_facts")
               for m in ("probability", "rouge", "truth_ratio")]  # fmt: skip
    assert results["model_utility"] == pytest.approx(harmonic_mean(utility))
    assert "forget_quality" not in results and "privleak" not in results and "mia_reference_auc" not in results
    assert set(results["missing"]) == {"forget_quality", "privleak", "mia_reference_auc"}
    assert len(results["forget_truth_ratios"]) == 6

    gold = evaluate_tofu(model, tokenizer, "forget01", tofu_path, max_new_tokens=8, limit=6,
                         gold_forget_truth_ratios=results["forget_truth_ratios"], gold_mia_auc=results["mia_min_k_auc"],
                         reference_model=copy.deepcopy(model))  # fmt: skip
    assert gold["forget_quality"] == pytest.approx(1.0)  # the same model as its own gold: indistinguishable
    assert gold["privleak"] == pytest.approx(0.0)
    assert gold["mia_reference_auc"] == pytest.approx(0.5)  # target = reference: every score is 0
    assert gold["missing"] == {}


def test_bad_forget_split(tofu_model, tofu_path):
    with pytest.raises(ValueError, match="forget_split='retain90': use forget01"):
        evaluate_tofu(*tofu_model, "retain90", tofu_path)


@pytest.mark.parametrize("split,membership", [("forget01_perturbed", True), ("retain_perturbed", False),
                                              ("real_authors_perturbed", False)])  # fmt: skip
def test_one_pass_per_split_gives_each_answer_kind_its_own_numbers(tofu_model, tofu_path, split, membership):
    """A split's answers, paraphrases and perturbed answers scored in one pass (each prompt once) give the numbers of
    one pass per kind, in the right places: [N] answers, [N] paraphrases (or None), [N, k] perturbed."""
    import torch

    from hf_unlearn.evaluation.tofu import _split_statistics, _statistics

    model, tokenizer = tofu_model
    rows = [dict(row) for row in load_tofu(split, tofu_path).select(range(5))]
    questions, k = [r["question"] for r in rows], min(len(r["perturbed_answer"]) for r in rows)

    def mean_logps(answers, repeat=1):
        stats = _statistics(model, tokenizer, [q for q in questions for _ in range(repeat)], answers, 4)
        return stats["sum_logps"] / stats["num_tokens"]

    answer_stats, paraphrased, perturbed = _split_statistics(model, tokenizer, rows, 4, membership)
    assert perturbed.shape == (5, k) and answer_stats["sum_logps"].shape == (5,)
    assert ("min_k_plus_plus" in answer_stats) == membership
    answers = answer_stats["sum_logps"] / answer_stats["num_tokens"]
    assert torch.allclose(answers, mean_logps([r["answer"] for r in rows]), atol=1e-4)
    expected = mean_logps([a for r in rows for a in r["perturbed_answer"][:k]], k).view(5, k)
    assert torch.allclose(perturbed, expected, atol=1e-4)
    if "paraphrased_answer" in rows[0]:
        assert torch.allclose(paraphrased, mean_logps([r["paraphrased_answer"] for r in rows]), atol=1e-4)
    else:
        assert paraphrased is None


def test_conventions_change_only_the_metrics_they_name(tofu_model, tofu_path):
    """The leaderboards' conventions and ours give the same probabilities, ROUGE, truth ratios and LOSS AUC; exact
    memorisation and extraction strength leave each answer's end token out (leaderboard) or count it (ours), as worked
    out here from the per-token statistics, row by row."""
    from hf_unlearn.evaluation.tofu import _statistics

    model, tokenizer = tofu_model
    runs = {name: evaluate_tofu(model, tokenizer, "forget01", tofu_path, max_new_tokens=4, limit=6, conventions=name)
            for name in ("leaderboard", "hf-unlearn")}  # fmt: skip
    for key in ("forget_probability", "retain_rouge", "forget_truth_ratio", "model_utility", "mia_loss_auc"):
        assert runs["leaderboard"][key] == runs["hf-unlearn"][key], key
    rows = [dict(r) for r in load_tofu("forget01_perturbed", tofu_path).select(range(6))]
    stats = _statistics(model, tokenizer, [r["question"] for r in rows], [r["answer"] for r in rows], 32, True)
    for name, drop in (("leaderboard", 1), ("hf-unlearn", 0)):
        shares = []
        for correct, mask in zip(stats["correct"], stats["mask"], strict=True):
            flags = correct[mask].tolist()
            flags = flags[:len(flags) - drop]
            shares.append(sum(flags) / len(flags))
        assert runs[name]["exact_memorization"] == pytest.approx(sum(shares) / len(shares), rel=1e-6), name
    assert runs["leaderboard"]["exact_memorization"] != runs["hf-unlearn"]["exact_memorization"]
    with pytest.raises(ValueError, match="conventions='open-unlearning'"):
        evaluate_tofu(model, tokenizer, "forget01", tofu_path, conventions="open-unlearning")
