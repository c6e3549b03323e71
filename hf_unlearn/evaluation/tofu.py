"""The TOFU suite (Maini et al. 2024) as one function: forget / retain / real authors / world facts, MIA on forget
vs holdout, extraction, and — given the gold (retain-only) model's numbers — forget quality and PrivLeak."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

from ..data import load_tofu, prepare_dataset
from . import metrics as M
from .checks import (
    check_choice,
    check_number,
    check_positive_int,
    check_rows,
    kind,
    move_non_finite,
    numbers_array,
    show,
)
from .generation import DEFAULT_MAX_NEW_TOKENS, greedy_answers
from .probability import gradient_norms, token_statistics

TEMPLATE = "Question: {question}\nAnswer:"
UTILITY_SPLITS = ("retain", "real_authors", "world_facts")
FORGET_SPLITS = ("forget01", "forget05", "forget10")
MIA_ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus", "reference")
NON_FINITE = "the model's log-probabilities are not finite: its weights or logits hold NaN or inf"


def _tokenised(tokenizer, rows, answers=None):
    """Question/answer rows tokenised as the suite scores them (`answers` replaces the rows' own)."""
    answers = [row["answer"] for row in rows] if answers is None else answers
    return prepare_dataset([{"question": row["question"], "answer": a} for row, a in zip(rows, answers, strict=True)],
                           "evaluation rows", tokenizer, TEMPLATE, 512)  # fmt: skip


def _answer_texts(tokenizer, rows, conventions) -> list[str]:
    """The answers ZLib compresses: as written, or their scored tokens decoded (`conventions.zlib_text`)."""
    if conventions.zlib_text == "raw":
        return [row["answer"] for row in rows]
    labels = [[t for t in row["labels"] if t != -100] for row in _tokenised(tokenizer, rows)]
    return tokenizer.batch_decode(labels, skip_special_tokens=True)


def _statistics(model, tokenizer, questions, answers, batch_size, min_k_plus_plus=False):
    rows = _tokenised(tokenizer, [{"question": q} for q in questions], answers)
    return token_statistics(model, rows, batch_size, tokenizer.pad_token_id or 0, min_k_plus_plus)


def _split_statistics(model, tokenizer, rows, batch_size, membership=False):
    """A split's answers, paraphrased answers (where the split has them) and first k perturbed answers (k the fewest
    any row has), scored in one pass so that each question's prompt runs once for all of them. Returns the answers'
    token statistics, the paraphrases' mean log-probs (None without) and the perturbed answers' mean log-probs `[N, k]`.

    `membership`: the answers also feed the MIA, so they are scored apart, with Min-K%++, batched exactly as the
    holdout and reference-model passes they are compared with (a model is then its own reference to the last bit).
    """
    n, k = len(rows), min(len(row.get("perturbed_answer", ())) for row in rows)
    questions = [row["question"] for row in rows]
    fields = ["answer", "paraphrased_answer"] if "paraphrased_answer" in rows[0] else ["answer"]
    if membership:
        answer_stats = _statistics(model, tokenizer, questions, [row["answer"] for row in rows], batch_size, True)
        fields = fields[1:]
    perturbed = [answer for row in rows for answer in row["perturbed_answer"][:k]] if k else []
    if not fields and not perturbed:  # rows without paraphrases or wrong answers: the membership pass was all
        return answer_stats, None, None
    stats = _statistics(model, tokenizer, questions * len(fields) + [q for q in questions for _ in range(k)],
                        [row[field] for field in fields for row in rows] + perturbed, batch_size)  # fmt: skip
    mean_logps = stats["sum_logps"] / stats["num_tokens"]
    if not membership:
        answer_stats = {name: value[:n] for name, value in stats.items()}
        mean_logps = mean_logps[n:]
    paraphrased = mean_logps[:n] if "paraphrased_answer" in rows[0] else None
    return answer_stats, paraphrased, mean_logps[-n * k:].view(n, k) if k else None


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
    gradnorm: bool = False,
    conventions: M.Conventions | str = "leaderboard",
) -> dict:
    """Every TOFU number for `model`, as a flat dict with the leaderboards' keys.

    `forget_quality` needs the gold model's forget truth ratios (`result["forget_truth_ratios"]` of an
    `evaluate_tofu` run on it) and `privleak` its MIA AUC; without them those keys are absent and `missing` says why.
    `gradnorm=True` adds the GradNorm attack (`mia_gradnorm_auc`: one backward pass per forget and holdout row).
    `limit` keeps the first rows of each split (for quick checks; leaderboard numbers use every row): None or >= 1.
    `batch_size` rows are scored per forward pass and `generation_batch_size` (default: `batch_size`) questions
    answered per `generate` call; larger generation batches cost KV-cache memory and save time per token.
    `conventions`: how the metrics whose definitions differ between implementations are computed (extraction
    strength, exact memorisation, Min-K, Min-K++, ZLib): the leaderboards' by default, `"hf-unlearn"` for ours, or a
    `Conventions` (hf_unlearn.evaluation.metrics).

    Every argument is checked before the model runs (a `ValueError`/`TypeError`/`FileNotFoundError` that names it and
    the fix). A metric that comes out NaN or inf (a model whose logits are not finite) is left out and put in
    `missing` with the reason, never reported as a number.
    """
    check_choice("forget_split", forget_split, FORGET_SPLITS)
    check_positive_int("limit", limit, none="every row", unit="rows",
                       note="0 would score no row" if limit == 0 else "a negative limit would drop the last rows")
    _check_options(gold_forget_truth_ratios, gold_mia_auc, reference_model, privleak_attack, max_new_tokens,
                   batch_size, generation_batch_size)  # fmt: skip
    M.conventions(conventions)
    splits = [f"{forget_split}_perturbed", forget_split.replace("forget", "holdout")]
    splits += [f"{name}_perturbed" for name in UTILITY_SPLITS]
    _check_tofu_path(path, splits)

    def rows_of(split):
        data = [dict(row) for row in load_tofu(split, path)]
        return data if limit is None else data[:limit]

    utility = {name: rows_of(f"{name}_perturbed") for name in UTILITY_SPLITS}
    return evaluate_qa_suite(
        model, tokenizer, rows_of(f"{forget_split}_perturbed"), rows_of(forget_split.replace("forget", "holdout")),
        utility, gold_forget_truth_ratios, gold_mia_auc, reference_model, privleak_attack, max_new_tokens, batch_size,
        generation_batch_size, gradnorm, conventions,
    )  # fmt: skip


def score_gold(gold: dict, privleak_attack: str = "min_k") -> dict:
    """Complete the gold (retain-only) model's own results — forget quality 1 and PrivLeak 0 by construction — and
    return the arguments that score other models against it (`gold_forget_truth_ratios`, `gold_mia_auc`)."""
    check_choice("privleak_attack", privleak_attack, MIA_ATTACKS)
    ratios, auc = gold["forget_truth_ratios"], gold.get(f"mia_{privleak_attack}_auc")
    if any(math.isnan(ratio) for ratio in ratios):  # left missing, with the suite's reason
        ratios = None
    else:
        gold["forget_quality"] = M.forget_quality(ratios, ratios)
        gold["missing"].pop("forget_quality", None)
    if auc is None or not auc < 1:  # PrivLeak divides by 1 − it (MUSE's orientation)
        why = (f"missing ({gold['missing'].get(f'mia_{privleak_attack}_auc', 'not computed')})" if auc is None
               else f"{auc}, and PrivLeak divides by 1 − it")  # fmt: skip
        gold["missing"]["privleak"] = f"the gold model's mia_{privleak_attack}_auc is {why}"
        auc = None
    else:
        gold["privleak"] = M.privleak(auc, auc)
        gold["missing"].pop("privleak", None)
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
    gradnorm: bool = False,
    conventions: M.Conventions | str = "leaderboard",
) -> dict:
    """The TOFU suite on any question/answer rows: forget / utility splits, MIA forget vs `holdout_rows`. Rows that
    carry TOFU's fields (`perturbed_answer`, and `paraphrased_answer` on the forget and retain splits) also give the
    truth ratio, and with it forget quality and model utility; rows without them give every other number.

    `model_utility` is the harmonic mean of {probability, ROUGE-L, truth ratio} over the given utility splits —
    TOFU's model utility when they are retain, real_authors and world_facts.

    Rows are lists of dicts (or `datasets.Dataset`s), checked before the model runs: `question` and `answer` strings;
    `perturbed_answer` (a non-empty list of strings; not on `holdout_rows`) and `paraphrased_answer` each on every row
    of a split or on none. NaN or infinite metrics go to `missing` with the reason (as in `evaluate_tofu`), and
    `conventions` is `evaluate_tofu`'s.
    """
    _check_qa_rows(forget_rows, "forget_rows", perturbed_required=False)
    check_rows(holdout_rows, "holdout_rows", ("question", "answer"))
    _check_strings_in(holdout_rows, "holdout_rows", ("question", "answer"))
    if not isinstance(utility_splits, Mapping) or not utility_splits:
        raise (TypeError if not isinstance(utility_splits, Mapping) else ValueError)(
            f"utility_splits={show(utility_splits)}: pass a non-empty dict of split name -> rows, e.g. "
            "{'retain': retain_rows} (TOFU's model utility: retain, real_authors and world_facts)."
        )
    for name, rows in utility_splits.items():
        if not isinstance(name, str) or name == "forget":
            raise ValueError(f"utility_splits has the key {name!r}: name each utility split with a string other than "
                             "'forget' (its keys prefix the results, e.g. 'retain' -> retain_probability).")
        _check_qa_rows(rows, f"utility_splits[{name!r}]", perturbed_required=False)
    _check_options(gold_forget_truth_ratios, gold_mia_auc, reference_model, privleak_attack, max_new_tokens,
                   batch_size, generation_batch_size)  # fmt: skip
    conventions = M.conventions(conventions)

    results: dict = {"missing": {}}
    for name, rows in {"forget": forget_rows, **utility_splits}.items():
        # the forget answers' statistics also serve the MIA and extraction numbers, so they include Min-K%++
        stats, paraphrased, perturbed = _split_statistics(model, tokenizer, rows, batch_size, name == "forget")
        correct = stats["sum_logps"] / stats["num_tokens"]
        if paraphrased is not None or perturbed is None:
            results[f"{name}_probability"] = correct.exp().mean().item()
        else:
            results[f"{name}_probability"] = M.normalised_probability(correct, perturbed).mean().item()
            paraphrased = correct  # real authors / world facts have no paraphrase: the answer itself is the truth
        if perturbed is None:
            results["missing"][f"{name}_truth_ratio"] = f"the {name} rows have no perturbed_answer (wrong answers)"
        else:
            ratios = M.truth_ratio(paraphrased, perturbed)
            results[f"{name}_truth_ratio"] = M.truth_ratio_score(ratios, "forget" if name == "forget" else name)
        answers = [r["answer"] for r in rows]
        generated = greedy_answers(model, tokenizer, [r["question"] for r in rows], TEMPLATE, max_new_tokens,
                                   generation_batch_size or batch_size)  # fmt: skip
        results[f"{name}_rouge"] = sum(M.rouge_l_recall(generated, answers)) / len(answers)
        if stats["token_logps"].isnan().any():  # NaN logits: greedy tokens are argmaxes of NaN, not answers
            results[f"{name}_rouge"] = math.nan
        if name == "forget":
            if perturbed is not None:
                results["forget_truth_ratios"] = ratios.tolist()
            member = stats

    parts = [f"{s}_{m}" for s in utility_splits for m in ("probability", "rouge", "truth_ratio")]
    absent = [key for key in parts if key not in results]
    not_finite = [key for key in parts if key in results and not math.isfinite(results[key])]
    if absent:
        results["missing"]["model_utility"] = f"{', '.join(absent)} is missing (TOFU's utility needs wrong answers)"
    elif not_finite:
        results["missing"]["model_utility"] = f"{', '.join(not_finite)} came out NaN or inf ({NON_FINITE})"
    else:
        results["model_utility"] = M.harmonic_mean([results[key] for key in parts])
    if "forget_truth_ratios" not in results:
        results["missing"]["forget_quality"] = "the forget rows have no perturbed_answer (wrong answers)"
    elif gold_forget_truth_ratios is None:
        results["missing"]["forget_quality"] = "no gold (retain-only) model's forget truth ratios were given"
    elif any(math.isnan(ratio) for ratio in results["forget_truth_ratios"]):
        results["missing"]["forget_quality"] = f"the forget truth ratios hold NaN ({NON_FINITE})"
    else:
        results["forget_quality"] = M.forget_quality(results["forget_truth_ratios"], gold_forget_truth_ratios)

    nonmember = _statistics(model, tokenizer, [r["question"] for r in holdout_rows],
                            [r["answer"] for r in holdout_rows], batch_size, min_k_plus_plus=True)  # fmt: skip
    scores = {}
    for side, stats, rows in (("forget", member, forget_rows), ("holdout", nonmember, holdout_rows)):
        nll = -stats["sum_logps"] / stats["num_tokens"]
        scores[side] = M.membership_scores(nll, stats, _answer_texts(tokenizer, rows, conventions), conventions)
        if gradnorm:  # opt-in: one backward pass per row
            scores[side]["gradnorm"] = -gradient_norms(model, _tokenised(tokenizer, rows))
        if reference_model is not None:
            ref = _statistics(reference_model, tokenizer, [r["question"] for r in rows], [r["answer"] for r in rows],
                              batch_size)  # fmt: skip
            scores[side]["reference"] = M.reference_score(nll, -ref["sum_logps"] / ref["num_tokens"])
    M.add_mia_results(results, scores, privleak_attack, gold_mia_auc,
                      "an answer token of probability 0, or a model whose logits are not finite",
                      "no gold (retain-only) model's MIA AUC was given")  # fmt: skip
    if reference_model is None:
        results["missing"]["mia_reference_auc"] = "no reference model was given"
    scored = M.scored_mask(member["mask"], conventions.end_token)
    results["extraction_strength"] = M.extraction_strength(member["correct"], scored).mean().item()
    results["exact_memorization"] = M.exact_memorization(member["correct"], scored).mean().item()
    if member["token_logps"].isnan().any():  # argmax matches of NaN logits
        results["extraction_strength"] = results["exact_memorization"] = math.nan
    return move_non_finite(results, NON_FINITE)


def _check_options(gold_forget_truth_ratios, gold_mia_auc, reference_model, privleak_attack, max_new_tokens,
                   batch_size, generation_batch_size) -> None:  # fmt: skip
    """The suite's options, before any row is scored."""
    if gold_forget_truth_ratios is not None:
        numbers_array("gold_forget_truth_ratios", gold_forget_truth_ratios, allow_inf=True, minimum=0)
    check_number("gold_mia_auc", gold_mia_auc, 0, 1, high_open=True, none="no PrivLeak",
                 note="the gold model's mia_<attack>_auc from its own run")  # fmt: skip
    attacks = MIA_ATTACKS if reference_model is not None else MIA_ATTACKS[:-1]
    note = "'reference' needs reference_model" if reference_model is None else ""
    check_choice("privleak_attack", privleak_attack, attacks, note)
    check_positive_int("max_new_tokens", max_new_tokens, unit="tokens", note="ROUGE-L needs a generated answer")
    check_positive_int("batch_size", batch_size, unit="rows per forward pass")
    check_positive_int("generation_batch_size", generation_batch_size, none="batch_size", unit="questions per call")


def _check_tofu_path(path, splits) -> None:
    """`path` (None: the Hub) is a folder that holds `<split>.jsonl` for every split the suite reads."""
    if path is None:
        return
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path={show(path)} is {kind(path)}: pass the folder of TOFU's JSON Lines files "
                        "(a str or Path), or None to load locuslab/TOFU from the Hub.")  # fmt: skip
    folder = Path(path)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise FileNotFoundError(f"path={str(path)!r} {what}: pass the folder that holds TOFU's JSON Lines files "
                                f"({', '.join(s + '.jsonl' for s in splits)}), or None to load locuslab/TOFU from the "
                                "Hub.")  # fmt: skip
    absent = [f"{split}.jsonl" for split in splits if not (folder / f"{split}.jsonl").is_file()]
    if absent:
        raise FileNotFoundError(f"path={str(path)!r} lacks {absent}: download those TOFU splits (locuslab/TOFU) into "
                                "that folder, or pass None to load them from the Hub.")  # fmt: skip


def _check_strings_in(rows, name: str, fields) -> None:
    for index in range(len(rows)):
        row = rows[index]
        for field in fields:
            if field in row and not isinstance(row[field], str):
                raise TypeError(f"{name}[{index}][{field!r}]={show(row[field])} is {kind(row[field])}: "
                                f"pass the {field} as a string.")  # fmt: skip


def _check_qa_rows(rows, name: str, perturbed_required: bool = True) -> None:
    """TOFU-style rows: `question`, `answer` (strings), `perturbed_answer` (a non-empty list of strings; on every row or
    none when not `perturbed_required`) and, on every row or none, `paraphrased_answer` (a string)."""
    check_rows(rows, name, ("question", "answer", "perturbed_answer") if perturbed_required else ("question", "answer"),
               hint="TOFU's *_perturbed splits have them; hf_unlearn.synthetic.add_truth_ratio_fields adds them to "
                    "question/answer rows.")  # fmt: skip
    _check_strings_in(rows, name, ("question", "answer", "paraphrased_answer"))
    paraphrased = "paraphrased_answer" in rows[0]
    if not perturbed_required:
        for index in range(len(rows)):
            if ("perturbed_answer" in rows[index]) != ("perturbed_answer" in rows[0]):
                raise ValueError(f"{name}[{index}] and {name}[0] differ in having 'perturbed_answer': give every row "
                                 "of a split wrong answers, or none (the truth ratio is then not computed).")
        if "perturbed_answer" not in rows[0]:
            return
    for index in range(len(rows)):
        row = rows[index]
        perturbed = row["perturbed_answer"]
        if isinstance(perturbed, str) or not isinstance(perturbed, (list, tuple)):
            raise TypeError(f"{name}[{index}]['perturbed_answer']={show(perturbed)} is {kind(perturbed)}: "
                            "pass a list of wrong answers (strings), e.g. ['...', '...'].")  # fmt: skip
        if not perturbed or not all(isinstance(answer, str) for answer in perturbed):
            raise ValueError(f"{name}[{index}]['perturbed_answer']={show(perturbed)}: pass at least one wrong answer, "
                             "each a string (the truth ratio compares them with the answer).")  # fmt: skip
        if ("paraphrased_answer" in row) != paraphrased:
            raise ValueError(f"{name}[{index}] {'lacks' if paraphrased else 'has'} 'paraphrased_answer' but "
                             f"{name}[0] {'has' if paraphrased else 'lacks'} it: give every row of a split one, or "
                             "none.")  # fmt: skip
