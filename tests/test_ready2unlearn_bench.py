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
    assert bench.grid_entry("query_batch=true,lambda1=0.3") == {"query_batch": True, "lambda1": 0.3}
    assert bench.grid_entry("query_batch=False") == {"query_batch": False}
    with pytest.raises(argparse.ArgumentTypeError, match="'maybe' is not a boolean: use true or false"):
        bench.grid_entry("query_batch=maybe")


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


def test_tofu_default_grid_is_the_documented_one():
    """`python bench/ready2unlearn.py --setting tofu` (no --grid) tries the candidates of the --grid command that made
    the TOFU table in docs/results.md, in its order, so either command reproduces it."""
    shared = "alpha_re=0.2,relearn_steps=4,relearn_max_grad_norm=1.0,query_batch=true,lambda3=1.0,unlearn_rise=true"
    documented = [bench.grid_entry(f"{entry},{shared}")
                  for entry in ("alpha_in=0.1,lambda1=1.0", "alpha_in=0.1,lambda1=2.0", "alpha_in=0.3,lambda1=1.0")]
    tofu = bench.Tofu.__new__(bench.Tofu)
    flags = {bench.FLAG.get(n, n): None for n in bench.PREPARATION}
    default = tofu.candidates(argparse.Namespace(grid=None, **flags))
    assert default == tofu.candidates(argparse.Namespace(grid=documented, **flags))
    assert [(c["alpha_in"], c["lambda1"], c["query_batch"], c["unlearn_rise"]) for c in default] == [
        (0.1, 1.0, True, True), (0.1, 2.0, True, True), (0.3, 1.0, True, True)]


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


class Stub(bench.Setting):
    """Two candidates; `train` and `evaluate` are replaced in the tests below, so no model is built."""

    name, metric_name, task_name, utility_name = "stub", "forget probability", "retain probability", "utility"
    relearn_lr, target = (0.05, 0.2), 0.05

    def __init__(self, has_validation):
        self.has_validation, self.splits = has_validation, []

    def candidates(self, args):
        return [{**bench.Tofu.preparation, "lambda3": 0.3}, {**bench.Tofu.preparation, "lambda3": 1.0}]

    def use_split(self, split):
        self.splits.append(split)

    def describe(self):
        return "stub rows"

    def unlearn_args(self, args):
        return {"learning_rate": 0.01}


def stub_run(monkeypatch, has_validation, seed=0, select_seed=1, step_seeds=None):
    """Runs `run_setting` with a fake `train` (the model is a record of its settings and training seed) and a fake
    `evaluate` in which the λ3 1.0 candidate needs 5 GA steps at training seed 1 and 30 at any other seed (λ3 0.3:
    15 everywhere, the normal model 20): the choice shows which seed it was made on."""
    trained, evaluated = [], []

    def train(setting, preparation, args, workdir, seed=None):
        model = {"seed": args.seed if seed is None else seed, "prep": preparation and preparation["lambda3"]}
        trained.append(dict(model))
        return model, 1.0

    def evaluate(setting, model, args, workdir, seed=None):
        evaluated.append((dict(model), args.seed if seed is None else seed))
        steps = 20 if model["prep"] is None else 15 if model["prep"] == 0.3 else 5 if model["seed"] == 1 else 30
        return {"task": 0.5, "forget_before": 0.5, "steps": steps, "forget_after": 0.04, "utility": 0.5,
                "recovered": {0.05: 0.3, 0.2: 0.3}, "model": model}  # fmt: skip

    monkeypatch.setattr(bench, "train", train)
    monkeypatch.setattr(bench, "evaluate", evaluate)
    setting = Stub(has_validation)
    args = SimpleNamespace(seed=seed, select_seed=select_seed, task_seeds=None, step_seeds=step_seeds, relearn_lr=None)
    return setting, args, bench.run_setting(setting, args, log=lambda *a: None), trained, evaluated


def test_tofu_chooses_on_the_select_seed_and_reports_models_trained_at_the_seed(monkeypatch):
    setting, args, results, trained, evaluated = stub_run(monkeypatch, has_validation=False)
    # the normal model and both candidates at seed 1, then the normal and the chosen one anew at seed 0
    assert trained == [{"seed": 1, "prep": None}, {"seed": 1, "prep": 0.3},
                       {"seed": 1, "prep": 1.0}, {"seed": 0, "prep": None},
                       {"seed": 0, "prep": 1.0}]  # fmt: skip
    # selection models evaluated with GA / relearning at seed 1, the reported ones at seed 0
    assert [(m["seed"], s) for m, s in evaluated] == [(1, 1)] * 3 + [(0, 0)] * 2
    assert results["chosen"] == 1 and results["select_seed"] == 1  # 5 steps at seed 1 (half of 20); 30 at seed 0
    assert results["validation"][1]["steps"] == 5
    assert results["normal"]["model"] == {"seed": 0, "prep": None}
    assert results["prepared"]["model"] == {"seed": 0, "prep": 1.0}
    assert results["prepared"]["steps"] == 30  # the reported figure, not the selection's
    assert setting.splits == []  # no validation split used
    text = bench.section(setting, results, SimpleNamespace(**vars(args), relearn_steps=10, relearn_optim="sgd",
                                                           relearn_max_grad_norm=1.0, max_unlearn_steps=300),
                         "cmd")  # fmt: skip
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
    assert not ok and detail == "a model did not reach the target within the step budget (22 / None vs 38 / 22)"


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
