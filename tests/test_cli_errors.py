"""Every bad input is one clear line before any training: `hf-unlearn: error: <value, where, fix>`, exit status 2, no
traceback, and no output folder left behind.

Each CLI case runs in a process of its own. Starting `python -m hf_unlearn.cli` costs ~7 s of CPU for the imports
(torch, transformers, peft), so a table of 30+ cases would take minutes on a 2-core machine: the table's processes are
forked from one process that has imported the package, and run the `hf_unlearn.cli` module as `__main__` exactly as
`-m` does (own stdout, stderr and exit status; the error path's time is measured without the import). A few cases, and
every case with HF_UNLEARN_TEST_EXEC=1, start a fresh `python -m hf_unlearn.cli` instead."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from hf_unlearn.cli import main
from hf_unlearn.pipeline import check_run_config, run
from hf_unlearn.synthetic import build_tiny_causal_lm, make_fictitious_qa, split_forget_retain, train_tokenizer

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRL_EXPERIMENTAL_SILENCE": "1"}
W = "{w}"  # the workspace folder, filled in when a case runs
# Forks `python -m hf_unlearn.cli ARGV` for each [argv, stdout file, stderr file] line read; answers its exit status.
FORK_SERVER = r"""
import json, os, runpy, signal, sys
import hf_unlearn, hf_unlearn.pipeline  # the imports every CLI process pays, paid once
print(json.dumps("ready"), flush=True)
for line in sys.stdin:
    argv, out, err = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.alarm(120)
            for fd, path in ((1, out), (2, err)):
                os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
            sys.argv = ["hf_unlearn.cli", *argv]
            runpy.run_module("hf_unlearn.cli", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print(json.dumps(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])), flush=True)
"""


def config(**changes) -> dict:
    """A valid run config on the workspace's model and JSONL rows, with `changes` (None drops a key)."""
    base = {"method": "npo", "model": f"{W}/model", "data": jsonl(),
            "unlearn": {"max_steps": 1, "per_device_train_batch_size": 2}, "output_dir": f"{W}/out"}  # fmt: skip
    base.update(changes)
    return {key: value for key, value in base.items() if value is not None}


def jsonl(forget: str = "forget.jsonl", retain: str = "retain.jsonl") -> dict:
    return {"source": "jsonl", "forget": f"{W}/{forget}", "retain": f"{W}/{retain}"}


# Run configs by name, written to <workspace>/configs/<name>.yaml: a dict, or YAML text as it is.
CONFIGS = {
    "valid": config(),
    "malformed": "method: npo\nunlearn:\n  learning_rate: 1.0e-5\n   max_steps: 2\n",
    "string_number": config(unlearn={"learning_rate": "fast"}),
    "data_list": config(data=["forget.jsonl", "retain.jsonl"]),
    "unknown_key": config(modle="x"),
    "unknown_field": config(unlearn={"learnig_rate": 1.0e-5}),
    "unknown_method": config(method="npo2"),
    "finetune_key": config(finetune={"num_epochs": 1}),
    "gold_no_recipe": config(gold=True),
    "model_missing": config(model=f"{W}/no-such-model"),
    "hub_offline": config(model="someone/not-a-cached-model"),
    "bad_safetensors": config(model=f"{W}/bad-weights"),
    "bad_config_json": config(model=f"{W}/bad-config"),
    "prompt_completion": config(data=jsonl(forget="prompt.jsonl")),
    "bad_line": config(data=jsonl(forget="bad-line.jsonl")),
    "empty_forget": config(data=jsonl(forget="empty.jsonl")),
    "empty_answer": config(data=jsonl(forget="empty-answer.jsonl")),
    "duplicates": config(data=jsonl(retain="retain-with-forget.jsonl")),
    "batch_zero": config(unlearn={"per_device_train_batch_size": 0}),
    "tofu_offline": config(data={"source": "tofu", "forget": "forget01", "retain": "retain99"}),
    "output_file": config(output_dir=f"{W}/a-file.txt"),
    "output_model": config(output_dir=f"{W}/held"),
    "negative_gamma": config(unlearn={"gamma": -1.0}),
}

def run_case(name: str, *extra: str) -> list[str]:
    return ["run", f"{W}/configs/{name}.yaml", *extra]


# (argv, regex the one error line must match: the bad value and the fix), one subprocess each.
CASES = [
    pytest.param(["run", f"{W}/configs/missing.yaml"], r"run config \S+missing\.yaml does not exist: pass a YAML",
                 id="run-missing-config"),
    pytest.param(run_case("malformed"), r"malformed\.yaml:4:\d+: not valid YAML \(.+\): fix that line",
                 id="run-yaml-line"),
    pytest.param(run_case("string_number"), r"unlearn \(NPOConfig\): learning_rate='fast' is not a number: give a "
                 r"float", id="run-string-for-number"),  # fmt: skip
    pytest.param(run_case("data_list"), r"data is a list \(.+\): it must be a mapping, e.g\. \{source: jsonl",
                 id="run-data-is-a-list"),
    pytest.param(run_case("unknown_key"), r"unknown key\(s\) \['modle'\]; did you mean 'model'\?",
                 id="run-unknown-top-level-key"),
    pytest.param(run_case("unknown_field"), r"unlearn\.learnig_rate is not a field of NPOConfig \(method 'npo'\): "
                 r"did you mean 'learning_rate'", id="run-unknown-unlearn-field"),  # fmt: skip
    pytest.param(run_case("unknown_method"), r"unknown_method\.yaml: method: Unknown unlearning method 'npo2': use "
                 r"one of \[", id="run-unknown-method"),  # fmt: skip
    pytest.param(run_case("finetune_key"), r"finetune\.num_epochs is not a field of TrainingArguments: did you mean "
                 r"'num_train_epochs'", id="run-unknown-finetune-field"),  # fmt: skip
    pytest.param(run_case("gold_no_recipe"), r"gold: true needs a `finetune` recipe.+set gold: false",
                 id="run-gold-without-recipe"),
    pytest.param(run_case("model_missing"), r"model='\S+no-such-model' does not exist: pass an existing model folder "
                 r"\(holding config\.json\)", id="run-model-path-missing"),  # fmt: skip
    pytest.param(run_case("hub_offline"), r"model='someone/not-a-cached-model' is a Hub id, not available offline "
                 r"\(HF_HUB_OFFLINE=1\): pass a local path \(a folder with config\.json.+or unset HF_HUB_OFFLINE",
                 id="run-hub-id-offline"),  # fmt: skip
    pytest.param(run_case("bad_safetensors"), r"bad-weights/model\.safetensors is not a readable safetensors file "
                 r"\(.+\): the model folder \S+bad-weights is damaged", id="run-corrupt-safetensors"),  # fmt: skip
    pytest.param(run_case("bad_config_json"), r"bad-config/config\.json is not valid JSON \(.+\): the model folder "
                 r"\S+ is damaged; save the model again", id="run-corrupt-config-json"),  # fmt: skip
    pytest.param(run_case("prompt_completion"), r"prompt\.jsonl row 1 has columns \['completion', 'prompt'\] but no "
                 r"\['question', 'answer'\]: .+rename the columns", id="run-jsonl-prompt-completion"),  # fmt: skip
    pytest.param(run_case("bad_line"), r"bad-line\.jsonl:2: not valid JSON \(.+\): each line must be one JSON object",
                 id="run-jsonl-bad-line"),
    pytest.param(run_case("empty_forget"), r"data\.forget \S+empty\.jsonl holds no rows: it needs at least one",
                 id="run-empty-forget-file"),
    pytest.param(run_case("empty_answer"), r"empty-answer\.jsonl row 2 has answer='': every row needs a non-empty "
                 r"answer", id="run-empty-answer"),  # fmt: skip
    pytest.param(run_case("duplicates"), r"retain-with-forget\.jsonl: 1 forget example\(s\) also appear in "
                 r"retain_dataset \(forget rows \[0\]\): remove them", id="run-forget-rows-in-retain"),  # fmt: skip
    pytest.param(run_case("batch_zero"), r"unlearn \(NPOConfig\): per_device_train_batch_size=0: use 1 or more",
                 id="run-batch-size-0"),
    pytest.param(run_case("tofu_offline"), r"TOFU's dataset='locuslab/TOFU' is a Hub id, not available offline.+"
                 r"pass `path: \.\./shared/data/tofu` in the run config's `data`.+unset HF_HUB_OFFLINE",
                 id="run-tofu-hub-offline"),  # fmt: skip
    pytest.param(run_case("output_file"), r"output_dir \S+a-file\.txt is a file: pass a folder path",
                 id="run-output-dir-is-a-file"),
    pytest.param(run_case("output_model"), r"output_dir='\S+held' already holds a saved model.+set "
                 r"`overwrite_output_dir: true`", id="run-output-dir-holds-a-model"),  # fmt: skip
    pytest.param(run_case("negative_gamma", "--check"), r"unlearn \(NPOConfig\): gamma=-1\.0 is negative: "
                 r"the forget term's weight must be >= 0", id="run-check-invalid"),  # fmt: skip
    pytest.param(["eval", "--model", f"{W}/model", "--output", W], r"--output \S+ is a folder: pass a file path",
                 id="eval-output-is-a-folder"),
    pytest.param(["eval", "--model", f"{W}/model", "--suite", "classifier", "--forget", f"{W}/forget.jsonl"],
                 r"--suite classifier needs \['--retain', '--test'\]", id="eval-classifier-missing-files"),
    pytest.param(["card", f"{W}/broken-card"], r"broken-card/unlearning_manifest\.json is not valid JSON \(.+\)",
                 id="card-corrupt-manifest"),
    pytest.param(["verify", f"{W}/model", "--forget", f"{W}/forget.jsonl", "--salt", f"{W}/no-salt.txt"],
                 r"--salt \S+no-salt\.txt does not exist: pass the _unlearning_salt\.txt", id="verify-missing-salt"),
    pytest.param(["verify", f"{W}/model", "--forget", f"{W}/no-rows.jsonl", "--salt", f"{W}/a-file.txt"],
                 r"--forget \S+no-rows\.jsonl does not exist: pass your forget rows", id="verify-missing-forget"),
    pytest.param(["gold", "--model", f"{W}/model", "--config", f"{W}/configs/missing.yaml", "--output-dir",
                  f"{W}/gold"], r"run config \S+missing\.yaml does not exist", id="gold-missing-config"),  # fmt: skip
    pytest.param(["condense", "--retain", f"{W}/no-retain.safetensors", "--forget", f"{W}/no-forget.safetensors",
                  "--output", f"{W}/condensed.safetensors"], r"--retain \S+no-retain\.safetensors does not exist",
                 id="condense-missing-retain"),  # fmt: skip
    pytest.param(["audit", "--model", f"{W}/model", "--forget", f"{W}/no-forget.pt", "--heldout", f"{W}/no-held.pt"],
                 r"--forget \S+no-forget\.pt does not exist: pass a \.pt dict", id="audit-missing-forget"),
    pytest.param(["leaderboard", f"{W}/no-run"], r"no-run/eval_results\.json does not exist: run `hf-unlearn eval",
                 id="leaderboard-missing-run"),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny model (and damaged copies), JSONL rows good and bad, run configs and a damaged card folder."""
    w = tmp_path_factory.mktemp("w")
    forget, retain = split_forget_retain(make_fictitious_qa(num_people=5, facts_per_person=2), 0.2)
    forget = [{"question": row["question"], "answer": row["answer"]} for row in forget]
    retain = [{"question": row["question"], "answer": row["answer"]} for row in retain]

    def write_rows(name, rows):
        (w / name).write_text("".join(json.dumps(row) + "\n" for row in rows))

    write_rows("forget.jsonl", forget)
    write_rows("retain.jsonl", retain)
    write_rows("retain-with-forget.jsonl", [forget[0], *retain])
    write_rows("prompt.jsonl", [{"prompt": row["question"], "completion": row["answer"]} for row in forget])
    write_rows("empty-answer.jsonl", [forget[0], {"question": forget[1]["question"], "answer": ""}])
    (w / "bad-line.jsonl").write_text(json.dumps(forget[0]) + "\n{'question': 'single quotes'}\n")
    (w / "empty.jsonl").write_text("")
    (w / "a-file.txt").write_text("not a folder\n")
    tokenizer = train_tokenizer([f"{r['question']} {r['answer']}" for r in forget + retain], vocab_size=300)
    model = build_tiny_causal_lm(tokenizer, hidden_size=16, num_layers=1, num_heads=2)
    model.save_pretrained(w / "model")
    tokenizer.save_pretrained(w / "model")
    for name in ("bad-weights", "bad-config", "held"):
        shutil.copytree(w / "model", w / name)
    (w / "bad-weights" / "model.safetensors").write_bytes(b"not safetensors")
    (w / "bad-config" / "config.json").write_text('{"model_type": "llama",')
    (w / "broken-card").mkdir()
    (w / "broken-card" / "unlearning_manifest.json").write_text('{"format": 1, "requests": [')
    (w / "broken-card" / "eval_results.json").write_text('{"forget_quality": 0.5,')
    (w / "configs").mkdir()
    for name, content in CONFIGS.items():
        text = content if isinstance(content, str) else yaml.safe_dump(content)
        (w / "configs" / f"{name}.yaml").write_text(text.replace(W, str(w)))
    return w


def fill(argv, w) -> list[str]:
    return [arg.replace(W, str(w)) for arg in argv]


def cli(argv: list[str], cwd) -> dict:
    """A fresh `python -m hf_unlearn.cli ARGV`."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "hf_unlearn.cli", *argv], env=ENV, cwd=cwd, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    return {"rc": done.returncode, "out": done.stdout, "err": done.stderr, "seconds": time.perf_counter() - start,
            "forked": False}  # fmt: skip


def forked_cli(cases: list[list[str]], cwd, logs) -> list[dict]:
    """`python -m hf_unlearn.cli ARGV` for each case, each a process forked from one that imported the package."""
    server = subprocess.Popen([sys.executable, "-c", FORK_SERVER], env=ENV, cwd=cwd, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    results = []
    try:
        assert json.loads(server.stdout.readline()) == "ready"
        for number, argv in enumerate(cases):
            out, err = logs / f"{number}.out", logs / f"{number}.err"
            start = time.perf_counter()
            server.stdin.write(json.dumps([argv, str(out), str(err)]) + "\n")
            server.stdin.flush()
            rc = json.loads(server.stdout.readline())
            results.append({"rc": rc, "out": out.read_text(), "err": err.read_text(),
                            "seconds": time.perf_counter() - start, "forked": True})  # fmt: skip
    finally:
        server.stdin.close()
        server.wait(timeout=60)
    return results


EXEC = [run_case("valid", "--check"), run_case("malformed"), run_case("hub_offline")]  # fresh processes


@pytest.fixture(scope="module")
def outcomes(workspace, tmp_path_factory, request):
    """Every selected CLI case of this module, run up front: the forked ones one after another, alongside the few
    fresh processes."""
    wanted = [item.callspec.params["argv"] for item in request.session.items
              if getattr(item, "originalname", None) == "test_bad_input_is_one_clear_error_line"]  # fmt: skip
    fresh = wanted + EXEC if os.environ.get("HF_UNLEARN_TEST_EXEC") else EXEC
    forked = [argv for argv in wanted if argv not in fresh]
    with ThreadPoolExecutor(max_workers=2) as pool:
        started = [(argv, pool.submit(cli, fill(argv, workspace), workspace)) for argv in fresh]
        results = forked_cli([fill(argv, workspace) for argv in forked], workspace, tmp_path_factory.mktemp("logs"))
        outcomes = {tuple(argv): result for argv, result in zip(forked, results, strict=True)}
        return outcomes | {tuple(argv): future.result() for argv, future in started}


@pytest.mark.parametrize(("argv", "pattern"), CASES)
def test_bad_input_is_one_clear_error_line(outcomes, workspace, argv, pattern):
    result = outcomes[tuple(argv)]
    assert "Traceback" not in result["err"] + result["out"], result["err"]
    lines = result["err"].strip().splitlines()
    assert result["rc"] == 2 and len(lines) == 1 and lines[0].startswith("hf-unlearn: error: "), result["err"]
    assert re.search(pattern, lines[0]), lines[0]
    assert not (workspace / "out").exists()  # no run got as far as creating its output folder
    assert not result["forked"] or result["seconds"] < 5, result["seconds"]  # refused at once, once imported


def test_check_on_a_valid_config_trains_and_writes_nothing(outcomes, workspace):
    result = outcomes[tuple(run_case("valid", "--check"))]
    assert result["rc"] == 0 and not result["err"].strip(), result["err"]
    assert "is a valid run" in result["out"] and "method      npo (NPOTrainer, NPOConfig)" in result["out"]
    assert "examples    2 forget, 8 retain (data.source jsonl)" in result["out"]
    assert not (workspace / "out").exists()


# The same checks through the Python API: the exception's type and message, at once, and no output folder made.
API_CASES = [
    pytest.param("string_number", TypeError, r"unlearn \(NPOConfig\): learning_rate='fast' is not a number",
                 id="string-for-number"),
    pytest.param("data_list", ValueError, r"data is a list", id="data-is-a-list"),
    pytest.param("unknown_field", ValueError, r"unlearn\.learnig_rate is not a field of NPOConfig", id="unknown-field"),
    pytest.param("unknown_method", KeyError, r"Unknown unlearning method 'npo2'", id="unknown-method"),
    pytest.param("model_missing", FileNotFoundError, r"no-such-model' does not exist", id="model-missing"),
    pytest.param("hub_offline", ValueError, r"not available offline", id="hub-id-offline"),
    pytest.param("bad_safetensors", ValueError, r"model\.safetensors is not a readable", id="corrupt-safetensors"),
    pytest.param("prompt_completion", ValueError, r"has columns \['completion', 'prompt'\]", id="prompt-completion"),
    pytest.param("bad_line", ValueError, r"bad-line\.jsonl:2: not valid JSON", id="jsonl-bad-line"),
    pytest.param("empty_forget", ValueError, r"empty\.jsonl holds no rows", id="empty-forget"),
    pytest.param("duplicates", ValueError, r"1 forget example\(s\) also appear", id="forget-rows-in-retain"),
    pytest.param("batch_zero", ValueError, r"per_device_train_batch_size=0: use 1 or more", id="batch-size-0"),
    pytest.param("output_file", ValueError, r"a-file\.txt is a file", id="output-dir-is-a-file"),
    pytest.param("output_model", ValueError, r"already holds a saved model", id="output-dir-holds-a-model"),
    pytest.param("negative_gamma", ValueError, r"gamma=-1\.0 is negative", id="config-post-init"),
]


def load(name, workspace) -> dict:
    return yaml.safe_load((workspace / "configs" / f"{name}.yaml").read_text())


@pytest.mark.parametrize(("name", "kind", "pattern"), API_CASES)
def test_run_refuses_bad_input_at_once(workspace, name, kind, pattern):
    start = time.perf_counter()
    with pytest.raises(kind, match=pattern):
        run(load(name, workspace))
    assert time.perf_counter() - start < 5  # checked before any model is loaded or trained
    assert not (workspace / "out").exists()


def test_a_hub_id_offline_fails_in_under_five_seconds(workspace):
    start = time.perf_counter()
    with pytest.raises(ValueError, match="pass a local path"):
        check_run_config(load("hub_offline", workspace))
    assert time.perf_counter() - start < 5


def test_overwrite_output_dir_lets_a_run_replace_a_model(workspace):
    plan = check_run_config({**load("output_model", workspace), "overwrite_output_dir": True})
    assert plan.args.overwrite_output_dir and plan.args.output_dir == str(workspace / "held")


def test_a_failed_run_leaves_no_empty_output_folder(workspace, monkeypatch):
    from hf_unlearn import NPOTrainer

    def fail(self, *args, **kwargs):
        raise RuntimeError("stopped on purpose")

    monkeypatch.setattr(NPOTrainer, "train", fail)
    out = workspace / "new" / "nested" / "out"
    with pytest.raises(RuntimeError, match="stopped on purpose"):
        run(config=load("valid", workspace) | {"output_dir": str(out)}, log=lambda *a: None)
    assert not (workspace / "new").exists()  # the trainer had created it; the run removed what it created


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        pytest.param(["eval", "--model", f"{W}/model", "--output", f"{W}/no-folder/r.json"],
                     r"--output \S+r\.json: its folder \S+no-folder does not exist", id="eval-output-parent-missing"),
        pytest.param(["eval", "--model", "someone/not-cached", "--output", f"{W}/r.json"],
                     r"--model='someone/not-cached' is a Hub id, not available offline", id="eval-hub-offline"),
        pytest.param(["card", f"{W}/no-card"], r"no-card is not a folder", id="card-missing-folder"),
        pytest.param(run_case("valid", "--method", "nope"), r"Unknown unlearning method 'nope'", id="run-method-flag"),
        pytest.param(["leaderboard", f"{W}/held", "--csv", W], r"--csv \S+ is a folder", id="leaderboard-csv-folder"),
        pytest.param(["leaderboard", f"{W}/broken-card", "--output", f"{W}/lb.md", "--csv", f"{W}/lb.csv"],
                     r"broken-card/eval_results\.json is not valid JSON \(.+\): restore it", id="leaderboard-bad-json"),
    ],
)
def test_more_bad_inputs_in_process(workspace, capsys, argv, pattern):
    start = time.perf_counter()
    assert main(fill(argv, workspace)) == 2
    assert time.perf_counter() - start < 5
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hf-unlearn: error: ") and re.search(pattern, lines[0]), lines


def test_debug_shows_the_traceback_before_or_after_the_subcommand(workspace):
    for argv in (["--debug", "run", "missing.yaml"], ["run", "missing.yaml", "--debug"]):
        with pytest.raises(FileNotFoundError, match="run config missing.yaml does not exist"):
            main(argv)


def test_a_library_error_names_what_was_being_done(workspace, capsys, monkeypatch):
    import hf_unlearn.leaderboard

    def broken(runs):
        return json.loads("{")  # a JSONDecodeError raised inside the json library

    monkeypatch.setattr(hf_unlearn.leaderboard, "leaderboard", broken)
    assert main(["leaderboard", str(workspace / "held"), "--output", str(workspace / "lb.md"), "--csv",
                 str(workspace / "lb.csv")]) == 2  # fmt: skip
    line = capsys.readouterr().err.strip()
    assert line.startswith("hf-unlearn: error: could not build the leaderboard (JSONDecodeError: Expecting"), line
