"""A 2-process CPU run (torchrun, gloo) finishes, the two ranks draw different retain examples, and in-training
evaluation, computed once by the main process, stops both ranks at the same step."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent / "scripts" / "ddp_pairing.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_pairing(folder: Path, *engine: str) -> list[dict]:
    """`ddp_pairing.py` on 2 processes (DDP, or DeepSpeed with `engine` a JSON); each rank's record."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), str(SCRIPT), str(folder), *engine]  # fmt: skip
    # the launched processes import this checkout's hf_unlearn (not whichever one the venv's editable install names)
    paths = [str(SCRIPT.parents[2]), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in paths if path), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads((folder / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_two_process_run_draws_different_retain_examples(tmp_path):
    ranks = run_pairing(tmp_path)
    assert [r["world_size"] for r in ranks] == [2, 2]
    # 8 forget examples, batch 2 per rank: one epoch is 2 steps, in which each rank sees its own half of the forget set
    first_epoch = [set(r["forget"][:4]) for r in ranks]
    assert first_epoch[0].isdisjoint(first_epoch[1]) and first_epoch[0] | first_epoch[1] == set(range(8))
    assert ranks[0]["retain"] != ranks[1]["retain"]
    assert ranks[0]["checksum"] == ranks[1]["checksum"]  # DDP keeps the replicas in step
    assert ranks[0]["terms"] == ranks[1]["terms"] and len(ranks[0]["terms"]) == 2  # logged terms are all-reduced
    # the evaluation callback ran on both ranks, agreed, and stopped both at its first evaluation
    assert ranks[0]["chosen_step"] == ranks[1]["chosen_step"] == 2
    assert ranks[0]["history"] == ranks[1]["history"] and len(ranks[0]["history"]) == 1
    assert [r["computed"] for r in ranks] == [1, 0]  # the main process evaluated, once; the other received it
    assert (tmp_path / "checkpoint-2").is_dir() and (tmp_path / "unlearning_eval.json").is_file()


def test_evaluation_callback_under_zero3_computes_once_on_a_gathered_copy(tmp_path):
    """Under ZeRO-3 the callback's metrics come from a whole copy gathered onto the main process, computed there once
    and sent to the other: the same numbers as under DDP, and the same stop."""
    from test_engines import ZERO3, needs_deepspeed

    needs_deepspeed()
    ddp, zero3 = run_pairing(tmp_path / "ddp")[0], run_pairing(tmp_path / "zero3", ZERO3)
    assert [r["computed"] for r in zero3] == [1, 0] and zero3[0]["history"] == zero3[1]["history"]
    assert zero3[0]["chosen_step"] == zero3[1]["chosen_step"] == ddp["chosen_step"] == 2
    (ours,), (theirs,) = zero3[0]["history"], ddp["history"]
    assert ours.keys() == theirs.keys() and len(ours) > 3
    assert all(abs(ours[k] - theirs[k]) <= 1e-5 * max(1.0, abs(theirs[k])) for k in ours), (ours, theirs)
