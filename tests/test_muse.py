"""The MUSE suite (`hf_unlearn.evaluation.muse`) on the real MUSE-News files (../shared/data/muse_news): the metrics
on hand-worked examples, the loaders' counts, `evaluate_muse` on a tiny model, PrivLeak's sign, and bad input."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import torch

from hf_unlearn.evaluation import evaluate_muse, greedy_answers, load_muse, score_muse_gold
from hf_unlearn.evaluation import metrics as M
from hf_unlearn.evaluation.muse import (
    KNOWMEM_STOP,
    knowmem_template,
    membership_scores,
    text_rows,
    verbmem_references,
)
from hf_unlearn.evaluation.report import MUSE_ROWS, format_table
from hf_unlearn.synthetic import build_tiny_causal_lm, train_tokenizer

MUSE_PATH = Path(__file__).resolve().parents[2] / "shared/data/muse_news"
KEYS = ["verbmem_f", "knowmem_f", "knowmem_r", "mia_loss_auc", "mia_zlib_auc", "mia_min_k_auc",
        "mia_min_k_plus_plus_auc"]  # fmt: skip


@pytest.fixture(scope="module")
def muse_path() -> Path:
    if not MUSE_PATH.is_dir():
        pytest.skip(f"MUSE-News data absent: {MUSE_PATH} does not exist (see the project's DESIGN.md, Data).")
    return MUSE_PATH


@pytest.fixture(scope="module")
def retain_texts(muse_path):
    return [row["text"] for row in load_muse("privleak", "retain", muse_path)]


@pytest.fixture(scope="module")
def muse_tokenizer(retain_texts):
    return train_tokenizer(retain_texts[:30], vocab_size=1000)


def tiny_lm(tokenizer, seed: int = 0):
    # positions well past the tiny default: MUSE's prompts run to about 1,300 of these tokens
    return build_tiny_causal_lm(tokenizer, hidden_size=64, num_layers=2, num_heads=2, max_position_embeddings=4096,
                                seed=seed)  # fmt: skip


def train_on(tokenizer, texts, max_length: int = 64, steps: int = 60, ids=None):
    """A tiny LM trained (full batch, plain torch loop) on the first `max_length` tokens of `texts` (or on the token
    `ids` given) until it has memorised them."""
    model = tiny_lm(tokenizer)
    if ids is None:
        ids = torch.tensor([row["input_ids"] for row in text_rows(tokenizer, texts, max_length)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2
    return model


def test_rouge_l_f1_and_recall_by_hand():
    """Reference "the cat sat on the mat" (6 words), prediction "the cat lay on mat" (5 words): the longest common
    subsequence is "the cat on mat" (4 words), so recall = 4/6, precision = 4/5, F1 = 2·(4/6)(4/5)/(4/6 + 4/5) = 8/11.
    TOFU reports the recall, MUSE (VerbMem, KnowMem) the F1. Stemming makes "cats" match "cat"."""
    prediction, reference = ["the cat lay on mat"], ["the cat sat on the mat"]
    assert M.rouge_l_recall(prediction, reference) == [pytest.approx(2 / 3)]
    assert M.rouge_l_f1(prediction, reference) == [pytest.approx(8 / 11)]
    assert M.rouge_l_f1(["cats"], ["cat"]) == [pytest.approx(1.0)]
    assert M.rouge_l_f1([""], ["1472"]) == [0.0]


def test_knowmem_prompt_by_hand():
    """MUSE's KnowMem prompt: each in-context example as "Question: q\\nAnswer: a\\n\\n", then the question, ending
    in "Answer: " (with its space); braces in the examples stay text."""
    examples = [{"question": "Who won?", "answer": "Ann {Lee}"}, {"question": "When?", "answer": "1472"}]
    template = knowmem_template(examples)
    assert template.format(question="Where?") == (
        "Question: Who won?\nAnswer: Ann {Lee}\n\nQuestion: When?\nAnswer: 1472\n\nQuestion: Where?\nAnswer: "
    )
    assert knowmem_template([]).format(question="Where?") == "Question: Where?\nAnswer: "


def test_verbmem_reference_is_cut_to_the_generation_budget(muse_tokenizer):
    """The true continuation is scored on its first `max_new_tokens` tokens, as MUSE cuts it."""
    text = "the prime minister said on Tuesday that the plan would go ahead"
    ids = muse_tokenizer(text)["input_ids"]
    assert len(ids) > 5
    assert verbmem_references(muse_tokenizer, [text], 5) == [muse_tokenizer.decode(ids[:5])]
    assert verbmem_references(muse_tokenizer, [text], 1000) == [text]


def test_knowmem_answer_is_cut_before_the_next_question(muse_tokenizer):
    """A tiny LM that memorised "<prompt>1472\\n\\nQuestion: Next one" answers "1472" once KnowMem's stop strings cut
    it: ROUGE-L F1 1. Uncut, the answer "1472 Question: Next one" has 4 words (LCS 1): recall 1, precision 1/4,
    F1 = 2·1·(1/4) / (1 + 1/4) = 0.4."""
    examples = [{"question": "Who won the cup?", "answer": "Ann Lee"}]
    template = knowmem_template(examples)
    # the prompt as generation tokenises it (ending in a lone space), then the continuation
    prompt = muse_tokenizer(template.format(question="What year was it?"))["input_ids"]
    ids = torch.tensor([prompt + muse_tokenizer("1472\n\nQuestion: Next one")["input_ids"]])
    model = train_on(muse_tokenizer, None, ids=ids, steps=80)
    cut = greedy_answers(model, muse_tokenizer, ["What year was it?"], template, 20, stop=KNOWMEM_STOP)
    uncut = greedy_answers(model, muse_tokenizer, ["What year was it?"], template, 20)
    assert cut == ["1472"] and uncut[0].startswith("1472\n\nQuestion: Next one")
    assert M.rouge_l_f1(cut, ["1472"]) == [pytest.approx(1.0)]
    assert M.rouge_l_f1(["1472\n\nQuestion: Next one"], ["1472"]) == [pytest.approx(0.4)]


def test_loaders_on_the_local_copy(muse_path):
    """The counts of the local copy's README, under the Hub's split names (and MUSE's repository's `retain2`)."""
    counts = {("raw", "forget"): (889, ["text"]), ("verbmem", "forget"): (100, ["prompt", "gt"]),
              ("knowmem", "forget_qa"): (100, ["question", "answer"]), ("knowmem", "retain_qa"): (100, None),
              ("knowmem", "forget_qa_icl"): (10, None), ("knowmem", "retain_qa_icl"): (10, None),
              ("privleak", "forget"): (100, ["text"]), ("privleak", "holdout"): (100, ["text"]),
              ("privleak", "retain"): (100, ["text"])}  # fmt: skip
    for (subset, split), (count, columns) in counts.items():
        rows = load_muse(subset, split, muse_path)
        assert len(rows) == count, (subset, split)
        assert sorted(rows.column_names) == sorted(columns or ["question", "answer"]), (subset, split)
    assert load_muse("knowmem", "retain2_qa", str(muse_path))[0] == load_muse("knowmem", "retain_qa", muse_path)[0]
    assert all(isinstance(row["text"], str) and row["text"] for row in load_muse("privleak", "holdout", muse_path))
    with pytest.raises(FileNotFoundError, match=r"has no raw/retain1\.json: .*path=None to load it from the Hub "
                                                r"\(muse-bench/MUSE-News\)"):  # fmt: skip
        load_muse("raw", "retain1", muse_path)


def test_offline_hub_fails_at_once_naming_the_local_folder(muse_tokenizer):
    """conftest.py sets HF_HUB_OFFLINE=1: the Hub is refused in well under a second, with the local alternative."""
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"load_muse: dataset='muse-bench/MUSE-News' is a Hub id, not available "
                                         r"offline \(HF_HUB_OFFLINE=1\): pass path=<a folder of MUSE-News' JSON "
                                         r"files>, e.g\. load_muse\('knowmem', 'forget_qa', "):  # fmt: skip
        load_muse("knowmem", "forget_qa")
    with pytest.raises(ValueError, match=r"HF_HUB_OFFLINE=1\): pass path=.*shared/data/muse_news"):
        evaluate_muse(tiny_lm(muse_tokenizer), muse_tokenizer, limit=2)
    assert time.perf_counter() - start < 5


def test_evaluate_muse_on_a_tiny_model(muse_path, muse_tokenizer):
    """Every key in range, PrivLeak absent with the reason until the retrained model's AUC is given, and the suite's
    memorisation numbers equal to the pure functions on the same greedy outputs."""
    model = tiny_lm(muse_tokenizer)
    results = evaluate_muse(model, muse_tokenizer, muse_path, max_new_tokens=6, limit=4, max_length=128)
    for key in KEYS:
        assert 0.0 <= results[key] <= 1.0, key
    assert "privleak" not in results and set(results["missing"]) == {"privleak"}
    assert set(results["mia_roc"]) == {"loss", "zlib", "min_k", "min_k_plus_plus"}

    verbmem = list(load_muse("verbmem", "forget", muse_path))[:4]
    continuations = greedy_answers(model, muse_tokenizer, [row["prompt"] for row in verbmem], "{question}", 6)
    references = verbmem_references(muse_tokenizer, [row["gt"] for row in verbmem], 6)
    assert results["verbmem_f"] == pytest.approx(sum(M.rouge_l_f1(continuations, references)) / 4)
    qa = list(load_muse("knowmem", "retain_qa", muse_path))[:4]
    template = knowmem_template(load_muse("knowmem", "retain_qa_icl", muse_path))
    answers = greedy_answers(model, muse_tokenizer, [row["question"] for row in qa], template, 6, stop=KNOWMEM_STOP)
    assert results["knowmem_r"] == pytest.approx(sum(M.rouge_l_f1(answers, [row["answer"] for row in qa])) / 4)
    forget = [row["text"] for row in load_muse("privleak", "forget", muse_path)][:4]
    holdout = [row["text"] for row in load_muse("privleak", "holdout", muse_path)][:4]
    scores = [membership_scores(model, muse_tokenizer, texts, max_length=128) for texts in (forget, holdout)]
    assert results["mia_min_k_auc"] == M.mia_auc(scores[0]["min_k"], scores[1]["min_k"])

    table = format_table({"model": results}, MUSE_ROWS)
    assert "verbmem_f" in table and "n/a: privleak (model): no gold (retrained" in table


def test_privleak_is_negative_for_a_model_trained_on_the_forget_texts(muse_path, muse_tokenizer, retain_texts):
    """A tiny LM trained on the 4 forget texts (their first 64 tokens) ranks every one of them above the 4 holdout
    texts: Min-K% AUC 1 (members positive). The retrained stand-in, trained as long on 4 retain texts, has some
    R < 1 (0.5625 here). MUSE's PrivLeak = ((1 − 1) − (1 − R)) / (1 − R) × 100 = −100 for any such R: under-unlearned
    (the old members-positive form (1 − R) / R × 100 was positive). The retrained model against itself: 0."""
    forget = [row["text"] for row in load_muse("privleak", "forget", muse_path)][:4]
    options = {"limit": 4, "max_new_tokens": 2, "max_length": 64}
    gold = evaluate_muse(train_on(muse_tokenizer, retain_texts[:4]), muse_tokenizer, muse_path, **options)
    gold_arguments = score_muse_gold(gold)
    assert gold["mia_min_k_auc"] < 1 and gold_arguments == {"gold_auc": gold["mia_min_k_auc"]}
    assert gold["privleak"] == 0.0 and "privleak" not in gold["missing"]
    trained = train_on(muse_tokenizer, forget)
    target = evaluate_muse(trained, muse_tokenizer, muse_path, **gold_arguments, **options)
    assert target["mia_min_k_auc"] == 1.0 and target["mia_min_k_plus_plus_auc"] == 1.0
    assert target["privleak"] == pytest.approx(-100.0)
    # the same AUCs under Min-K%++: PrivLeak follows the attack chosen
    plus = evaluate_muse(trained, muse_tokenizer, muse_path, gold_auc=0.5,
                         privleak_attack="min_k_plus_plus", **options)  # fmt: skip
    assert plus["privleak"] == pytest.approx(M.privleak(plus["mia_min_k_plus_plus_auc"], 0.5))
    assert plus["privleak"] < 0


def test_gradnorm_attack_on_muse_texts(muse_path, muse_tokenizer):
    """`gradnorm=True` adds GradNorm (score: −the mean per-tensor gradient 2-norm of a text's mean NLL) on the forget
    vs holdout PrivLeak texts: equal to the AUC of `gradient_norms` on the same token rows, near 1 for a model that
    memorised the forget texts, and with its ROC; off by default."""
    from hf_unlearn.evaluation.probability import gradient_norms

    texts = {side: [row["text"] for row in load_muse("privleak", side, muse_path)][:4]
             for side in ("forget", "holdout")}  # fmt: skip
    trained = train_on(muse_tokenizer, texts["forget"])
    options = {"limit": 4, "max_new_tokens": 2, "max_length": 64}
    results = evaluate_muse(trained, muse_tokenizer, muse_path, gradnorm=True, **options)
    norms = {side: gradient_norms(trained, text_rows(muse_tokenizer, texts[side], 64)) for side in texts}
    assert results["mia_gradnorm_auc"] == M.mia_auc(-norms["forget"], -norms["holdout"]) >= 0.75
    assert "gradnorm" in results["mia_roc"]
    assert "mia_gradnorm_auc" not in evaluate_muse(trained, muse_tokenizer, muse_path, **options)


def test_score_muse_gold_without_a_usable_auc():
    gold = {"mia_min_k_auc": 1.0, "missing": {}}
    assert score_muse_gold(gold) == {"gold_auc": None}
    assert gold["missing"]["privleak"] == "the gold model's mia_min_k_auc is 1.0, and PrivLeak divides by 1 − it"
    gold = {"missing": {"mia_min_k_auc": "came out nan"}}
    assert score_muse_gold(gold) == {"gold_auc": None} and "missing (came out nan)" in gold["missing"]["privleak"]


NAN = math.nan


@pytest.mark.parametrize("call,error,message", [
    pytest.param(lambda p, m, t: load_muse("books", "forget", p), ValueError,
                 r"subset='books': use raw, verbmem, knowmem, privleak, scal or sust; the subsets of MUSE-News",
                 id="unknown-subset"),
    pytest.param(lambda p, m, t: load_muse("verbmem", "retain_qa", p), ValueError,
                 r"split='retain_qa': use forget; the splits of MUSE-News' verbmem subset", id="unknown-split"),
    pytest.param(lambda p, m, t: load_muse("knowmem", "forget_qa", "/no/such/muse"), FileNotFoundError,
                 r"path='/no/such/muse' does not exist: pass the folder that holds MUSE-News' subsets",
                 id="path-missing"),
    pytest.param(lambda p, m, t: load_muse("knowmem", "forget_qa", p / "README.md"), FileNotFoundError,
                 r"README\.md' is a file, not a folder", id="path-is-a-file"),
    pytest.param(lambda p, m, t: load_muse("knowmem", "forget_qa", 3), TypeError,
                 r"path=3 is an int: pass the folder of MUSE-News' JSON files", id="path-not-a-path"),
    pytest.param(lambda p, m, t: evaluate_muse(m, t, p, gold_auc=1.0), ValueError,
                 r"gold_auc=1 is not in \[0, 1\): pass None \(no PrivLeak\) or a number in \[0, 1\)",
                 id="gold-auc-one"),
    pytest.param(lambda p, m, t: evaluate_muse(m, t, p, gold_auc=NAN), ValueError,
                 r"gold_auc=nan is not a finite number", id="gold-auc-nan"),
    pytest.param(lambda p, m, t: evaluate_muse(m, t, p, privleak_attack="reference"), ValueError,
                 r"privleak_attack='reference': use loss, zlib, min_k or min_k_plus_plus", id="unknown-attack"),
    pytest.param(lambda p, m, t: evaluate_muse(m, t, p, max_new_tokens=0), ValueError,
                 r"max_new_tokens=0: pass None \(MUSE's: 128 for VerbMem, 32 for KnowMem\)", id="max-new-tokens-0"),
    pytest.param(lambda p, m, t: evaluate_muse(m, t, p, limit=0), ValueError,
                 r"limit=0: pass None \(every row\) or a whole number of rows >= 1; 0 would score no row",
                 id="limit-0"),
    pytest.param(lambda p, m, t: evaluate_muse(m, t, p, batch_size="8"), TypeError, r"batch_size='8' is a str",
                 id="batch-size-str"),
    pytest.param(lambda p, m, t: evaluate_muse(m, t, p, max_length=1), ValueError,
                 r"max_length=1: pass a whole number of tokens >= 2; a membership score needs two tokens",
                 id="max-length-1"),
    pytest.param(lambda p, m, t: evaluate_muse(t, m, p), TypeError, r"model is a \w+: pass a "
                 r"causal language model", id="arguments-swapped"),
    pytest.param(lambda p, m, t: evaluate_muse(m, t, p / "verbmem"), FileNotFoundError,
                 r"verbmem' lacks \['verbmem/forget\.json', 'knowmem/forget_qa\.json', .*'privleak/holdout\.json'\]: "
                 r"put those MUSE-News files there", id="path-lacks-files"),
    pytest.param(lambda p, m, t: greedy_answers(m, t, ["q"], stop=["\n", ""]), ValueError,
                 r"stop=\['\\n', ''\] holds an empty string", id="empty-stop-string"),
    pytest.param(lambda p, m, t: greedy_answers(m, t, ["q"], stop="\n"), TypeError,
                 r"stop is one string \('\\n'\), not a list of stop strings", id="stop-one-string"),
])  # fmt: skip
def test_bad_arguments_are_refused_before_the_model_runs(muse_path, muse_tokenizer, call, error, message):
    model = tiny_lm(muse_tokenizer)
    with pytest.raises(error, match=message):
        call(muse_path, model, muse_tokenizer)


def test_bad_files_are_named(tmp_path):
    (tmp_path / "knowmem").mkdir()
    (tmp_path / "knowmem" / "forget_qa.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"forget_qa\.json is not valid JSON .*: restore MUSE-News' file"):
        load_muse("knowmem", "forget_qa", tmp_path)
    (tmp_path / "knowmem" / "forget_qa.json").write_text('["a text", {"question": "q", "answer": "a"}]')
    with pytest.raises(ValueError, match=r"item 1 is a dict but item 0 is a str: every item must be a text"):
        load_muse("knowmem", "forget_qa", tmp_path)
    (tmp_path / "knowmem" / "forget_qa.json").write_text("[]")
    with pytest.raises(ValueError, match=r"holds a list \(empty\): MUSE's files are one JSON array"):
        load_muse("knowmem", "forget_qa", tmp_path)


def test_muse_rouge_module_matches_the_pure_function():
    import evaluate

    import hf_unlearn

    module = evaluate.load(str(Path(hf_unlearn.__file__).parent / "metrics" / "muse_rouge"))
    predictions, references = ["the cat lay on mat", "1472"], ["the cat sat on the mat", "1472"]
    result = module.compute(predictions=predictions, references=references)
    assert result == {"rouge_l_f1": sum(M.rouge_l_f1(predictions, references)) / 2}
    assert result["rouge_l_f1"] == pytest.approx((8 / 11 + 1) / 2)


def test_a_nan_model_reports_missing_numbers_never_nan(muse_path, muse_tokenizer):
    """Logits of NaN: the MIA numbers, PrivLeak and the greedy outputs' scores (argmaxes of NaN) all go to `missing`
    with the reason."""
    model = tiny_lm(muse_tokenizer)
    with torch.no_grad():
        model.get_output_embeddings().weight.fill_(math.nan)
    results = evaluate_muse(model, muse_tokenizer, muse_path, gold_auc=0.5, max_new_tokens=2, limit=2, max_length=32)
    for key in [*KEYS, "privleak"]:
        assert key not in results and "nan" in results["missing"][key].lower(), key


def test_eval_cli_muse_suite_with_gold(muse_path, muse_tokenizer, tmp_path, capsys):
    """`hf-unlearn eval --suite muse --muse-path DIR --gold-model G`: the MUSE table with the model and gold columns,
    the gold model's PrivLeak 0 by construction and the model's scored against it."""
    from hf_unlearn.cli import main

    for name, seed in (("model", 0), ("gold", 1)):
        tiny_lm(muse_tokenizer, seed).save_pretrained(tmp_path / name)
        muse_tokenizer.save_pretrained(tmp_path / name)
    out = tmp_path / "muse.json"
    assert main(["eval", "--suite", "muse", "--model", str(tmp_path / "model"), "--gold-model", str(tmp_path / "gold"),
                 "--muse-path", str(muse_path), "--limit", "3", "--max-new-tokens", "4", "--quiet",
                 "--output", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("metric"))  # after DeepSpeed's own note
    assert header.split()[:3] == ["metric", "model", "gold"]
    assert "verbmem_f" in printed and "knowmem_r" in printed and "privleak" in printed
    results = json.loads(out.read_text())
    assert {"verbmem_f", "knowmem_f", "knowmem_r", "mia_min_k_auc", "privleak"} <= set(results)
