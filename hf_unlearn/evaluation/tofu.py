"""The TOFU suite (Maini et al. 2024) as one function: forget / retain / real authors / world facts, MIA on forget
vs holdout, extraction, and — given the gold (retain-only) model's numbers — forget quality and PrivLeak."""

from __future__ import annotations

from ..data import load_tofu, prepare_dataset
from . import metrics as M
from .generation import DEFAULT_MAX_NEW_TOKENS, greedy_answers
from .probability import token_statistics

TEMPLATE = "Question: {question}\nAnswer:"
UTILITY_SPLITS = ("retain", "real_authors", "world_facts")


def _statistics(model, tokenizer, questions, answers, batch_size, min_k_plus_plus=False):
    rows = prepare_dataset([{"question": q, "answer": a} for q, a in zip(questions, answers, strict=True)],
                           "evaluation rows", tokenizer, TEMPLATE, 512)  # fmt: skip
    return token_statistics(model, rows, batch_size, tokenizer.pad_token_id or 0, min_k_plus_plus)


def _split_statistics(model, tokenizer, rows, batch_size, membership=False):
    """A split's answers, paraphrased answers (where the split has them) and first k perturbed answers (k the fewest
    any row has), scored in one pass so that each question's prompt runs once for all of them. Returns the answers'
    token statistics, the paraphrases' mean log-probs (None without) and the perturbed answers' mean log-probs `[N, k]`.

    `membership`: the answers also feed the MIA, so they are scored apart, with Min-K%++, batched exactly as the
    holdout and reference-model passes they are compared with (a model is then its own reference to the last bit).
    """
    n, k = len(rows), min(len(row["perturbed_answer"]) for row in rows)
    questions = [row["question"] for row in rows]
    fields = ["answer", "paraphrased_answer"] if "paraphrased_answer" in rows[0] else ["answer"]
    if membership:
        answer_stats = _statistics(model, tokenizer, questions, [row["answer"] for row in rows], batch_size, True)
        fields = fields[1:]
    perturbed = [answer for row in rows for answer in row["perturbed_answer"][:k]]
    stats = _statistics(model, tokenizer, questions * len(fields) + [q for q in questions for _ in range(k)],
                        [row[field] for field in fields for row in rows] + perturbed, batch_size)  # fmt: skip
    mean_logps = stats["sum_logps"] / stats["num_tokens"]
    if not membership:
        answer_stats = {name: value[:n] for name, value in stats.items()}
        mean_logps = mean_logps[n:]
    paraphrased = mean_logps[:n] if "paraphrased_answer" in rows[0] else None
    return answer_stats, paraphrased, mean_logps[-n * k:].view(n, k)


def evaluate_tofu(
    model,
    tokenizer,
    forget_split: str = "forget10",
    path=None,
    gold_forget_truth_ratios=None,
    gold_mia_auc: float | None = None,
    reference_model=None,
    privleak_attack: str = "min_k",
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = 32,
    limit: int | None = None,
    generation_batch_size: int | None = None,
) -> dict:
    """Every TOFU number for `model`, as a flat dict with the leaderboards' keys.

    `forget_quality` needs the gold model's forget truth ratios (`result["forget_truth_ratios"]` of an
    `evaluate_tofu` run on it) and `privleak` its MIA AUC; without them those keys are absent and `missing` says why.
    `limit` keeps the first rows of each split (for quick checks; leaderboard numbers use every row).
    `batch_size` rows are scored per forward pass and `generation_batch_size` (default: `batch_size`) questions
    answered per `generate` call; larger generation batches cost KV-cache memory and save time per token.
    """
    if not forget_split.startswith("forget"):
        raise ValueError(f"forget_split={forget_split!r}: use forget01, forget05 or forget10.")

    def rows_of(split):
        data = [dict(row) for row in load_tofu(split, path)]
        return data[:limit] if limit else data

    utility = {name: rows_of(f"{name}_perturbed") for name in UTILITY_SPLITS}
    return evaluate_qa_suite(
        model, tokenizer, rows_of(f"{forget_split}_perturbed"), rows_of(forget_split.replace("forget", "holdout")),
        utility, gold_forget_truth_ratios, gold_mia_auc, reference_model, privleak_attack, max_new_tokens, batch_size,
        generation_batch_size,
    )  # fmt: skip


def score_gold(gold: dict, privleak_attack: str = "min_k") -> dict:
    """Complete the gold (retain-only) model's own results — forget quality 1 and PrivLeak 0 by construction — and
    return the arguments that score other models against it (`gold_forget_truth_ratios`, `gold_mia_auc`)."""
    ratios, auc = gold["forget_truth_ratios"], gold[f"mia_{privleak_attack}_auc"]
    gold["forget_quality"] = M.forget_quality(ratios, ratios)
    gold["privleak"] = M.privleak(auc, auc)
    for key in ("forget_quality", "privleak"):
        gold["missing"].pop(key, None)
    return {"gold_forget_truth_ratios": ratios, "gold_mia_auc": auc}


def evaluate_qa_suite(
    model,
    tokenizer,
    forget_rows: list[dict],
    holdout_rows: list[dict],
    utility_splits: dict[str, list[dict]],
    gold_forget_truth_ratios=None,
    gold_mia_auc: float | None = None,
    reference_model=None,
    privleak_attack: str = "min_k",
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    batch_size: int = 32,
    generation_batch_size: int | None = None,
) -> dict:
    """The TOFU suite on any question/answer rows that carry TOFU's fields (`perturbed_answer`, and
    `paraphrased_answer` on the forget and retain splits): forget / utility splits, MIA forget vs `holdout_rows`.

    `model_utility` is the harmonic mean of {probability, ROUGE-L, truth ratio} over the given utility splits —
    TOFU's model utility when they are retain, real_authors and world_facts.
    """
    results: dict = {"missing": {}}
    for name, rows in {"forget": forget_rows, **utility_splits}.items():
        # the forget answers' statistics also serve the MIA and extraction numbers, so they include Min-K%++
        stats, paraphrased, perturbed = _split_statistics(model, tokenizer, rows, batch_size, name == "forget")
        correct = stats["sum_logps"] / stats["num_tokens"]
        if paraphrased is not None:
            results[f"{name}_probability"] = correct.exp().mean().item()
        else:
            results[f"{name}_probability"] = M.normalised_probability(correct, perturbed).mean().item()
            paraphrased = correct  # real authors / world facts have no paraphrase: the answer itself is the truth
        ratios = M.truth_ratio(paraphrased, perturbed)
        results[f"{name}_truth_ratio"] = M.truth_ratio_score(ratios, "forget" if name == "forget" else name)
        answers = [r["answer"] for r in rows]
        generated = greedy_answers(model, tokenizer, [r["question"] for r in rows], TEMPLATE, max_new_tokens,
                                   generation_batch_size or batch_size)  # fmt: skip
        results[f"{name}_rouge"] = sum(M.rouge_l_recall(generated, answers)) / len(answers)
        if name == "forget":
            results["forget_truth_ratios"] = ratios.tolist()
            member = stats

    results["model_utility"] = M.harmonic_mean([results[f"{s}_{m}"] for s in utility_splits
                                                for m in ("probability", "rouge", "truth_ratio")])  # fmt: skip
    if gold_forget_truth_ratios is not None:
        results["forget_quality"] = M.forget_quality(results["forget_truth_ratios"], gold_forget_truth_ratios)
    else:
        results["missing"]["forget_quality"] = "no gold (retain-only) model's forget truth ratios were given"

    nonmember = _statistics(model, tokenizer, [r["question"] for r in holdout_rows],
                            [r["answer"] for r in holdout_rows], batch_size, min_k_plus_plus=True)  # fmt: skip
    scores = {}
    for side, stats, rows in (("forget", member, forget_rows), ("holdout", nonmember, holdout_rows)):
        nll = -stats["sum_logps"] / stats["num_tokens"]
        scores[side] = {
            "loss": M.loss_score(nll),
            "zlib": M.zlib_score(nll, [r["answer"] for r in rows]),
            "min_k": M.min_k_score(stats["token_logps"], stats["mask"]),
            "min_k_plus_plus": M.lowest_k_mean(stats["min_k_plus_plus"], stats["mask"]),
        }
        if reference_model is not None:
            ref = _statistics(reference_model, tokenizer, [r["question"] for r in rows], [r["answer"] for r in rows],
                              batch_size)  # fmt: skip
            scores[side]["reference"] = M.reference_score(nll, -ref["sum_logps"] / ref["num_tokens"])
    results["mia_roc"] = {attack: M.mia_roc(scores["forget"][attack], scores["holdout"][attack])
                          for attack in scores["forget"]}  # fmt: skip
    for attack, curve in results["mia_roc"].items():
        results[f"mia_{attack}_auc"] = curve["auc"]
    if reference_model is None:
        results["missing"]["mia_reference_auc"] = "no reference model was given"
    if gold_mia_auc is not None:
        results["privleak"] = M.privleak(results[f"mia_{privleak_attack}_auc"], gold_mia_auc)
    else:
        results["missing"]["privleak"] = "no gold (retain-only) model's MIA AUC was given"
    results["extraction_strength"] = M.extraction_strength(member["correct"], member["mask"]).mean().item()
    results["exact_memorization"] = M.exact_memorization(member["correct"], member["mask"]).mean().item()
    return results
