"""`bench/ready2unlearn.py`: the targets' verdicts (the 1-point task rule over training seeds), the choice on
validation, `--grid` parsing and the attack's gradient clipping, on stand-ins (no model is trained here)."""

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import ready2unlearn as bench  # noqa: E402


def result(task, steps=10, utility=0.8, recovered=(0.3, 0.9)):
    return {"task": task, "forget_before": 1.0, "steps": steps, "utility": utility,
            "recovered": dict(zip((0.005, 0.02), recovered, strict=True))}  # fmt: skip


def test_task_rule_over_seeds_is_judged_on_the_mean():
    """Seed 0 alone: 0.9400 vs 0.9525 is 1.25 points worse (NOT met). Over seeds 0, 1, 2: prepared mean
    (0.94 + 0.955 + 0.9525) / 3 = 0.949167, normal mean (0.9525 + 0.95 + 0.955) / 3 = 0.9525: 0.33 points (met).
    Sample standard deviations: normal: deviations 0, −0.0025, +0.0025 -> sqrt(0.0000125 / 2) = 0.0025; prepared:
    deviations −0.009167, +0.005833, +0.003333 -> sqrt((0.00008403 + 0.00003403 + 0.00001111) / 2) = 0.0080."""
    results = {"normal": result(0.9525), "prepared": result(0.94),
               "task_seeds": {"normal": {0: 0.9525, 1: 0.95, 2: 0.955},
                              "prepared": {0: 0.94, 1: 0.955, 2: 0.9525}}}  # fmt: skip
    found = {name: (ok, detail) for name, ok, detail in bench.verdicts(results)}
    single = "task performance within 1 point of normal training (not more than 1 point worse)"
    assert found[single] == (False, "0.9400 vs 0.9525")
    seeds = "task performance within 1 point of normal training, mean over training seeds 0, 1, 2 (not more than 1 " \
            "point worse)"  # fmt: skip
    ok, detail = found[seeds]
    assert ok
    assert detail == "0.9492 ± 0.0080 (0.9400 / 0.9550 / 0.9525) vs 0.9525 ± 0.0025 (0.9525 / 0.9500 / 0.9550)"
    # a mean 1.5 points worse fails
    results["task_seeds"]["prepared"] = {0: 0.94, 1: 0.935, 2: 0.9375}
    assert not {name: ok for name, ok, _ in bench.verdicts(results)}[seeds]


def test_choice_counts_only_the_comparative_targets():
    """Candidate 0 meets all four comparative targets and is admissible; candidate 1 is admissible too, meets three
    (more recovery at lr 0.02). The task rows of `verdicts` never count toward 'targets met'."""
    validation = {"normal": result(0.975, steps=60, utility=0.7, recovered=(0.5, 0.96)),
                  0: result(0.97, steps=10, utility=0.75, recovered=(0.25, 0.95)),
                  1: result(0.975, steps=5, utility=0.9, recovered=(0.25, 0.97))}  # fmt: skip
    assert bench.choose(validation) == 0
    found = bench.verdicts({"normal": validation["normal"], "prepared": validation[1]})
    assert len(bench.comparative(found)) == 4 and len(found) == 5


def test_grid_entries_parse_clipping_and_none():
    entry = bench.grid_entry("lambda3=0.5,relearn_steps=4,relearn_max_grad_norm=1.0")
    assert entry == {"lambda3": 0.5, "relearn_steps": 4, "relearn_max_grad_norm": 1.0}
    assert bench.grid_entry("relearn_max_grad_norm=none") == {"relearn_max_grad_norm": None}
    with pytest.raises(argparse.ArgumentTypeError, match="'max_grad_norm=1.0': use name=value"):
        bench.grid_entry("max_grad_norm=1.0")
    with pytest.raises(ValueError):
        bench.grid_entry("lambda3=none")  # only optional fields take none


def test_candidates_take_the_simulated_clipping_from_its_own_flag():
    """`--simulated-relearn-max-grad-norm` sets the config field; `--relearn-max-grad-norm` is the attack's."""
    args = argparse.Namespace(grid=[{"lambda3": 0.5}], relearn_max_grad_norm=1.0,
                              **{bench.FLAG.get(n, n): None for n in bench.PREPARATION})  # fmt: skip
    args.simulated_relearn_max_grad_norm = 0.5
    digits = bench.Digits.__new__(bench.Digits)
    (candidate,) = digits.candidates(args)
    assert candidate["relearn_max_grad_norm"] == 0.5 and candidate["lambda3"] == 0.5
    args.simulated_relearn_max_grad_norm = None
    assert digits.candidates(args)[0]["relearn_max_grad_norm"] is None  # the paper's plain steps by default


def test_attack_clips_at_the_given_norm(monkeypatch, tmp_path):
    """`relearn` hands `--relearn-max-grad-norm` to the attacker's TrainingArguments (the default 1.0 is Trainer's)."""
    seen = []

    class FakeTrainer:
        def __init__(self, model, args, train_dataset, data_collator):
            seen.append(args.max_grad_norm)

        def train(self):
            pass

    monkeypatch.setattr(bench, "Trainer", FakeTrainer)
    setting = SimpleNamespace(recovery=[{"pixel_values": [0.0], "labels": 0}], tokenizer=None)
    for norm in (1.0, 0.0):
        args = SimpleNamespace(seed=0, relearn_steps=2, relearn_optim="sgd", relearn_max_grad_norm=norm)
        bench.relearn(setting, None, args, 0.02, tmp_path)
    assert seen == [1.0, 0.0]
