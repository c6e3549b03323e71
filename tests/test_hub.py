"""The trainer writes our card, manifest and salt; a second deletion request keeps the lineage; `hf-unlearn verify`
and `hf-unlearn card` work from the files alone."""

from __future__ import annotations

import json

import pytest
from conftest import SEED, training_args
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM

from hf_unlearn import GATrainer, NPOConfig, NPOTrainer
from hf_unlearn.cli import main
from hf_unlearn.config import UnlearningConfig
from hf_unlearn.manifest import MANIFEST_NAME, SALT_NAME


def unlearn(trainer_cls, config_cls, model, forget, retain, tokenizer, out, **kwargs):
    args = config_cls(**training_args(out, max_steps=2, learning_rate=1e-3, **kwargs))
    trainer = trainer_cls(model=model, args=args, forget_dataset=forget, retain_dataset=retain,
                          processing_class=tokenizer)  # fmt: skip
    trainer.train()
    return trainer


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_save_model_writes_card_manifest_and_salt(memorised_model, tokenizer, qa_data, tmp_path):
    forget, retain = qa_data
    out = tmp_path / "run"
    trainer = unlearn(NPOTrainer, NPOConfig, memorised_model, forget, retain, tokenizer, out,
                      forget_description="Two people's facts, at their request.", save_strategy="steps", save_steps=1)
    trainer.create_model_card(language="en", license="mit", tags=["demo"], finetuned_from="org/tiny-base")
    trainer.save_model()
    data = ModelCard.load(out / "README.md").data
    assert data.tags == ["hf-unlearn", "unlearning", "npo", "generated_from_trainer", "demo"]
    assert (data.language, data.license, data.base_model, data.library_name) == ("en", "mit", "org/tiny-base",
                                                                                 "transformers")  # fmt: skip
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    request = manifest["requests"][0]
    assert request["method"] == "npo" and request["compute"]["steps"] == 2
    assert request["description"] == "Two people's facts, at their request."
    settings = {"learning_rate": 0.001, "max_steps": 2, "per_device_train_batch_size": 4, "seed": SEED}
    assert request["settings"] == settings
    assert [step for step, _ in request["curves"]["loss/forget"]] == [1, 2]
    assert (out / "plots/loss_curves.png").is_file()
    # the salt is beside the model, never in a checkpoint, and verifies the card's fingerprint
    assert (out / SALT_NAME).stat().st_mode & 0o077 == 0
    assert not list(out.glob("checkpoint-*/" + SALT_NAME)) and list(out.glob("checkpoint-*"))
    assert main(["verify", str(out), "--forget", str(write_jsonl(tmp_path / "f.jsonl", forget)),
                 "--salt", str(out / SALT_NAME)]) == 0  # fmt: skip


def test_second_request_keeps_the_lineage_and_verify_names_the_request(
    memorised_model, tokenizer, qa_data, tmp_path, capsys
):
    forget, retain = qa_data
    first, second = tmp_path / "first", tmp_path / "second"
    unlearn(NPOTrainer, NPOConfig, memorised_model, forget[:4], retain, tokenizer, first).save_model()
    tokenizer.save_pretrained(first)
    model = AutoModelForCausalLM.from_pretrained(first)  # the model now remembers where it came from
    trainer = unlearn(GATrainer, UnlearningConfig, model, forget[4:], None, tokenizer, second, alpha=0)
    trainer.save_model()
    manifest = json.loads((second / MANIFEST_NAME).read_text())
    assert [(r["request"], r["method"]) for r in manifest["requests"]] == [(2, "ga"), (1, "npo")]
    text = (second / "README.md").read_text()
    assert "over 2 deletion requests" in text and "| 2 |" in text and "| 1 |" in text

    capsys.readouterr()
    first_rows = write_jsonl(tmp_path / "a.jsonl", forget[:4])
    second_rows = write_jsonl(tmp_path / "b.jsonl", forget[4:])
    assert main(["verify", str(second), "--forget", str(first_rows), "--salt", str(first / SALT_NAME)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("MATCH") and "request 1 of 2" in out
    assert main(["verify", str(second), "--forget", str(second_rows), "--salt", str(second / SALT_NAME)]) == 0
    assert "request 2 of 2" in capsys.readouterr().out
    # one character changed in one row, or the other request's salt: no match
    edited = [dict(row) for row in forget[4:]]
    edited[0]["answer"] = edited[0]["answer"][:-1] + "?"
    assert main(["verify", str(second), "--forget", str(write_jsonl(tmp_path / "c.jsonl", edited)),
                 "--salt", str(second / SALT_NAME)]) == 1  # fmt: skip
    assert "NO MATCH" in capsys.readouterr().out
    assert main(["verify", str(second), "--forget", str(second_rows), "--salt", str(first / SALT_NAME)]) == 1


def test_card_command_rerenders_with_later_evaluation(memorised_model, tokenizer, qa_data, tmp_path, capsys):
    forget, retain = qa_data
    out = tmp_path / "run"
    unlearn(NPOTrainer, NPOConfig, memorised_model, forget, retain, tokenizer, out).save_model()
    assert "has not been evaluated yet" in (out / "README.md").read_text()
    fingerprint = json.loads((out / MANIFEST_NAME).read_text())["requests"][0]["fingerprint"]
    (out / "eval_results.json").write_text(json.dumps({"forget_quality": 0.42, "model_utility": 0.6}))
    assert main(["card", str(out), "--license", "apache-2.0", "--description", "Rows of two people."]) == 0
    card = ModelCard.load(out / "README.md")
    assert card.data.license == "apache-2.0" and "Rows of two people." in card.text
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == {"forget_quality": 0.42,
                                                                               "model_utility": 0.6}  # fmt: skip
    assert json.loads((out / MANIFEST_NAME).read_text())["requests"][0]["fingerprint"] == fingerprint


def test_card_command_without_a_manifest_says_why(tmp_path, capsys):
    assert main(["card", str(tmp_path)]) == 2
    assert "unlearning_manifest.json does not exist" in capsys.readouterr().err


def test_verify_errors_name_the_missing_file(tmp_path, capsys):
    (tmp_path / "rows.jsonl").write_text("")
    assert main(["verify", str(tmp_path), "--forget", str(tmp_path / "rows.jsonl"), "--salt", "nope.txt"]) == 2
    assert "nope.txt does not exist" in capsys.readouterr().err
    assert main(["verify", str(tmp_path), "--forget", str(tmp_path / "mine.jsonl"), "--salt", "nope.txt"]) == 2
    assert "mine.jsonl does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_verify_reads_json_and_csv_rows(suffix, tmp_path):
    from hf_unlearn.hub import read_rows

    rows = [{"question": "Q1?", "answer": "A1."}, {"question": "Q2?", "answer": "A2."}]
    path = tmp_path / f"rows{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        path.write_text("question,answer\nQ1?,A1.\nQ2?,A2.\n")
    assert read_rows(path) == rows


def test_peft_model_card_names_peft_and_the_base(make_model, tokenizer, qa_data, tmp_path):
    from peft import LoraConfig

    forget, retain = qa_data
    model = make_model()
    model.config._name_or_path = "org/tiny-base"  # as if loaded from the Hub
    args = NPOConfig(**training_args(tmp_path, max_steps=1))
    trainer = NPOTrainer(model=model, args=args, forget_dataset=forget, retain_dataset=retain,
                         processing_class=tokenizer, peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    trainer.train()
    trainer.save_model()
    data = ModelCard.load(tmp_path / "README.md").data
    assert (data.library_name, data.base_model) == ("peft", "org/tiny-base")
    assert (tmp_path / "adapter_config.json").is_file() and "hf-unlearn" in data.tags
