"""Unlearning on raw text (`text` rows with no label, for a causal LM): the windowing by hand, bad rows, GradDiff and
NPO on text windows, and `hf-unlearn run` with `data: {source: muse}` on the real MUSE-News files."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
from conftest import training_args
from test_muse import muse_path  # noqa: F401 (the fixture: skips when ../shared/data/muse_news is absent)

import hf_unlearn
from hf_unlearn.data import check_rows_fit_model, prepare_dataset, row_format
from hf_unlearn.evaluation import answer_nll
from hf_unlearn.fingerprint import example_hashes
from hf_unlearn.pipeline import check_run_config, finetune, run
from hf_unlearn.synthetic import build_tiny_causal_lm, make_fictitious_qa, train_tokenizer


@pytest.fixture(scope="module")
def texts():
    """One paragraph of facts per fictitious person: 2 people to forget, 8 to keep."""
    rows = make_fictitious_qa(num_people=10, facts_per_person=4, seed=0)
    people = sorted({row["person"] for row in rows})
    paragraphs = [" ".join(row["answer"] for row in rows if row["person"] == person) for person in people]
    return paragraphs[:2], paragraphs[2:]


@pytest.fixture(scope="module")
def text_tokenizer(texts):
    forget, retain = texts
    return train_tokenizer(forget + retain, vocab_size=500)


@pytest.fixture(scope="module")
def memorised_text_state(texts, text_tokenizer, tmp_path_factory):
    """A tiny LM fine-tuned on the forget + retain paragraphs (`pipeline.finetune` on raw text rows) until it has
    memorised them."""
    forget, retain = texts
    model = build_tiny_causal_lm(text_tokenizer, hidden_size=64, num_layers=2, num_heads=2, seed=0)
    rows = [{"text": text} for text in forget + retain]
    finetune(model, text_tokenizer, rows, tmp_path_factory.mktemp("finetune"), num_train_epochs=150,
             learning_rate=5e-3, per_device_train_batch_size=10, use_cpu=True)  # fmt: skip
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_a_text_becomes_windows_of_max_length_tokens_every_token_scored():
    """`cat` then ` cat` nine times is 10 tokens (the byte-level BPE learnt both), and the tokenizer adds no BOS, so
    with EOS appended the row is 11 tokens: [c, Ġc, Ġc, ..., Ġc, EOS]. At max_length 4 the windows are tokens 0-3, 4-7
    and 8-10 (3 tokens, kept); at max_length 5 they are 0-4 and 5-9, and the last window (token 10, EOS alone) is
    dropped: one token has nothing to be scored against. Every window's labels are its input_ids."""
    tokenizer = train_tokenizer(["cat " * 50], vocab_size=300)
    text = "cat" + " cat" * 9
    cat, space_cat = tokenizer.convert_tokens_to_ids(["cat", "Ġcat"])
    assert tokenizer(text)["input_ids"] == [cat] + [space_cat] * 9
    ids = [cat] + [space_cat] * 9 + [tokenizer.eos_token_id]

    rows = prepare_dataset([{"text": text}], "forget_dataset", tokenizer, "{question}", 4)
    assert [row["input_ids"] for row in rows] == [ids[0:4], ids[4:8], ids[8:11]]
    assert all(row["labels"] == row["input_ids"] and row["attention_mask"] == [1] * len(row["input_ids"])
               for row in rows)  # fmt: skip
    rows = prepare_dataset([{"text": text}, {"text": "cat cat"}], "forget_dataset", tokenizer, "{question}", 5)
    assert [row["input_ids"] for row in rows] == [ids[0:5], ids[5:10], [cat, space_cat, tokenizer.eos_token_id]]


def test_row_formats_text_alone_is_raw_text_text_with_a_label_is_classification():
    assert row_format([{"text": "a"}], "forget_dataset") == "corpus"
    assert row_format([{"text": "a", "label": 1}], "forget_dataset") == "text"
    assert row_format([{"sentence": "a", "label": 1}], "forget_dataset") == "text"
    with pytest.raises(ValueError, match=r"'text' alone \(raw text for a causal LM\)"):
        row_format([{"sentence": "a"}], "forget_dataset")


@pytest.mark.parametrize(("text", "found"), [("", "has an empty text"), ("   ", "has an empty text"),
                                             (None, "has text=None (NoneType)"), (5, "has text=5 (int)")])  # fmt: skip
def test_a_bad_raw_text_row_is_named_before_training(text, found, tmp_path, text_tokenizer):
    model = build_tiny_causal_lm(text_tokenizer, hidden_size=32, num_layers=1, num_heads=2)
    config = hf_unlearn.GAConfig(**training_args(tmp_path))
    with pytest.raises(ValueError, match=rf"forget_dataset row 1 {re.escape(found)}.*drop or fix that row") as caught:
        hf_unlearn.GATrainer(model=model, args=config, forget_dataset=[{"text": "a fine text"}, {"text": text}],
                             processing_class=text_tokenizer)  # fmt: skip
    assert "must be a non-empty string" in str(caught.value)


def test_a_text_of_one_token_and_raw_text_for_a_classifier_are_refused(text_tokenizer):
    no_eos = type("NoEos", (), {"eos_token_id": None, "__call__": lambda self, texts, **kw: {"input_ids": [[7]]}})()
    with pytest.raises(ValueError, match=r"retain_dataset row 0 has 1 token\(s\): a text needs at least two"):
        prepare_dataset([{"text": "x"}], "retain_dataset", no_eos, "{question}", 8)
    rows = prepare_dataset([{"text": "a fine text"}], "forget_dataset", text_tokenizer, "{question}", 8)
    classifier = type("TinyForSequenceClassification", (), {"config": SimpleNamespace(num_labels=2)})()
    with pytest.raises(ValueError, match=r"a label per token but TinyForSequenceClassification takes one class per "
                                         r"row: give each text an integer 'label' column"):  # fmt: skip
        check_rows_fit_model(rows, "forget_dataset", classifier)


@pytest.mark.parametrize("name", ["grad_diff", "npo", "undial", "wga", "ce_u"])
def test_method_unlearns_raw_text_windows(name, tmp_path, texts, text_tokenizer, memorised_text_state):
    """Methods at their defaults on paragraphs cut into 24-token windows (each paragraph gives several rows): forget
    NLL rises, retain NLL is held; the card's fingerprint counts the texts as given, not the windows. Every token is
    scored here, the template the paragraphs share ("X was born in ...") too, unlike the masked prompts of
    test_methods.py, so retain moves more: measured at seed 0, GradDiff retain under a quarter of its forget rise, NPO
    forget +1.45 / retain +0.61; the bound is half the forget rise. At these settings SimNPO (-0.11), SatImp (+0.10)
    and RMU (-0.07, steering layer 1, all weights) move forget NLL too little to be rows here."""
    forget, retain = ([{"text": text} for text in side] for side in texts)
    model = build_tiny_causal_lm(text_tokenizer, hidden_size=64, num_layers=2, num_heads=2, seed=0)
    model.load_state_dict(memorised_text_state)
    config_cls, trainer_cls = hf_unlearn.METHODS[name]
    config = config_cls(**training_args(tmp_path, learning_rate=1e-3, num_train_epochs=5, max_length=24))
    trainer = trainer_cls(model=model, args=config, forget_dataset=forget, retain_dataset=retain,
                          processing_class=text_tokenizer)  # fmt: skip
    forget_rows = trainer.forget_dataset
    assert len(forget_rows) > len(forget) and max(len(row["input_ids"]) for row in forget_rows) == 24
    retain_rows = prepare_dataset(retain, "retain", text_tokenizer, config.prompt_template, 24)
    forget_before, retain_before = answer_nll(model, forget_rows).mean(), answer_nll(model, retain_rows).mean()
    assert forget_before < 1.0  # memorised (windows cut the context a token is predicted from)
    trainer.train()

    forget_rise = answer_nll(model, forget_rows).mean() - forget_before
    retain_rise = answer_nll(model, retain_rows).mean() - retain_before
    assert forget_rise > 0.3, f"forget NLL rose only {forget_rise:.3f}"
    assert retain_rise < 0.5 * forget_rise, f"retain NLL rose {retain_rise:.3f} vs forget {forget_rise:.3f}"
    fingerprint = trainer.unlearning_manifest()["requests"][0]["fingerprint"]
    assert fingerprint["num_examples"] == len(forget) and trainer._forget_hashes == example_hashes(forget)


def muse_config(path, tmp_path, **data) -> dict:
    return {
        "method": "npo", "model": None, "output_dir": str(tmp_path / "out"),
        "data": {"source": "muse", "path": str(path), "retain": "privleak/retain2", "limit": 2, **data},
        "finetune": {"max_steps": 2, "per_device_train_batch_size": 4, "use_cpu": True},
        "unlearn": {"max_steps": 2, "per_device_train_batch_size": 2, "use_cpu": True},
        "evaluate": {"limit": 2, "max_new_tokens": 4},
    }  # fmt: skip


def test_run_on_muse_news_fine_tunes_unlearns_and_scores_the_muse_suite(muse_path, tmp_path, monkeypatch):  # noqa: F811
    """`hf-unlearn run` with `data: {source: muse}`: the first 2 forget articles and 2 retain texts, the MUSE suite
    for the original, gold and unlearned models on the first 2 rows of each split (`evaluate: {limit: 2}`; its table
    printed, eval_results.json written), the card naming the dataset and holding none of its text; the fine-tune and
    the gold model cut the texts into windows of the run's `unlearn.max_length`."""
    import hf_unlearn.evaluation as evaluation
    import hf_unlearn.pipeline as pipeline

    limits, real = [], evaluation.evaluate_muse
    monkeypatch.setattr(evaluation, "evaluate_muse", lambda *a, **kw: limits.append(kw["limit"]) or real(*a, **kw))
    windows, prepare = [], pipeline.prepare_dataset
    monkeypatch.setattr(pipeline, "prepare_dataset",
                        lambda rows, name, *a: windows.append((name, a[-1])) or prepare(rows, name, *a))  # fmt: skip
    logged = []
    config = muse_config(muse_path, tmp_path)
    config["unlearn"]["max_length"] = 384
    summary = run(config, log=logged.append)
    # the fine-tune and the gold model window the texts as the unlearning does (MUSE's prompts run to ~1,000 tokens)
    assert windows == [("finetune rows", 384), ("finetune rows", 384)]
    # options the fine-tune sets by itself can be given when it is called from Python
    assert pipeline.finetune_arguments(tmp_path / "x", logging_strategy="no").logging_strategy == "no"
    out = tmp_path / "out"
    assert summary["data_source"] == "muse" and summary["global_steps"] == 2
    assert summary["num_forget_examples"] == summary["num_retain_examples"] == 2
    assert set(summary["evaluation"]) == {"original", "gold", "unlearned"} and limits == [2, 2, 2]
    assert summary["evaluation"]["gold"]["privleak"] == 0
    results = json.loads((out / "eval_results.json").read_text())
    assert {"verbmem_f", "knowmem_f", "knowmem_r", "privleak", "mia_min_k_auc"} <= set(results)
    table = next(text for text in logged if "verbmem_f" in text)
    assert "privleak" in table and "lower, toward the retrained model's" in table
    card = (out / "README.md").read_text()
    assert "muse-bench/MUSE-News" in card and "raw/forget" in card
    forget_text = json.loads((muse_path / "raw/forget.json").read_text())[0]
    assert forget_text[:80] not in card + (out / "unlearning_manifest.json").read_text()


@pytest.mark.parametrize(("data", "error", "message"), [
    ({"retain": "raw/retain1"}, FileNotFoundError,
     r"data.retain='raw/retain1': .*no raw/retain1.json.*set data.retain: privleak/retain2"),
    ({"forget": "knowmem/forget_qa"}, ValueError, r"data.forget='knowmem/forget_qa' is not a MUSE-News text split"),
    ({"forget": "raw"}, ValueError, r"write subset/split, one of \['raw/forget', "),
    ({"limit": 0}, ValueError, r"data.limit=0: give the number of texts"),
    ({"split": "forget"}, ValueError, r"data.split is not a setting of data.source 'muse'"),
    ({"forget": "privleak/retain"}, ValueError, r"forget example\(s\) also appear in retain_dataset"),
])  # fmt: skip
def test_a_bad_muse_data_section_is_named_before_training(data, error, message, muse_path, tmp_path):  # noqa: F811
    with pytest.raises(error, match=message):
        check_run_config(muse_config(muse_path, tmp_path, **data))

