"""The command line as a product: fast help with defaults and examples, progress you can see (and --quiet), method
config fields as flags, shipped configs that run as shipped, mixed precision chosen by the device, the qa suite."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hf_unlearn.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["run", "methods", "eval", "gold", "leaderboard", "card", "push", "verify", "condense", "audit"]


def _seconds(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, timeout=120)
    return time.perf_counter() - start


def test_help_answers_within_15_times_an_empty_python():
    """`hf-unlearn --help` and each subcommand's: the best of 3 runs, as a ratio to the best of 3 `python -c pass`
    (interleaved, so the machine's load weighs on both alike)."""
    for command in ([], ["run"], ["eval"]):
        helps, empties = [], []
        for _ in range(3):
            helps.append(_seconds([sys.executable, "-m", "hf_unlearn.cli", *command, "--help"]))
            empties.append(_seconds([sys.executable, "-c", "pass"]))
        assert min(helps) < 15 * min(empties), (command, helps, empties)


def test_every_help_shows_its_defaults_and_an_example():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    assert set(subparsers) == set(COMMANDS)
    for name, subparser in subparsers.items():
        text = " ".join(subparser.format_help().split())
        assert "example" in text, name
        for action in subparser._actions:
            if action.option_strings and action.default not in (None, False, "==SUPPRESS==") and action.help:
                assert f"(default: {action.default})" in text, (name, action.dest)
    assert "(default: forget10)" in " ".join(subparsers["eval"].format_help().split())


def test_progress_is_shown_in_a_log_and_quiet_turns_it_off(tmp_path):
    """A run whose output goes to a file (not a terminal) still shows each phase's bar by name and Trainer's log lines;
    the last lines say where everything went. --quiet leaves only those last lines."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = [sys.executable, "-m", "hf_unlearn.cli", "run", "--max-steps", "2"]
    loud = subprocess.run([*run, "--output-dir", str(tmp_path / "loud")], capture_output=True, text=True, env=env,
                          timeout=600)  # fmt: skip
    assert loud.returncode == 0, loud.stderr[-2000:]
    log = loud.stdout + loud.stderr
    for phase in ("fine-tune:", "gold model:", "unlearn (npo):", "measure before: scoring answers",
                  "evaluate gold: generating answers", "evaluate unlearned: scoring answers"):
        assert phase in log, phase
    assert "2/2 [" in log and "{'loss': " in log and "'loss/forget': " in log  # tqdm's steps, Trainer's logs
    assert f"written to {tmp_path / 'loud'}/:" in loud.stdout and "summary.json" in loud.stdout
    assert "_unlearning_salt.txt" in loud.stdout.splitlines()[-1]

    quiet = subprocess.run([*run, "--quiet", "--output-dir", str(tmp_path / "quiet")], capture_output=True, text=True,
                           env=env, timeout=600)  # fmt: skip
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "fine-tune" not in quiet.stdout + quiet.stderr and "{'loss'" not in quiet.stdout + quiet.stderr
    ours = [line for line in quiet.stdout.splitlines() if "[real_accelerator.py" not in line]  # DeepSpeed's own note
    assert ours[0].startswith("done in ") and "summary.json" in quiet.stdout


@pytest.mark.parametrize("config", sorted((ROOT / "examples" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_runs_as_shipped_in_smoke_mode(config, tmp_path, monkeypatch, tofu_path):
    """Each file in examples/configs/ runs from the repository root on this CPU (mixed precision chosen by the device)
    with --max-steps 2: every phase capped at 2 steps, the evaluation on the first rows of each split."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "out"
    assert main(["run", str(config), "--max-steps", "2", "--quiet", "--output-dir", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["global_steps"] == 2 and summary["unlearn_config"]["bf16"] is False  # no bf16 on this CPU
    assert summary["evaluation"]["unlearned"]  # evaluated


def test_method_fields_are_flags_that_override_the_config(tmp_path, capsys, monkeypatch):
    """`hf-unlearn run --beta 0.2 --learning-rate 3e-4`: fields of the method's config, read as HfArgumentParser
    reads them (dashes or underscores), override the config's `unlearn` section; a misspelt one is named."""
    import hf_unlearn.pipeline

    plans = []
    monkeypatch.setattr(hf_unlearn.pipeline, "run", lambda plan, log=print: plans.append(plan))
    argv = ["run", "--beta", "0.2", "--learning-rate", "3e-4", "--retain_loss", "kl", "--output-dir", str(tmp_path)]
    assert main(argv) == 0
    args = plans[0].args
    assert (args.beta, args.learning_rate, args.retain_loss, args.num_train_epochs) == (0.2, 3e-4, "kl", 20)
    config = tmp_path / "run.yaml"
    config.write_text("method: simnpo\nunlearn: {num_train_epochs: 3}\n")
    assert main(["run", "--config", str(config), "--delta", "0.5", "--output-dir", str(tmp_path / "b")]) == 0
    assert (plans[1].args.delta, plans[1].args.num_train_epochs, plans[1].config["method"]) == (0.5, 3, "simnpo")
    assert main(["run", "--check", "--bta", "0.2"]) == 2
    assert "--bta is not an option of `hf-unlearn run` nor a field of NPOConfig: did you mean --beta?" in (
        capsys.readouterr().err)
    assert main(["run", "--check", "--seed", "3"]) == 2
    assert "--seed is a run setting" in capsys.readouterr().err
    assert main(["run", "--check", "--beta", "abc"]) == 2
    assert "abc" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["eval", "--model", "m", "--beta", "0.2"])
    assert stop.value.code == 2 and "unrecognized arguments: --beta 0.2" in capsys.readouterr().err


def test_mixed_precision_follows_the_device_unless_forced():
    """No bf16/fp16 setting (or `bf16: auto`) is bf16 on a GPU that has it and fp32 elsewhere; `bf16: true` on a device
    without it is one clear error naming the fix, not the library's advice to set use_cpu."""
    import torch

    from hf_unlearn.pipeline import check_run_config, load_run_config, mixed_precision

    expected = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    assert mixed_precision({}, "unlearn")["bf16"] is expected
    assert mixed_precision({"bf16": "auto"}, "unlearn")["bf16"] is expected
    assert mixed_precision({"bf16": False}, "unlearn")["bf16"] is False
    assert mixed_precision({"fp16": True}, "unlearn") == {"fp16": True}
    assert mixed_precision(None, "finetune") is None
    if not expected:
        config = load_run_config(None)
        config["unlearn"]["bf16"] = True
        message = r"unlearn\.bf16 is true, but this machine has no GPU: remove it \(or write `bf16: auto`\)"
        with pytest.raises(ValueError, match=message):
            check_run_config(config)


def test_qa_suite_on_the_demo_people_and_on_plain_jsonl_files(tmp_path, capsys, memorised_model, tokenizer):
    """`hf-unlearn eval --suite qa` scores any causal LM on the offline demo's people (no files given: forget quality
    and truth ratio included), or on JSONL question/answer files without wrong answers (the truth ratio and what needs
    it are reported missing, with the reason); the ROC plot draws one panel per model."""
    from hf_unlearn.synthetic import make_fictitious_qa, make_holdout_qa, split_forget_retain

    model_dir = tmp_path / "model"
    memorised_model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    out, roc = tmp_path / "demo.json", tmp_path / "roc.png"
    assert main(["eval", "--suite", "qa", "--model", str(model_dir), "--original-model", str(model_dir), "--limit",
                 "6", "--max-new-tokens", "8", "--quiet", "--output", str(out), "--roc-plot", str(roc)]) == 0
    printed = capsys.readouterr().out
    assert "the offline demo's people: 20 forget, 180 retain, 20 held-out rows" in printed
    assert "original" in printed.splitlines()[1] and f"written to {out} and {roc}" in printed
    demo = json.loads(out.read_text())
    assert {"forget_truth_ratio", "model_utility", "mia_loss_auc", "forget_rouge"} <= set(demo)
    assert roc.read_bytes()[:4] == b"\x89PNG"

    forget, retain = split_forget_retain(make_fictitious_qa(10, 3, seed=5), 0.3)
    files = {}
    for name, rows in (("forget", forget), ("retain", retain), ("heldout", make_holdout_qa(3, 3, seed=7))):
        files[name] = tmp_path / f"{name}.jsonl"
        files[name].write_text("".join(json.dumps({"question": r["question"], "answer": r["answer"]}) + "\n"
                                       for r in rows))  # fmt: skip
    out = tmp_path / "plain.json"
    argv = ["eval", "--suite", "qa", "--model", str(model_dir), "--max-new-tokens", "8", "--quiet", "--output",
            str(out)] + [item for name, path in files.items() for item in (f"--{name}", str(path))]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    plain = json.loads(out.read_text())
    assert {"forget_probability", "forget_rouge", "mia_min_k_auc"} <= set(plain)
    assert "forget_truth_ratio" not in plain and "model_utility" not in plain
    assert "n/a: forget_truth_ratio (model): the forget rows have no perturbed_answer (wrong answers)" in printed
    assert main(argv[:-2]) == 2  # without --heldout
    assert "--suite qa needs --forget, --retain and --heldout together" in capsys.readouterr().err


def test_card_says_a_shared_reason_once_and_the_leaderboard_shows_current_short_settings(tmp_path, capsys):
    from hf_unlearn.hub import render_model_card
    from hf_unlearn.leaderboard import load_run
    from hf_unlearn.manifest import MANIFEST_NAME

    why = "no gold (retain-only) model's forget truth ratios were given"
    request = {"request": 1, "method": "npo", "method_name": "NPO", "date": "2026-12-07T00:00:00",
               "fingerprint": {"num_examples": 3, "hmac_sha256": "ab" * 32, "algorithm": "HMAC-SHA256"},
               "settings": {"beta": 0.2}, "description": "One author's rows, at the author's request.",
               "metrics_missing": {m: {"forget_quality": why, "privleak": why} for m in ("original", "unlearned")}}
    card = str(render_model_card({"requests": [request]}))
    assert card.count(why) == 1
    assert f"- `forget_quality`, `privleak` of the original and unlearned models: {why}." in card
    assert "a model this card does not name" in card and "whose base is not recorded" not in card

    run = tmp_path / "run"
    run.mkdir()
    (run / "eval_results.json").write_text(json.dumps({"forget_quality": 0.5}))
    (run / "summary.json").write_text(json.dumps({"method": "npo", "unlearn_config": {
        "beta": 0.2, "forget_description": "A long description written at run time", "logging_steps": 0.05}}))
    assert load_run(run)["settings"] == "beta=0.2"  # from the summary, without the description or logging
    (run / MANIFEST_NAME).write_text(json.dumps({"requests": [{**request, "settings": {"beta": 0.3}}]}))
    assert load_run(run)["settings"] == "beta=0.3"  # the manifest is current (`hf-unlearn card` rewrites it)
