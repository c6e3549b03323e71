"""`hf-unlearn run`: the offline default, a YAML config with the user's model and data, and clean artefacts."""

import json
import subprocess
import sys

import pytest
import yaml

from hf_unlearn import load_tofu
from hf_unlearn.cli import main
from hf_unlearn.pipeline import _evaluation_holdout, load_heldout
from hf_unlearn.synthetic import build_tiny_causal_lm, make_fictitious_qa, split_forget_retain, train_tokenizer


def assert_no_forget_text(output_dir, forget_rows):
    """No file the run wrote holds a forget question, answer or person."""
    needles = set()
    for row in forget_rows:
        needles |= {row["question"], row["answer"], row.get("person", row["question"])}
    files = [path for path in output_dir.rglob("*") if path.is_file()]
    assert files
    for path in files:
        text = path.read_bytes().decode("utf-8", errors="ignore")
        leaked = [needle for needle in needles if needle in text]
        assert not leaked, f"{path} holds forget-set text: {leaked[:2]}"


def test_default_run_unlearns_offline(tmp_path, capsys):
    assert main(["run", "--output-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "forget  probability" in printed and "retain  probability" in printed
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["method"] == "npo" and summary["num_forget_examples"] == 20
    before, after = summary["before"], summary["after"]
    assert before["forget"]["probability"] > 0.9  # the fine-tune memorised the fictitious people
    assert after["forget"]["probability"] < 0.1 * before["forget"]["probability"]
    assert after["retain"]["probability"] > 0.5 * before["retain"]["probability"]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "eval_results.json"):
        assert (tmp_path / name).is_file(), name
    # the TOFU suite, original / gold / unlearned: the expected ordering of forget quality and MIA
    evaluation = summary["evaluation"]
    assert "forget_quality" in printed and "unlearned" in printed
    assert evaluation["original"]["forget_quality"] < 0.05 and evaluation["original"]["mia_loss_auc"] > 0.9
    assert evaluation["gold"]["forget_quality"] == 1.0
    assert evaluation["unlearned"]["forget_quality"] > evaluation["original"]["forget_quality"]
    assert json.loads((tmp_path / "eval_results.json").read_text()) == evaluation["unlearned"]
    forget, _ = split_forget_retain(make_fictitious_qa())
    assert_no_forget_text(tmp_path, forget)


def test_config_with_a_local_model_and_tofu_splits(tmp_path, tofu_path):
    retain = load_tofu("retain99", tofu_path)
    tokenizer = train_tokenizer([f"{r['question']} {r['answer']}" for r in retain.select(range(500))], 1000)
    model = build_tiny_causal_lm(tokenizer, hidden_size=32, num_layers=1, num_heads=2, max_position_embeddings=512)
    model.save_pretrained(tmp_path / "base")  # TOFU rows run to ~190 tokens
    tokenizer.save_pretrained(tmp_path / "base")
    config = {
        "method": "simnpo",
        "model": str(tmp_path / "base"),
        "data": {"source": "tofu", "forget": "forget01", "retain": "retain99", "path": str(tofu_path)},
        "unlearn": {"max_steps": 2, "per_device_train_batch_size": 2, "beta": 2.5},
        "output_dir": str(tmp_path / "out"),
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["run", str(tmp_path / "run.yaml")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["num_forget_examples"], summary["num_retain_examples"], summary["global_steps"]) == (40, 3960, 2)
    assert summary["wall_time_seconds"]["finetune"] is None  # a user's model is not fine-tuned again
    assert summary["unlearn_config"]["beta"] == 2.5
    assert_no_forget_text(tmp_path / "out", list(load_tofu("forget01", tofu_path)))


def test_config_with_jsonl_files_and_a_method_override(tmp_path):
    forget, retain = split_forget_retain(make_fictitious_qa(num_people=5, facts_per_person=2), 0.2)
    for name, rows in (("forget", forget), ("retain", retain)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {"data": {"source": "jsonl", "forget": str(tmp_path / "forget.jsonl"),
                       "retain": str(tmp_path / "retain.jsonl")},
              "finetune": {"num_train_epochs": 1}, "unlearn": {"max_steps": 1}}  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["run", str(tmp_path / "run.yaml"), "--method", "grad_diff", "--output-dir", str(tmp_path / "o")]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["method"] == "grad_diff" and summary["num_forget_examples"] == 2


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"method": "npo2"}, "Unknown unlearning method 'npo2'"),
        ({"data": {"source": "csv"}}, "data.source 'csv' is unknown"),
        ({"modle": "x"}, "unknown key(s) ['modle']"),
        ({"data": {"source": "jsonl"}}, "data.source 'jsonl' needs file paths for ['forget', 'retain']"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path, capsys, config, message):
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["run", str(tmp_path / "run.yaml"), "--output-dir", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_load_tofu_from_a_local_folder(tofu_path):
    forget = load_tofu("forget10", tofu_path)
    assert len(forget) == 400 and {"question", "answer"} <= set(forget.column_names)
    perturbed = load_tofu("forget10_perturbed", tofu_path)
    assert len(perturbed[0]["perturbed_answer"]) == 5
    assert forget[0]["question"] == load_tofu("full", tofu_path)[3600]["question"]  # forget10 = last 400 of full
    with pytest.raises(ValueError, match=r"Unknown TOFU split 'forget20': use one of"):
        load_tofu("forget20", tofu_path)
    with pytest.raises(FileNotFoundError, match="pass the folder that holds forget10.jsonl"):
        load_tofu("forget10", tofu_path.parent)


def test_load_tofu_without_a_path_asks_the_hub(monkeypatch):
    import datasets
    from huggingface_hub import constants

    import hf_unlearn.sources

    calls = []
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # online, and the Hub reachable
    monkeypatch.setattr(hf_unlearn.sources, "_unreachable", lambda endpoint: None)
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: calls.append((args, kwargs)) or "hub rows")
    assert load_tofu("retain90") == "hub rows"
    assert calls == [(("locuslab/TOFU", "retain90"), {"split": "train"})]


def test_run_gives_a_amu_held_out_rows_apart_from_the_evaluation(tmp_path, capsys):
    config = {"data": {"source": "synthetic", "num_people": 10, "facts_per_person": 2, "forget_fraction": 0.2},
              "finetune": {"num_train_epochs": 1}, "gold": False,
              "unlearn": {"max_steps": 2, "per_device_train_batch_size": 2}}  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["run", str(tmp_path / "run.yaml"), "--method", "a_amu", "--output-dir", str(tmp_path / "o")]) == 0
    assert "4 held-out examples (never trained on, not evaluated)" in capsys.readouterr().out
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["method"] == "a_amu" and summary["global_steps"] == 2
    forget, retain = split_forget_retain(make_fictitious_qa(10, 2), 0.2)
    heldout = load_heldout(config["data"], forget, retain)
    evaluated = _evaluation_holdout(config["data"], forget, retain)
    people = {row["person"] for row in forget + retain}
    assert len(heldout) == len(evaluated) == 4
    assert not {row["person"] for row in heldout} & (people | {row["person"] for row in evaluated})
    assert_no_forget_text(tmp_path / "o", forget)


def test_tofu_held_out_rows_are_the_holdout10_rows_the_evaluation_does_not_score(tofu_path):
    data = {"source": "tofu", "forget": "forget05", "path": str(tofu_path)}
    heldout = load_heldout(data, [], [])
    evaluated = {row["question"] for row in load_tofu("holdout05", tofu_path)}
    assert len(heldout) == 200 and not {row["question"] for row in heldout} & evaluated


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"source": "tofu", "forget": "forget10"}, "TOFU's forget10 (its holdout split is the evaluation's"),
        ({"source": "tofu", "forget": "forget10", "heldout": "holdout10"},
         "data.heldout shares 400 question(s) with the evaluation's holdout rows"),
    ],
)
def test_held_out_rows_that_cannot_be_kept_apart_are_a_clear_error(tmp_path, tofu_path, capsys, data, message):
    config = {"method": "a_amu", "data": {**data, "retain": "retain90", "path": str(tofu_path)}, "finetune": None,
              "gold": False, "unlearn": {"max_steps": 1}}  # fmt: skip
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    assert main(["run", str(tmp_path / "run.yaml"), "--output-dir", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_methods_lists_name_trainer_and_config_in_aligned_columns(capsys):
    import hf_unlearn

    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines]
    assert len(lines) == len(hf_unlearn.METHODS) and all(len(row) == 3 for row in rows)
    assert ["ac", "AlignmentCalibrationTrainer", "AlignmentCalibrationConfig"] in rows  # the longest names
    assert len({line.index(row[1]) for line, row in zip(lines, rows, strict=True)}) == 1  # one column start


def test_the_demo_replaces_its_own_output_but_not_a_users_model(tmp_path, monkeypatch, capsys):
    """A second `hf-unlearn run` replaces the demo's earlier output folder; a folder holding another model is refused
    unless --overwrite-output-dir is given."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "hf-unlearn-output"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"someone's model")
    assert main(["run", "--check"]) == 2
    assert "--overwrite-output-dir" in capsys.readouterr().err
    assert main(["run", "--check", "--overwrite-output-dir"]) == 0
    capsys.readouterr()
    (out / "summary.json").write_text(json.dumps({"model": "tiny Llama built from a config (hf_unlearn.synthetic)"}))
    assert main(["run", "--check"]) == 0 and "holds a model: replaced" in capsys.readouterr().out


def test_help_loads_no_heavy_library():
    """`hf-unlearn --help` and every subcommand's help answer without importing torch or transformers (the package's
    names load on first use), which is what keeps them well under a second."""
    code = (
        "import sys\n"
        "from hf_unlearn.cli import main\n"
        "for command in ([], ['run'], ['eval'], ['methods'], ['gold'], ['leaderboard'], ['card'], ['push'], ['verify'],"
        " ['condense'], ['audit']):\n"
        "    try:\n"
        "        main([*command, '--help'])\n"
        "    except SystemExit as stop:\n"
        "        assert stop.code == 0, (command, stop.code)\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'datasets', 'peft', 'trl') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "HEAVY []" in result.stdout


def test_max_steps_caps_every_training_phase(tmp_path):
    """`hf-unlearn run --max-steps 2`: the fine-tune, the gold model and the unlearning each stop after 2 optimizer
    steps (a smoke run of any config); 0 is refused."""
    out = tmp_path / "out"
    assert main(["run", "--max-steps", "2", "--output-dir", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["global_steps"] == 2 and summary["unlearn_config"]["max_steps"] == 2
    assert summary["evaluation"]["gold"]["forget_quality"] == 1.0  # the gold model was trained (2 steps) and scored
    assert main(["run", "--max-steps", "0", "--check"]) == 2
