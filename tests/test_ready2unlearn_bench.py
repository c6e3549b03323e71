"""`bench/ready2unlearn.py`: the targets' verdicts (the 1-point task rule over training seeds), the choice on
validation, `--grid` parsing and the attack's gradient clipping, on stand-ins (no model is trained here)."""

import argparse
from types import SimpleNamespace

import pytest
import ready2unlearn as bench
import torch


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
    assert len(found) == 5 and found[-1][0].startswith("task performance")  # `choose` counts found[:-1]
    # none admissible (both more than 1 point below the normal model): all compete, the most targets met wins
    validation[0]["task"], validation[1]["task"] = 0.9, 0.9
    assert bench.choose(validation) == 0


def test_grid_entries_parse_each_field_with_its_type():
    entry = bench.grid_entry("lambda3=0.5,relearn_steps=4,relearn_max_grad_norm=1.0,meta_order=second")
    assert entry == {"lambda3": 0.5, "relearn_steps": 4, "relearn_max_grad_norm": 1.0, "meta_order": "second"}
    assert type(entry["relearn_steps"]) is int and type(entry["relearn_max_grad_norm"]) is float
    with pytest.raises(argparse.ArgumentTypeError, match="'max_grad_norm=1.0': use name=value"):
        bench.grid_entry("max_grad_norm=1.0")
    with pytest.raises(ValueError):
        bench.grid_entry("lambda3=none")
    assert bench.grid_entry("query_batch=true,lambda1=0.3") == {"query_batch": True, "lambda1": 0.3}
    assert bench.grid_entry("query_batch=False") == {"query_batch": False}
    with pytest.raises(argparse.ArgumentTypeError, match="'maybe' is not a boolean: use true or false"):
        bench.grid_entry("query_batch=maybe")


def test_attack_relearns_with_sgd_clipped_as_trainer_does(monkeypatch):
    """Each relearning attack is `common.train` from the unlearned weights: 10 SGD steps, gradient norm clipped at
    1.0 (Trainer's default), at the evaluation's seed. The model starts at the target here, so no GA runs."""
    seen = []
    monkeypatch.setattr(bench.common, "train", lambda model, rows, **options: seen.append(options))
    setting = SimpleNamespace(recovery=[{"pixel_values": [0.0], "labels": 0}], tokenizer=None, max_length=512, pad=0,
                              relearn_lr=(0.005, 0.02), target=0.5, test=[], forget_rows=[], utility_rows=[],
                              metric=lambda model, rows: 0.25)  # fmt: skip
    row = bench.evaluate(setting, torch.nn.Linear(1, 1), seed=3)
    assert row["steps"] == 0 and row["recovered"] == {0.005: 0.25, 0.02: 0.25}
    assert [(o["learning_rate"], o["optim"], o["max_steps"], o["max_grad_norm"], o["seed"]) for o in seen] == [
        (0.005, "sgd", 10, 1.0, 3), (0.02, "sgd", 10, 1.0, 3)]  # fmt: skip


class Stub(bench.Setting):
    """Two candidates; `train` and `evaluate` are replaced in the tests below, so no model is built."""

    name, metric_name, task_name, utility_name = "stub", "forget probability", "retain probability", "utility"
    relearn_lr, target, unlearn_lr, data = (0.05, 0.2), 0.05, 0.01, "stub rows"
    preparation, grid = bench.Tofu.preparation, ({"lambda3": 0.3}, {"lambda3": 1.0})

    def __init__(self, has_validation):
        self.has_validation, self.splits = has_validation, []

    def use_split(self, split):
        if self.has_validation:
            self.splits.append(split)


def stub_run(monkeypatch, has_validation, seed=0, select_seed=1, step_seeds=None):
    """Runs `run_setting` with a fake `train` (the model is a record of its settings and training seed) and a fake
    `evaluate` in which the λ3 1.0 candidate needs 5 GA steps at training seed 1 and 30 at any other seed (λ3 0.3:
    15 everywhere, the normal model 20): the choice shows which seed it was made on."""
    trained, evaluated = [], []

    def train(setting, preparation, seed):
        model = {"seed": seed, "prep": preparation and preparation["lambda3"]}
        trained.append(dict(model))
        return model, 1.0

    def evaluate(setting, model, seed):
        evaluated.append((dict(model), seed))
        steps = 20 if model["prep"] is None else 15 if model["prep"] == 0.3 else 5 if model["seed"] == 1 else 30
        return {"task": 0.5, "forget_before": 0.5, "steps": steps, "forget_after": 0.04, "utility": 0.5,
                "recovered": {0.05: 0.3, 0.2: 0.3}, "model": model}  # fmt: skip

    monkeypatch.setattr(bench, "train", train)
    monkeypatch.setattr(bench, "evaluate", evaluate)
    setting = Stub(has_validation)
    args = SimpleNamespace(seed=seed, select_seed=select_seed, task_seeds=[], step_seeds=step_seeds or [], grid=None)
    return setting, args, bench.run_setting(setting, args), trained, evaluated


def test_tofu_chooses_on_the_select_seed_and_reports_models_trained_at_the_seed(monkeypatch):
    setting, args, results, trained, evaluated = stub_run(monkeypatch, has_validation=False)
    # the normal model and both candidates at seed 1, then the normal and the chosen one anew at seed 0
    assert trained == [{"seed": 1, "prep": None}, {"seed": 1, "prep": 0.3},
                       {"seed": 1, "prep": 1.0}, {"seed": 0, "prep": None},
                       {"seed": 0, "prep": 1.0}]  # fmt: skip
    # selection models evaluated with GA / relearning at seed 1, the reported ones at seed 0
    assert [(m["seed"], s) for m, s in evaluated] == [(1, 1)] * 3 + [(0, 0)] * 2
    assert [c["lambda3"] for c in results["candidates"]] == [0.3, 1.0]
    assert results["chosen"] == 1 and results["select_seed"] == 1  # 5 steps at seed 1 (half of 20); 30 at seed 0
    assert results["validation"][1]["steps"] == 5
    assert results["normal"]["model"] == {"seed": 0, "prep": None}
    assert results["prepared"]["model"] == {"seed": 0, "prep": 1.0}
    assert results["prepared"]["steps"] == 30  # the reported figure, not the selection's
    assert setting.splits == []  # no validation split used
    text = bench.section(setting, results, args, "cmd")
    assert "Choosing the settings on training seed 1 (" in text
    assert "| 1 (chosen) | 1.0 | 0.5000 | 0.5000 | 5 |" in text
    assert "trained anew at training seed 0 (reported only; not seen by the choice)" in text
    assert "| prepared | 0.5000 | 0.5000 | 30 |" in text


def test_tofu_refuses_to_choose_on_the_reported_seed(monkeypatch):
    with pytest.raises(ValueError, match="--select-seed must differ from --seed"):
        stub_run(monkeypatch, has_validation=False, seed=1, select_seed=1)


def test_digits_chooses_on_validation_and_reports_the_same_models(monkeypatch):
    """The validation-split protocol: every model trained once at --seed (--select-seed unused), the choice made on
    the validation split, the same normal and chosen models reported on the test split."""
    setting, _, results, trained, evaluated = stub_run(monkeypatch, has_validation=True, seed=1, select_seed=7)
    assert [m["seed"] for m in trained] == [1, 1, 1]
    assert setting.splits == ["validation", "test"]
    assert results["select_seed"] is None and results["chosen"] == 1
    assert results["prepared"]["model"] == {"seed": 1, "prep": 1.0}
    assert [s for _, s in evaluated] == [1] * 5


def test_step_rule_over_seeds_is_judged_on_the_mean():
    """Seed 0 alone: 22 vs 38 GA steps, more than half (NOT met). Over seeds 0 and 1: prepared (22 + 8) / 2 = 15.0,
    normal (38 + 22) / 2 = 30.0: exactly half (met). A model that never reached the target fails the rule."""
    results = {"normal": result(0.2, steps=38), "prepared": result(0.2, steps=22),
               "step_seeds": {"normal": {0: 38, 1: 22}, "prepared": {0: 22, 1: 8}}}  # fmt: skip
    found = {name: (ok, detail) for name, ok, detail in bench.verdicts(results)}
    assert found["at most half the unlearning steps"] == (False, "22 vs 38")
    assert found["at most half the unlearning steps, mean over training seeds 0, 1"] == (
        True, "mean 15.0 (22 / 8) vs 30.0 (38 / 22)")  # fmt: skip
    results["step_seeds"]["prepared"][1] = 9  # mean 15.5 > 15.0
    assert not bench.verdicts(results)[-1][1]
    results["step_seeds"]["prepared"][1] = None
    ok, detail = bench.verdicts(results)[-1][1:]
    assert not ok and detail == "mean inf (22 / None) vs 30.0 (38 / 22)"  # never reached: inf steps


def test_step_seeds_train_unlearn_and_relearn_the_chosen_settings_at_each_seed(monkeypatch):
    """`--step-seeds 0 2`: seed 0 reuses the reported models; seed 2 trains the normal and the chosen (λ3 1.0) model
    anew and puts both through GA at that seed (the stub: 20 and 30 steps), so the mean rule is NOT met."""
    _, _, results, trained, evaluated = stub_run(monkeypatch, has_validation=False, step_seeds=[0, 2])
    assert trained[-2:] == [{"seed": 2, "prep": None}, {"seed": 2, "prep": 1.0}]
    assert [(m["seed"], s) for m, s in evaluated][-2:] == [(2, 2), (2, 2)]
    assert results["step_seeds"] == {"normal": {0: 20, 2: 20}, "prepared": {0: 30, 2: 30}}
    name, ok, detail = bench.verdicts(results)[-1]
    assert name == "at most half the unlearning steps, mean over training seeds 0, 2"
    assert not ok and detail == "mean 30.0 (30 / 30) vs 20.0 (20 / 20)"
