"""Each leaderboard metric against a hand-worked example (numbers in the docstrings)."""

import math
import zlib

import pytest
import torch
from torch.nn.utils.rnn import pad_sequence

from hf_unlearn.evaluation import metrics as M

LN = math.log


def test_truth_ratio_two_question_toy():
    """Q1: P̄(paraphrased) = 0.5, perturbed 0.25 and 0.25 (geometric mean 0.25) → TR = 0.5.
    Q2: P̄(paraphrased) = 0.2, perturbed 0.4 and 0.1 (geometric mean 0.2) → TR = 1.0.
    Forget score: mean(min(0.5, 2), min(1, 1)) = 0.75; other splits: mean(max(0, 0.5), max(0, 0)) = 0.25."""
    ratios = M.truth_ratio(torch.tensor([LN(0.5), LN(0.2)]), torch.tensor([[LN(0.25), LN(0.25)], [LN(0.4), LN(0.1)]]))
    assert ratios.tolist() == pytest.approx([0.5, 1.0], abs=1e-6)
    assert M.truth_ratio_score(ratios, "forget") == pytest.approx(0.75, abs=1e-6)
    assert M.truth_ratio_score(ratios, "retain") == pytest.approx(0.25, abs=1e-6)


def test_forget_quality_identical_and_disjoint():
    """Identical samples: KS statistic 0, p = 1. Two disjoint samples of 10: D = 1 and the exact two-sided
    p-value is 2 / C(20, 10) = 2 / 184756 = 1.0825e-5."""
    same = [0.1 * i for i in range(10)]
    assert M.forget_quality(same, same) == pytest.approx(1.0)
    assert M.forget_quality(same, [10 + x for x in same]) == pytest.approx(2 / math.comb(20, 10), rel=1e-6)
    with pytest.raises(ValueError, match="gold_truth_ratios is empty"):
        M.forget_quality(same, [])


def test_mia_auc_extremes():
    """Forget all above holdout: 1.0; all below: 0.0; the same scores on both sides: 0.5."""
    assert M.mia_auc([3, 4], [1, 2]) == 1.0
    assert M.mia_auc([1, 2], [3, 4]) == 0.0
    assert M.mia_auc([1, 2], [1, 2]) == 0.5
    with pytest.raises(ValueError, match="holdout_scores is empty"):
        M.mia_auc([1, 2], [])
    with pytest.raises(ValueError, match="NaN or inf"):
        M.mia_auc([-math.inf, 1], [0, 1])


def test_mia_roc_points_worked_by_hand():
    """Forget [3, 1], held-out [2, 0]: thresholds 3, 2, 1, 0 give (fpr, tpr) = (0, .5), (.5, .5), (.5, 1), (1, 1)."""
    curve = M.mia_roc([3, 1], [2, 0])
    assert list(zip(curve["fpr"], curve["tpr"], strict=True)) == [(0, 0), (0, 0.5), (0.5, 0.5), (0.5, 1), (1, 1)]
    assert curve["auc"] == 0.75


def test_min_k_plus_plus_standardisation():
    """Logits [0, 0, ln 2] give p = (1/4, 1/4, 1/2). μ = Σ p log p = −1.0397208, E[(log p)²] = 1.2011325, so
    σ = sqrt(1.2011325 − 1.0397208²) = ln 2 / 2 = 0.3465736; for label 2, z = (ln ½ − μ)/σ = 0.3465736/0.3465736 = 1."""
    z = M.min_k_plus_plus_z(torch.tensor([[0.0, 0.0, LN(2)]]), torch.tensor([2]))
    assert z.item() == pytest.approx(1.0, abs=1e-5)


def test_min_k_takes_the_lowest_share_of_answer_tokens():
    """Answer log-probs −1, −5, −3, −2 (a fifth, masked position holds 99): k = 0.4 of 4 tokens is 1.6; the
    leaderboards' floor keeps 1 token (−5), ceil keeps 2 (−5 and −3, mean −4). Of 2 tokens (0.8), floor still keeps
    1."""
    values = torch.tensor([[-1.0, -5.0, -3.0, -2.0, 99.0]])
    mask = torch.tensor([[True, True, True, True, False]])
    assert M.min_k_score(values, mask, k=0.4).item() == pytest.approx(-5.0)
    assert M.min_k_score(values, mask, k=0.4, rounding="ceil").item() == pytest.approx(-4.0)
    two = torch.tensor([[False, True, True, False, False]])
    assert M.min_k_score(values, two, k=0.4).item() == pytest.approx(-5.0)
    with pytest.raises(ValueError, match="rounding='round'"):
        M.min_k_score(values, mask, rounding="round")


def test_scored_mask_leaves_out_each_rows_last_answer_token_unless_asked():
    """Rows [prompt, a, b, END] and [prompt, a, END, pad]: the leaderboards score a, b and a; with end_token every
    answer position. A row of one answer token keeps it (there would be nothing to score)."""
    mask = torch.tensor([[False, True, True, True], [False, True, True, False], [False, False, True, False]])
    assert M.scored_mask(mask, end_token=False).tolist() == [[False, True, True, False], [False, True, False, False],
                                                             [False, False, True, False]]  # fmt: skip
    assert M.scored_mask(mask, end_token=True).tolist() == mask.tolist()
    # extraction strength of [right, wrong, END right]: with the end token k = 2 of 3, without it k = 2 of 2
    correct = torch.tensor([[False, True, False, True]])
    assert M.extraction_strength(correct, mask[:1]).item() == pytest.approx(1 / 3)
    assert M.extraction_strength(correct, M.scored_mask(mask[:1], False)).item() == pytest.approx(0.0)


def test_conventions_presets_and_bad_values():
    assert M.conventions(None) == M.conventions("leaderboard") == M.Conventions()
    assert M.conventions("hf-unlearn") == M.Conventions(end_token=True, min_k_rounding="ceil", zlib_text="raw")
    with pytest.raises(ValueError, match="conventions='tofu'.*'leaderboard' or 'hf-unlearn'"):
        M.conventions("tofu")
    with pytest.raises(ValueError, match="zlib_text='text'"):
        M.Conventions(zlib_text="text")
    with pytest.raises(TypeError, match="end_token='yes'"):
        M.Conventions(end_token="yes")


def test_extraction_strength_on_a_planted_prefix():
    """A prompt token (masked) then 4 answer tokens predicted [wrong, right, wrong, right]: the last wrong one is the
    3rd, so k = 3 and ES = 1 − 3/4 = 0.25; all right gives 1; the last one wrong gives 0. Exact memorisation is the
    share right: 2/4, 4/4, 3/4."""
    mask = torch.tensor([[False, True, True, True, True]] * 3)
    correct = torch.tensor([[True, False, True, False, True], [False, True, True, True, True],
                            [True, True, True, True, False]])  # fmt: skip
    assert M.extraction_strength(correct, mask).tolist() == pytest.approx([0.25, 1.0, 0.0])
    assert M.exact_memorization(correct, mask).tolist() == pytest.approx([0.5, 1.0, 0.75])


def test_harmonic_mean_with_one_zero():
    """H(1, ½) = 2 / (1 + 2) = ⅔; any zero makes the harmonic mean 0 (the utility of a model that lost one skill)."""
    assert M.harmonic_mean([1.0, 0.5]) == pytest.approx(2 / 3)
    assert M.harmonic_mean([1.0, 0.0, 0.5]) == 0.0
    names = [f"{s}_{m}" for s in ("retain", "real_authors", "world_facts") for m in ("probability", "rouge", "tr")]
    assert M.model_utility(dict.fromkeys(names, 0.5)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="takes the 9 TOFU numbers, got 2"):
        M.model_utility({"a": 1.0, "b": 1.0})


def test_normalised_probability():
    """P̄(correct) ½ against perturbed ¼ and ¼: ½ / (½ + ¼ + ¼) = ½."""
    p = M.normalised_probability(torch.tensor([LN(0.5)]), torch.tensor([[LN(0.25), LN(0.25)]]))
    assert p.item() == pytest.approx(0.5)


def test_privleak_in_muse_form_and_sign():
    """MUSE's PrivLeak on MUSE's AUC orientation: with A, R our (members-positive) AUCs of the unlearned and the gold
    model, A' = 1 − A and R' = 1 − R, and privleak = (A' − R') / R' × 100.

    A = 0.6, R = 0.5: A' = 0.4, R' = 0.5 → (0.4 − 0.5) / 0.5 × 100 = −20 (under-unlearned; the old members-positive
    form (A − R) / R × 100 gave +20). A = 1 (every forget text outscores every holdout one), R = 0.5 → −100, MUSE's
    target model. A = 0.2, R = 0.6: A' = 0.8, R' = 0.4 → +100 (over-unlearned). A = R → 0.

    open-unlearning's `privleak` (src/evals/metrics/privacy.py) on the same AUCs: s = 1 − A, r = 1 − R,
    (s − r) / (r + 1e-10) × 100; it agrees to 1e-9 relative (its 1e-10 guard is the only difference).
    """
    assert M.privleak(0.6, 0.5) == pytest.approx(-20.0, abs=1e-9)
    assert M.privleak(1.0, 0.5) == pytest.approx(-100.0, abs=1e-9)
    assert M.privleak(0.2, 0.6) == pytest.approx(100.0, abs=1e-9)
    assert M.privleak(0.37, 0.37) == 0.0
    for auc, gold in [(0.6, 0.5), (1.0, 0.5), (0.2, 0.6), (0.9731, 0.5228), (0.0, 0.8), (0.41, 0.07)]:
        open_unlearning = ((1 - auc) - (1 - gold)) / ((1 - gold) + 1e-10) * 100
        assert M.privleak(auc, gold) == pytest.approx(open_unlearning, rel=1e-9, abs=1e-9)
    with pytest.raises(ValueError, match="gold model's AUC < 1, got 1.0"):
        M.privleak(0.6, 1.0)
    assert M.privleak(0.6, 0.0) == pytest.approx(-60.0)  # a gold AUC of 0 is MUSE's 1: (0.4 − 1) / 1 × 100


def test_loss_zlib_and_reference_scores():
    nll = torch.tensor([2.0, 1.0])
    texts = ["aaaaaaaaaaaaaaaa", "a quick brown fox"]
    assert M.loss_score(nll).tolist() == [-2.0, -1.0]
    expected = [-2.0 / len(zlib.compress(texts[0].encode())), -1.0 / len(zlib.compress(texts[1].encode()))]
    assert M.zlib_score(nll, texts).tolist() == pytest.approx(expected)
    assert M.reference_score(nll, torch.tensor([1.5, 1.5])).tolist() == [-0.5, 0.5]


def test_rouge_l_recall():
    """'the cat sat' against 'the cat sat on the mat': LCS 3 of the reference's 6 tokens → recall 0.5."""
    assert M.rouge_l_recall(["the cat sat"], ["the cat sat on the mat"]) == [pytest.approx(0.5)]
    with pytest.raises(ValueError, match="1 predictions but 2 references"):
        M.rouge_l_recall(["a"], ["a", "b"])


def test_rouge_l_recall_stems_like_rouge_score():
    """Stemmed words match ('walked' ~ 'walking': recall 1 where the unstemmed match is 2/3), and the cached stemmer
    scores exactly as rouge-score's own `use_stemmer=True` on TOFU-like sentences."""
    from rouge_score import rouge_scorer

    assert M.rouge_l_recall(["she walked home"], ["she walking home"]) == [pytest.approx(1.0)]
    predictions = ["The author's novels were translated into nine languages", "He studied chemistry", "running dogs"]
    references = ["Her novels have been translated into many languages.", "She studies chemical engineering.", "ran"]
    reference_scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    expected = [reference_scorer.score(r, p)["rougeL"].recall for p, r in zip(predictions, references, strict=True)]
    assert M.rouge_l_recall(predictions, references) == expected


def test_token_statistics_matches_the_training_maths(memorised_model, tokenizer, qa_data):
    """One batched pass gives the same answer log-probs as the training loss, in any batch size, and a memorised
    model predicts (nearly) every answer token: exact memorisation and extraction strength close to 1."""
    from hf_unlearn.data import prepare_dataset
    from hf_unlearn.evaluation import token_statistics
    from hf_unlearn.losses import sequence_logps

    rows = prepare_dataset(qa_data[0], "forget", tokenizer, "Question: {question}\nAnswer:", 512)
    stats = token_statistics(memorised_model, rows, batch_size=3, pad_token_id=tokenizer.pad_token_id)
    again = token_statistics(memorised_model, rows, batch_size=8, pad_token_id=tokenizer.pad_token_id)
    assert torch.allclose(stats["sum_logps"], again["sum_logps"], atol=1e-5)
    # right padding needs no attention mask in a causal LM: padded positions come after every answer token
    batch = pad_sequence([torch.tensor(r["input_ids"]) for r in rows], batch_first=True)
    labels = pad_sequence([torch.tensor(r["labels"]) for r in rows], batch_first=True, padding_value=-100)
    with torch.no_grad():
        expected = sequence_logps(memorised_model(input_ids=batch).logits, labels)
    assert torch.allclose(stats["sum_logps"], expected[0], atol=1e-4)
    assert stats["num_tokens"].tolist() == expected[1].tolist()
    assert M.exact_memorization(stats["correct"], stats["mask"]).mean() > 0.9
    assert M.extraction_strength(stats["correct"], stats["mask"]).mean() > 0.8
    assert stats["min_k_plus_plus"].shape == stats["mask"].shape


def test_token_statistics_shares_prompts_exactly(memorised_model, tokenizer, qa_data, monkeypatch):
    """Rows that share a question (TOFU scores seven answers per question) run the prompt once and the answers against
    its KV cache: every number equals one full pass per row, and the rows come back in their order."""
    from hf_unlearn.data import prepare_dataset
    from hf_unlearn.evaluation import probability

    forget = qa_data[0]
    qa = [{"question": row["question"], "answer": other["answer"]} for row in forget for other in forget[:5]]
    rows = prepare_dataset(qa[::-1], "rows", tokenizer, "Question: {question}\nAnswer:", 512)
    assert probability._shared_prompts(rows) is not None and probability._shared_prompts(rows[::5]) is None
    shared = probability.token_statistics(memorised_model, rows, batch_size=7, pad_token_id=tokenizer.pad_token_id)
    monkeypatch.setattr(probability, "_takes_cache", lambda model: False)
    full = probability.token_statistics(memorised_model, rows, batch_size=7, pad_token_id=tokenizer.pad_token_id)
    assert torch.allclose(shared["sum_logps"], full["sum_logps"], atol=1e-4)
    assert torch.equal(shared["num_tokens"], full["num_tokens"])
    for name, metric in (("correct", M.extraction_strength), ("correct", M.exact_memorization)):
        assert torch.equal(metric(shared[name], shared["mask"]), metric(full[name], full["mask"]))
    for name in ("token_logps", "min_k_plus_plus"):
        assert torch.allclose(M.lowest_k_mean(shared[name], shared["mask"]), M.lowest_k_mean(full[name], full["mask"]),
                              atol=1e-4)  # fmt: skip


def test_greedy_answers_recall_memorised_facts(memorised_model, make_model, tokenizer, qa_data):
    """Batched, left-padded greedy generation: a model that memorised the rows answers them (ROUGE-L recall near 1),
    an untrained one does not; batch size does not change the answers."""
    from hf_unlearn.evaluation import greedy_answers

    forget = qa_data[0]
    questions, references = [r["question"] for r in forget], [r["answer"] for r in forget]
    answers = greedy_answers(memorised_model, tokenizer, questions, max_new_tokens=32, batch_size=3)
    assert answers == greedy_answers(memorised_model, tokenizer, questions, max_new_tokens=32, batch_size=8)
    assert sum(M.rouge_l_recall(answers, references)) / len(answers) > 0.9
    untrained = greedy_answers(make_model(), tokenizer, questions, max_new_tokens=32)
    assert sum(M.rouge_l_recall(untrained, references)) / len(untrained) < 0.5
    assert tokenizer.padding_side == "right"  # restored


def test_greedy_answers_static_cache_matches_the_growing_cache(memorised_model, tokenizer, qa_data):
    """A Llama generates with a preallocated (static) KV cache; the answers are those of the default growing cache."""
    from unittest.mock import patch

    from hf_unlearn.evaluation import generation

    questions = [r["question"] for r in qa_data[0]]
    assert generation._takes_static_cache(memorised_model)
    static = generation.greedy_answers(memorised_model, tokenizer, questions, max_new_tokens=32, batch_size=4)
    with patch.object(generation, "_takes_static_cache", return_value=False):
        dynamic = generation.greedy_answers(memorised_model, tokenizer, questions, max_new_tokens=32, batch_size=4)
    assert static == dynamic and any(static)


def test_probability_zero_is_a_documented_value_or_a_clear_error():
    """A model that gives the paraphrased answer probability 0 (log-prob −inf): TR = inf, which scores 0 on both
    the forget formula (min(inf, 1/inf) = 0) and the others (max(0, 1 − inf) = 0); a −inf MIA score is refused."""
    ratios = M.truth_ratio(torch.tensor([-math.inf, LN(0.5)]), torch.tensor([[LN(0.25)], [LN(0.25)]]))
    assert math.isinf(ratios[0]) and ratios[1].item() == pytest.approx(0.5)
    assert M.truth_ratio_score(ratios, "forget") == pytest.approx(0.25)
    assert M.truth_ratio_score(ratios, "retain") == pytest.approx(0.25)
    with pytest.raises(ValueError, match="NaN or inf"):
        M.mia_auc(M.loss_score(torch.tensor([math.inf, 1.0])), [0.5, 0.7])
