"""Every registered method under each engine, 2 processes on CPU (gloo), against DDP on the same seed: DeepSpeed ZeRO-3
and ZeRO-2, LoRA under both, `accelerate launch --multi_gpu`, and 2 nodes × 1 process
simulated on the loopback address. Each run is `tests/scripts/engine_run.py`; a method that cannot run under an engine
must refuse at construction, and FSDP asked for on a CPU (where Accelerate silently runs DDP) is refused.

DeepSpeed JIT-compiles a small communication extension on first use (~2.5 min on this CPU, cached afterwards under
`~/.cache/torch_extensions`, or `TORCH_EXTENSIONS_DIR`). Without deepspeed or a C++ compiler the DeepSpeed tests
skip."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "scripts" / "engine_run.py"
ZERO2, ZERO3 = (str(ROOT / "examples" / "accelerate" / f"ds_zero{n}.json") for n in (2, 3))
# Every registered method has a row (tests/scripts/engine_run.py's CASES), and Ready2Unlearn's preparation trainer.
CASES = ["ga", "grad_diff", "grad_diff_kl", "npo", "npo_precompute", "simnpo", "deepcut", "npo_lora", "a_amu",
         "a_amu_grad_diff", "a_amu_ga", "a_amu_npo", "a_amu_simnpo", "a_amu_deepcut", "ac", "siu",
         "ready2unlearn", "idk_nll", "idk_dpo", "altpo", "undial", "wga", "satimp", "ce_u", "rmu",
         "rmu_lora"]  # fmt: skip
ZERO3_REFUSED = ["siu", "ready2unlearn"]
# Run under ZeRO-3 only, to be refused: AltPO asked to write its alternates (its forget rows have no `alternate` column)
ZERO3_ONLY_REFUSED = ["altpo_generate"]
WITH_RETAIN_DRAWS = ["grad_diff", "grad_diff_kl", "npo", "simnpo"]
# ZeRO-3 reduces gradients in another order than DDP: equal to fp32 rounding over 3 steps
TOLERANCE = 1e-5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment() -> dict:
    # the launched processes import this checkout's hf_unlearn, and tests/ for the SIU fixtures
    paths = [str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "OMP_NUM_THREADS": "1"}


def launch(out: Path, engine: str, cases: list[str], launcher: list[str] | None = None, timeout: int = 600) -> Path:
    port = free_port()
    launcher = launcher or [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                            "127.0.0.1", "--master_port", str(port)]  # fmt: skip
    result = subprocess.run([*launcher, str(SCRIPT), str(out), engine, *cases], capture_output=True, text=True,
                            timeout=timeout, env=environment(), cwd=ROOT)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def ranks(out: Path, case: str) -> list[dict]:
    return [json.loads((out / case / f"rank{r}.json").read_text()) for r in (0, 1)]


def losses(record: dict) -> list[dict]:
    return [entry for entry in record["logs"] if "loss" in entry]


def assert_same_losses(a: dict, b: dict, tolerance: float = TOLERANCE) -> None:
    first, second = losses(a), losses(b)
    assert len(first) == len(second) == 3
    for x, y in zip(first, second, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            assert abs(x[key] - y[key]) <= tolerance * max(1.0, abs(x[key])), (key, x, y)


def reload(folder: Path) -> dict[str, torch.Tensor]:
    """The saved model's weights as a fresh process loads them: a PEFT adapter's own file, else `from_pretrained` of
    the class the config names (which maps renamed checkpoint keys back)."""
    if (folder / "adapter_config.json").is_file():
        return {k: v for k, v in load_file(folder / "adapter_model.safetensors").items()}
    import transformers

    import hf_unlearn.encoders

    name = json.loads((folder / "config.json").read_text())["architectures"][0]
    cls = getattr(transformers, name, None) or getattr(hf_unlearn.encoders, name)
    return cls.from_pretrained(folder).state_dict()


def assert_saved_weights_are_the_gathered_ones(folder: Path, checksum: dict) -> None:
    """The saved model reloads to the weights rank 0 gathered (for an adapter: its tensors), written once."""
    gathered = {k.replace(".default", ""): v for k, v in checksum.items()}
    reloaded = reload(folder)
    assert reloaded, f"nothing saved in {folder}"
    for key, tensor in reloaded.items():
        assert key in gathered, f"{key} reloaded but not among the gathered weights"
        assert abs(float(tensor.double().sum()) - gathered[key]) <= 1e-5 * max(1.0, abs(gathered[key])), key
    manifest = json.loads((folder / "unlearning_manifest.json").read_text())
    assert len(manifest["requests"]) == 1 and (folder / "README.md").is_file()
    assert not (folder / "_hf_unlearn_saving").exists()


def needs_deepspeed():
    pytest.importorskip("deepspeed")
    if shutil.which(os.environ.get("CXX", "c++")) is None and shutil.which("g++") is None:
        pytest.skip("DeepSpeed compiles its CPU communication extension with a C++ compiler: install g++")


def test_every_registered_method_has_a_case():
    import hf_unlearn

    assert set(hf_unlearn.METHODS) <= set(CASES), sorted(set(hf_unlearn.METHODS) - set(CASES))


@pytest.fixture(scope="module")
def ddp(tmp_path_factory) -> Path:
    return launch(tmp_path_factory.mktemp("ddp"), "ddp", CASES)


@pytest.fixture(scope="module")
def zero3(tmp_path_factory) -> Path:
    needs_deepspeed()
    supported = [c for c in CASES if c not in ZERO3_REFUSED]
    refused = [f"refused:{c}" for c in ZERO3_REFUSED + ZERO3_ONLY_REFUSED]
    return launch(tmp_path_factory.mktemp("zero3"), ZERO3, supported + refused)


@pytest.mark.parametrize("case", CASES)
def test_ddp(ddp, case):
    first, second = ranks(ddp, case)
    assert first["world_size"] == second["world_size"] == 2
    assert_same_losses(first, second, tolerance=0.0)  # logged terms are all-reduced
    # a LoRA adapter the trainer adds starts with lora_B = 0
    start = {k: first["initial"].get(k, 0.0 if "lora_B" in k else v) for k, v in first["checksum"].items()}
    changed = [k for k, v in first["checksum"].items() if abs(v - start[k]) > 1e-6]
    assert changed, "no weight moved"
    assert_saved_weights_are_the_gathered_ones(ddp / case / "model", first["checksum"])
    if case in WITH_RETAIN_DRAWS:
        assert first["retain"] != second["retain"]  # each rank draws its own retain rows
        assert set(first["forget"][:2]).isdisjoint(second["forget"][:2])  # and sees its own forget rows


@pytest.mark.parametrize("case", [c for c in CASES if c not in ZERO3_REFUSED])
def test_zero3_matches_ddp(ddp, zero3, case):
    first, second = ranks(zero3, case)
    assert first["zero_stage"] == second["zero_stage"] == 3 and ranks(ddp, case)[0]["zero_stage"] is None
    assert_same_losses(first, second, tolerance=0.0)
    assert_same_losses(first, ranks(ddp, case)[0])
    ddp_weights = ranks(ddp, case)[0]["checksum"]
    assert all(abs(v - ddp_weights[k]) <= 1e-5 * max(1.0, abs(v)) for k, v in first["checksum"].items())
    assert_saved_weights_are_the_gathered_ones(zero3 / case / "model", first["checksum"])
    # the plain copy `whole_copy` gathers onto rank 0 (what `hf-unlearn run` evaluates) holds the gathered weights
    assert first["whole_copy"] == {"missing": [], "max_difference": 0.0}
    if case in WITH_RETAIN_DRAWS:
        assert first["retain"] == ranks(ddp, case)[0]["retain"] != second["retain"]


@pytest.mark.parametrize("case", ZERO3_REFUSED + ZERO3_ONLY_REFUSED)
def test_zero3_refuses_what_it_cannot_shard(zero3, case):
    for record in ranks(zero3, case):
        assert "cannot run under DeepSpeed ZeRO-3" in record["refused"]
        assert "ZeRO-2" in record["refused"] and "docs/scale.md" in record["refused"]
        if case == "altpo_generate":  # the fix: alternates written beforehand, in the forget rows
            assert "generate_alternates" in record["refused"] and "alternate column" in record["refused"]


@pytest.fixture(scope="module")
def zero2(tmp_path_factory) -> Path:
    needs_deepspeed()
    return launch(tmp_path_factory.mktemp("zero2"), ZERO2, CASES)


@pytest.mark.parametrize("case", CASES)
def test_zero2_matches_ddp(ddp, zero2, case):
    first, second = ranks(zero2, case)
    assert first["zero_stage"] == 2
    assert_same_losses(first, second, tolerance=0.0)
    assert_same_losses(first, ranks(ddp, case)[0])
    assert_saved_weights_are_the_gathered_ones(zero2 / case / "model", first["checksum"])


def test_fsdp_on_cpu_is_refused_not_run_as_ddp(tmp_path):
    out = launch(tmp_path, "fsdp", ["refused:ga"])
    for record in ranks(out, "ga"):
        assert "FSDP was asked for" in record["refused"] and "silently runs plain DDP" in record["refused"]
        assert "ds_zero3.json" in record["refused"]


@pytest.mark.parametrize("config", ["--multi_gpu", "zero3.yaml"])
def test_accelerate_launch_on_cpu(ddp, tmp_path, config):
    """`accelerate launch --multi_gpu --num_processes 2` (gloo on CPU), and with the shipped ZeRO-3 config, runs 2
    processes that match torchrun's DDP."""
    if config.endswith(".yaml"):
        needs_deepspeed()
        options = ["--config_file", str(ROOT / "examples" / "accelerate" / config)]
    else:
        options = [config, "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", *options, "--main_process_port", str(free_port())]
    out = launch(tmp_path, "ddp", ["grad_diff"], launcher=launcher)
    first, second = ranks(out, "grad_diff")
    assert first["world_size"] == 2 and first["zero_stage"] == (3 if config.endswith(".yaml") else None)
    assert_same_losses(first, ranks(ddp, "grad_diff")[0])
    assert first["retain"] == ranks(ddp, "grad_diff")[0]["retain"] != second["retain"]
    assert_saved_weights_are_the_gathered_ones(out / "grad_diff" / "model", first["checksum"])


def test_deepspeed_launcher_on_cpu(ddp, tmp_path):
    """DeepSpeed's own launcher (`deepspeed --num_gpus 2`, which passes `--local_rank=N` to the script) runs 2 CPU
    processes under ZeRO-3 that match torchrun's DDP."""
    needs_deepspeed()
    launcher = [shutil.which("deepspeed", path=os.path.dirname(sys.executable)) or "deepspeed", "--num_gpus", "2",
                "--master_port", str(free_port())]  # fmt: skip
    out = launch(tmp_path, ZERO3, ["npo"], launcher=launcher)
    first, second = ranks(out, "npo")
    assert first["world_size"] == 2 and first["zero_stage"] == second["zero_stage"] == 3
    assert_same_losses(first, ranks(ddp, "npo")[0])
    assert first["retain"] == ranks(ddp, "npo")[0]["retain"] != second["retain"]
    assert_saved_weights_are_the_gathered_ones(out / "npo" / "model", first["checksum"])


def test_two_nodes_simulated_match_one_node(ddp, tmp_path):
    """2 nodes × 1 process (two torchrun launchers on the loopback address) = 1 node × 2 processes: the same losses,
    weights and per-global-rank retain draws."""
    port = free_port()
    launchers = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank",
                                   str(node), "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port",
                                   str(port), str(SCRIPT), str(tmp_path), "ddp", "grad_diff"],
                                  env=environment(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for node in (0, 1)]  # fmt: skip
    for process in launchers:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr.decode()[-4000:]
    nodes, one_node = ranks(tmp_path, "grad_diff"), ranks(ddp, "grad_diff")
    for simulated, reference in zip(nodes, one_node, strict=True):
        assert simulated["retain"] == reference["retain"] and simulated["forget"] == reference["forget"]
    assert nodes[0]["retain"] != nodes[1]["retain"]
    assert_same_losses(nodes[0], one_node[0])
    assert torch.allclose(torch.tensor(list(nodes[0]["checksum"].values())),
                          torch.tensor(list(one_node[0]["checksum"].values())), atol=1e-5)  # fmt: skip


RUN_CONFIG = """method: grad_diff
data: {source: synthetic, num_people: 10, facts_per_person: 2, forget_fraction: 0.2}
unlearn: {max_steps: 2, learning_rate: 0.0002, per_device_train_batch_size: 2, use_cpu: true%s}
output_dir: %s
"""


def run_command(tmp_path: Path, config: str) -> subprocess.CompletedProcess:
    (tmp_path / "run.yaml").write_text(config)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), "-m", "hf_unlearn.cli", "run", str(tmp_path / "run.yaml")]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment(), cwd=ROOT)


def test_hf_unlearn_run_on_two_processes_evaluates_and_writes_once(tmp_path):
    """`torchrun --nproc_per_node 2 -m hf_unlearn.cli run CONFIG`: both processes fine-tune, train the gold model and
    unlearn; the main process alone logs, evaluates and writes the summary."""
    out = tmp_path / "out"
    recipe = ("finetune: {num_train_epochs: 3, learning_rate: 0.001, per_device_train_batch_size: 4, use_cpu: true}\n"
              "gold: true\nevaluate: true\n")  # fmt: skip
    result = run_command(tmp_path, RUN_CONFIG % ("", out) + recipe)
    assert result.returncode == 0, result.stderr[-4000:]
    printed = result.stdout + result.stderr
    assert printed.count("unlearning with GradDiffTrainer") == 1
    assert printed.count("evaluating original, gold and unlearned models") == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["evaluation"]["gold"]["forget_quality"] == 1.0 and summary["global_steps"] == 2
    assert json.loads((out / "eval_results.json").read_text())["forget_quality"] == summary["evaluation"][
        "unlearned"]["forget_quality"]  # fmt: skip
    assert len(json.loads((out / "unlearning_manifest.json").read_text())["requests"]) == 1


def test_hf_unlearn_run_under_zero3_evaluates_the_gathered_model_once(tmp_path):
    """Under ZeRO-3 the run trains the unlearning phase alone (saved whole, as gathered) and evaluates on the main
    process a copy gathered from the shards: the same numbers as one process evaluating the original and the reloaded
    saved model. Asking for a fine-tune or a gold model is refused before anything trains, with the settings that
    work."""
    import yaml
    from transformers import AutoModelForCausalLM

    from hf_unlearn import pipeline

    needs_deepspeed()
    # a fine-tuned model to start from (it answers, so the generation pass has something to score), loaded by the run
    # under ZeRO-3: partitioned at load, and gathered for the original's evaluation
    plan = pipeline.check_run_config(yaml.safe_load(RUN_CONFIG % ("", tmp_path / "single")))
    model, tokenizer = pipeline.load_model(plan.config, plan.forget, plan.retain)
    pipeline.finetune(model, tokenizer, plan.forget + plan.retain, tmp_path / "scratch", num_train_epochs=40,
                      learning_rate=3e-3, per_device_train_batch_size=8, use_cpu=True)  # fmt: skip
    model.save_pretrained(tmp_path / "fine-tuned")
    tokenizer.save_pretrained(tmp_path / "fine-tuned")
    out = tmp_path / "out"
    recipe = (f"model: {tmp_path / 'fine-tuned'}\nfinetune: null\ngold: false\n"
              "evaluate: {limit: 6, max_new_tokens: 12}\n")  # fmt: skip
    result = run_command(tmp_path, RUN_CONFIG % (f", deepspeed: {ZERO3}", out) + recipe)
    assert result.returncode == 0, result.stderr[-4000:]
    reloaded = reload(out)
    assert sum(t.numel() for t in reloaded.values()) > 300_000  # whole tensors, not ZeRO-3's empty placeholders
    summary = json.loads((out / "summary.json").read_text())
    assert summary["before"] is None and (result.stdout + result.stderr).count("evaluating original") == 1

    # one process, no engine: the original and the saved model as a fresh process loads them
    plan = pipeline.check_run_config(yaml.safe_load(RUN_CONFIG % ("", tmp_path / "single") + recipe))
    original, unlearned = (AutoModelForCausalLM.from_pretrained(folder) for folder in (tmp_path / "fine-tuned", out))
    single = pipeline._evaluate_suite(plan.config, original, None, unlearned, tokenizer, plan.forget, plan.retain,
                                      lambda *_: None)  # fmt: skip
    assert single["original"]["forget_rouge"] > 0.5  # it answers: the generation pass is compared on real answers
    for name in ("original", "unlearned"):
        numbers = pipeline.flat_numbers(single[name])
        assert numbers.keys() == summary["evaluation"][name].keys()
        for key, value in numbers.items():
            assert abs(summary["evaluation"][name][key] - value) <= 1e-5 * max(1.0, abs(value)), (name, key)
    assert summary["evaluation"]["unlearned"] != summary["evaluation"]["original"]

    bad = tmp_path / "bad"
    (tmp_path / "bad").mkdir()
    refused = run_command(bad, RUN_CONFIG % (f", deepspeed: {ZERO3}", bad / "out") + "gold: true\nevaluate: true\n")
    assert refused.returncode != 0
    assert "under DeepSpeed ZeRO-3, `hf-unlearn run` trains the unlearning phase only" in refused.stderr
    assert "finetune: null, gold: false" in refused.stderr and not (bad / "out").exists()
