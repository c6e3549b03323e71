"""The MUSE suite (Shi et al. 2025, "MUSE: Machine Unlearning Six-Way Evaluation for Language Models", arXiv
2407.06460) on MUSE-News as one function: VerbMem on D_f, KnowMem on D_f and D_r, and PrivLeak.

The settings are those of MUSE's code (github.com/swj0419/muse_bench, `eval.py`) and of open-unlearning's
`configs/eval/muse_metrics`:
- VerbMem (C1): the greedy continuation (128 new tokens) of each `verbmem/forget` prompt; ROUGE-L F1 against `gt` cut to
  its first 128 tokens, as MUSE cuts it;
- KnowMem (C2 on D_f, C4 on D_r): the greedy answer (32 new tokens) to `Question: {q}\\nAnswer: ` after MUSE's
  in-context examples (`*_qa_icl`, each `Question: {q}\\nAnswer: {a}\\n\\n`), cut at `\\n\\n`, `\\nQuestion` or
  `Question:`; ROUGE-L F1 against the answer;
- PrivLeak (C3): Min-K% Prob (k = 40%) over the tokens of each `privleak` text (its first 2,048 tokens, the last
  left out, as open-unlearning), ROC AUC of forget vs holdout texts, relative to the retrained model's AUC in MUSE's
  form and sign (`metrics.privleak`: 0 ideal, < 0 under-unlearned, > 0 over-unlearned).
ROUGE-L stems words (Porter), as open-unlearning does (MUSE's own code does not). Scores are in [0, 1]; MUSE's paper
prints them × 100. The `mia_*_auc` keys keep the membership-inference orientation (forget positive, 0.5 = chance).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..data import lm_row
from . import metrics as M
from .checks import check_choice, check_int, check_number, check_positive_int, kind, move_non_finite, show
from .generation import greedy_answers
from .probability import gradient_norms, token_statistics

MUSE_HUB_ID = "muse-bench/MUSE-News"
# subset -> its splits, as the Hub names them
MUSE_SPLITS = {
    "raw": ("forget", "retain1", "retain2", "holdout"),
    "verbmem": ("forget",),
    "knowmem": ("forget_qa", "retain_qa", "forget_qa_icl", "retain_qa_icl"),
    "privleak": ("forget", "retain", "holdout"),
    "scal": ("forget_1", "forget_2", "forget_3", "forget_4"),
    "sust": ("forget_1", "forget_2", "forget_3", "forget_4"),
}
# MUSE's repository (and the local copy taken from it) names the retain side's files `retain2`
LOCAL_NAMES = {("knowmem", "retain_qa"): "retain2_qa", ("knowmem", "retain_qa_icl"): "retain2_qa_icl",
               ("privleak", "retain"): "retain2"}  # fmt: skip
VERBMEM_MAX_NEW_TOKENS = 128
KNOWMEM_MAX_NEW_TOKENS = 32
KNOWMEM_STOP = ("\n\n", "\nQuestion", "Question:")
MAX_LENGTH = 2048
PRIVLEAK_ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus")
# (subset, split) the suite reads; the in-context examples are read whole, the rest cut by `limit`
SUITE_SPLITS = (("verbmem", "forget"), ("knowmem", "forget_qa"), ("knowmem", "forget_qa_icl"),
                ("knowmem", "retain_qa"), ("knowmem", "retain_qa_icl"), ("privleak", "forget"),
                ("privleak", "holdout"))  # fmt: skip
NON_FINITE = "the model's log-probabilities are not finite: its weights or logits hold NaN or inf"
LOCAL_EXAMPLE = "path='../shared/data/muse_news'"


def load_muse(subset: str, split: str, path: str | os.PathLike | None = None):
    """One MUSE-News split as a `datasets.Dataset`: `text` rows (`raw`, `privleak`, `scal`, `sust`), `prompt`/`gt`
    (`verbmem`) or `question`/`answer` (`knowmem`).

    With `path`, read `<path>/<subset>/<split>.json` (MUSE's JSON files: one array of strings or of objects; the
    retain side may be named `retain2` as in MUSE's repository); otherwise
    `datasets.load_dataset("muse-bench/MUSE-News", subset, split=split)`, failing at once when the Hub cannot be
    reached. `split` takes the Hub's names (`retain_qa`; `retain2_qa` is accepted too).
    """
    import datasets

    split = _split_name(subset, split)
    if path is None:
        from ..sources import check_hub_reachable

        local = (f"path=<a folder of MUSE-News' JSON files>, e.g. load_muse({subset!r}, {split!r}, "
                 f"{LOCAL_EXAMPLE})")  # fmt: skip
        check_hub_reachable(MUSE_HUB_ID, "load_muse: dataset", local)
        return datasets.load_dataset(MUSE_HUB_ID, subset, split=split)
    folder = _check_folder(path)
    file = _local_file(folder, subset, split)
    if file is None:
        tried = " or ".join(f"{subset}/{name}.json" for name in _file_names(subset, split))
        raise FileNotFoundError(f"path={str(path)!r} has no {tried}: put MUSE-News' {subset}/{split} file there, or "
                                f"pass path=None to load it from the Hub ({MUSE_HUB_ID}).")  # fmt: skip
    return datasets.Dataset.from_list(_read_rows(file))


def _split_name(subset, split) -> str:
    check_choice("subset", subset, tuple(MUSE_SPLITS), "the subsets of MUSE-News")
    aliases = {local: hub for (sub, hub), local in LOCAL_NAMES.items() if sub == subset}
    split = aliases.get(split, split) if isinstance(split, str) else split
    check_choice("split", split, MUSE_SPLITS[subset], f"the splits of MUSE-News' {subset} subset")
    return split


def _file_names(subset: str, split: str) -> list[str]:
    return [split] + ([LOCAL_NAMES[subset, split]] if (subset, split) in LOCAL_NAMES else [])


def _local_file(folder: Path, subset: str, split: str) -> Path | None:
    return next((folder / subset / f"{name}.json" for name in _file_names(subset, split)
                 if (folder / subset / f"{name}.json").is_file()), None)  # fmt: skip


def _check_folder(path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path={show(path)} is {kind(path)}: pass the folder of MUSE-News' JSON files (a str or "
                        f"Path), or None to load {MUSE_HUB_ID} from the Hub.")  # fmt: skip
    folder = Path(path)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise FileNotFoundError(f"path={str(path)!r} {what}: pass the folder that holds MUSE-News' subsets "
                                f"(verbmem/, knowmem/, privleak/, ...), e.g. {LOCAL_EXAMPLE}, or None to load "
                                f"{MUSE_HUB_ID} from the Hub.")  # fmt: skip
    return folder


def _read_rows(file: Path) -> list[dict]:
    """MUSE's JSON file as rows: an array of strings becomes `text` rows; an array of objects is kept."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{file} is not valid JSON ({error}): restore MUSE-News' file.") from None
    if not isinstance(data, list) or not data:
        raise ValueError(f"{file} holds {kind(data)}{' (empty)' if data == [] else ''}: MUSE's files are one JSON "
                         "array of texts or of objects, with at least one item.")  # fmt: skip
    if all(isinstance(item, str) for item in data):
        return [{"text": item} for item in data]
    if all(isinstance(item, dict) for item in data):
        return data
    bad = next(i for i, item in enumerate(data) if not isinstance(item, type(data[0])) or
               not isinstance(item, (str, dict)))  # fmt: skip
    raise ValueError(f"{file} item {bad} is {kind(data[bad])} but item 0 is {kind(data[0])}: every item must be a "
                     "text (string) or every item an object.")  # fmt: skip


def knowmem_template(examples) -> str:
    """MUSE's KnowMem prompt as a `greedy_answers` template: each in-context example as `Question: {q}\\nAnswer:
    {a}\\n\\n`, then `Question: {question}\\nAnswer: `. Braces in the examples are escaped (they are text)."""
    shots = "".join(f"Question: {row['question']}\nAnswer: {row['answer']}\n\n" for row in examples)
    return shots.replace("{", "{{").replace("}", "}}") + "Question: {question}\nAnswer: "


def verbmem_references(tokenizer, texts, max_new_tokens: int) -> list[str]:
    """Each true continuation cut to its first `max_new_tokens` tokens (special tokens counted, as MUSE counts them),
    so that a model is scored on what it could generate."""
    ids = tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    return tokenizer.batch_decode([row[:max_new_tokens] for row in ids], skip_special_tokens=True)


def text_rows(tokenizer, texts, max_length: int = MAX_LENGTH) -> list[dict]:
    """Raw texts as rows `token_statistics` scores whole: every token is a label (position t predicts t+1, so all
    tokens after the first are scored), the first `max_length` tokens kept."""
    rows = []
    for index, ids in enumerate(tokenizer(list(texts), add_special_tokens=True)["input_ids"]):
        ids = list(ids[:max_length])
        if len(ids) < 2:
            raise ValueError(f"text {index} ({show(texts[index], 40)}) has {len(ids)} token(s): a membership score "
                             "needs at least two (one to predict from, one to score); drop it.")  # fmt: skip
        rows.append(lm_row(ids))
    return rows


def membership_scores(model, tokenizer, texts, batch_size: int = 8, max_length: int = MAX_LENGTH,
                      conventions: M.Conventions | str = "leaderboard") -> dict:  # fmt: skip
    """Per text, the membership scores MUSE's PrivLeak can use (higher = more member-like): `loss` (−mean NLL),
    `zlib` (−NLL / zlib length), `min_k` (Min-40% Prob) and `min_k_plus_plus` (Min-40%++), over its tokens as
    `conventions` count them (`metrics.Conventions`; the leaderboards' leave each text's last token out)."""
    conventions = M.conventions(conventions)
    rows = text_rows(tokenizer, texts, max_length)
    stats = token_statistics(model, rows, batch_size, tokenizer.pad_token_id or 0, min_k_plus_plus=True)
    nll = -stats["sum_logps"] / stats["num_tokens"]
    scored = (list(texts) if conventions.zlib_text == "raw"
              else tokenizer.batch_decode([row["input_ids"] for row in rows], skip_special_tokens=True))  # fmt: skip
    return M.membership_scores(nll, stats, scored, conventions)


def evaluate_muse(
    model,
    tokenizer,
    path: str | os.PathLike | None = None,
    gold_auc: float | None = None,
    privleak_attack: str = "min_k",
    max_new_tokens: int | None = None,
    batch_size: int = 8,
    limit: int | None = None,
    generation_batch_size: int | None = None,
    max_length: int = MAX_LENGTH,
    conventions: M.Conventions | str = "leaderboard",
    gradnorm: bool = False,
) -> dict:
    """Every MUSE-News number for `model`, as a flat dict: `verbmem_f`, `knowmem_f`, `knowmem_r` (ROUGE-L F1 in
    [0, 1]), `mia_{loss,zlib,min_k,min_k_plus_plus}_auc` (forget vs holdout `privleak` texts, forget positive),
    `mia_roc`, and `privleak` when `gold_auc` is given; `missing` says why a number is absent.

    `path`: the folder of MUSE-News' JSON files (e.g. `../shared/data/muse_news`), or None for the Hub.
    `gold_auc`: the retrained (retain-only) model's `mia_<privleak_attack>_auc` from its own `evaluate_muse` run
    (`score_muse_gold` reads it); `privleak_attack`: the score PrivLeak uses, MUSE's Min-K% Prob by default.
    `max_new_tokens`: None for MUSE's budgets (128 for VerbMem, 32 for KnowMem), or one cap for both (quick checks).
    `limit`: the first rows of each split (quick checks; MUSE's numbers use every row). `batch_size` texts are scored
    per forward pass, `generation_batch_size` (default `batch_size`) prompts continued per `generate` call;
    `max_length`: tokens of each PrivLeak text scored; `conventions`: how Min-K, Min-K++ and ZLib count tokens
    (`metrics.Conventions`: the leaderboards' by default, `"hf-unlearn"` for ours). `gradnorm=True` adds the GradNorm
    attack (`mia_gradnorm_auc`: one backward pass per forget and holdout text, each its first `max_length` tokens).

    Every argument is checked, and every file read, before the model runs.
    """
    if not callable(getattr(model, "generate", None)):
        raise TypeError(f"model is {kind(model)}: pass a causal language model (one with .generate), e.g. "
                        "AutoModelForCausalLM.from_pretrained(...).")  # fmt: skip
    if not callable(tokenizer) or not hasattr(tokenizer, "batch_decode"):
        raise TypeError(f"tokenizer is {kind(tokenizer)}: pass the model's tokenizer (AutoTokenizer.from_pretrained).")
    check_number("gold_auc", gold_auc, 0, 1, high_open=True, none="no PrivLeak",
                 note="the retrained model's mia_<attack>_auc from its own evaluate_muse run")  # fmt: skip
    check_choice("privleak_attack", privleak_attack, PRIVLEAK_ATTACKS)
    check_positive_int("max_new_tokens", max_new_tokens, none="MUSE's: 128 for VerbMem, 32 for KnowMem",
                       unit="tokens")  # fmt: skip
    check_positive_int("batch_size", batch_size, unit="texts per forward pass")
    check_positive_int("limit", limit, none="every row", unit="rows",
                       note="0 would score no row" if limit == 0 else "a negative limit would drop the last rows")
    check_positive_int("generation_batch_size", generation_batch_size, none="batch_size", unit="prompts per call")
    check_int("max_length", max_length, 2, unit="tokens", note="a membership score needs two tokens")
    conventions = M.conventions(conventions)
    if path is not None:
        folder = _check_folder(path)
        absent = [f"{subset}/{_file_names(subset, split)[-1]}.json" for subset, split in SUITE_SPLITS
                  if _local_file(folder, subset, split) is None]  # fmt: skip
        if absent:
            raise FileNotFoundError(f"path={str(path)!r} lacks {absent}: put those MUSE-News files there, or pass "
                                    f"None to load them from the Hub ({MUSE_HUB_ID}).")  # fmt: skip

    def rows_of(subset, split, whole=False):
        data = [dict(row) for row in load_muse(subset, split, path)]
        return data if whole or limit is None else data[:limit]

    verbmem = rows_of("verbmem", "forget")
    knowmem = {key: (rows_of("knowmem", split), rows_of("knowmem", f"{split}_icl", whole=True))
               for key, split in (("knowmem_f", "forget_qa"), ("knowmem_r", "retain_qa"))}  # fmt: skip
    texts = {side: [row["text"] for row in rows_of("privleak", side)] for side in ("forget", "holdout")}
    generation_batch_size = generation_batch_size or batch_size

    results: dict = {"missing": {}}
    budget = max_new_tokens or VERBMEM_MAX_NEW_TOKENS
    continuations = greedy_answers(model, tokenizer, [row["prompt"] for row in verbmem], "{question}", budget,
                                   generation_batch_size)  # fmt: skip
    references = verbmem_references(tokenizer, [row["gt"] for row in verbmem], budget)
    results["verbmem_f"] = _mean(M.rouge_l_f1(continuations, references))
    for key, (qa, examples) in knowmem.items():
        answers = greedy_answers(model, tokenizer, [row["question"] for row in qa], knowmem_template(examples),
                                 max_new_tokens or KNOWMEM_MAX_NEW_TOKENS, generation_batch_size, KNOWMEM_STOP)
        results[key] = _mean(M.rouge_l_f1(answers, [row["answer"] for row in qa]))

    scores = {side: membership_scores(model, tokenizer, texts[side], batch_size, max_length, conventions)
              for side in texts}
    if gradnorm:  # opt-in: one backward pass per text
        for side in texts:
            scores[side]["gradnorm"] = -gradient_norms(model, text_rows(tokenizer, texts[side], max_length))
    M.add_mia_results(results, scores, privleak_attack, gold_auc, f"a token of probability 0, or {NON_FINITE}",
                      "no gold (retrained, retain-only) model's MIA AUC was given (gold_auc)")  # fmt: skip
    if any(score.isnan().any() for side in scores.values() for score in side.values()):
        # NaN logits: the greedy tokens were argmaxes of NaN, not continuations
        results["verbmem_f"] = results["knowmem_f"] = results["knowmem_r"] = math.nan
    return move_non_finite(results, NON_FINITE)


def score_muse_gold(gold: dict, privleak_attack: str = "min_k") -> dict:
    """Complete the retrained (gold) model's own `evaluate_muse` results — PrivLeak 0 by construction — and return
    the argument that scores other models against it (`{"gold_auc": ...}`, None where it cannot serve)."""
    check_choice("privleak_attack", privleak_attack, PRIVLEAK_ATTACKS)
    auc = gold.get(f"mia_{privleak_attack}_auc")
    if auc is None or not auc < 1:  # PrivLeak divides by 1 − it (MUSE's orientation)
        why = (f"missing ({gold['missing'].get(f'mia_{privleak_attack}_auc', 'not computed')})" if auc is None
               else f"{auc}, and PrivLeak divides by 1 − it")  # fmt: skip
        gold["missing"]["privleak"] = f"the gold model's mia_{privleak_attack}_auc is {why}"
        return {"gold_auc": None}
    gold["privleak"] = M.privleak(auc, auc)
    gold["missing"].pop("privleak", None)
    return {"gold_auc": auc}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)
