"""Ready2Unlearn vs normal training: later gradient-ascent unlearning steps, utility after it, and relearning.

Two settings, each training one model normally (`transformers.Trainer`) and one with `Ready2UnlearnTrainer` on the same
data, seed and schedule, then unlearning the revocable group from both with the same `ga` run:

- `digits`: a tiny ViT (`build_tiny_image_classifier`) on scikit-learn's handwritten digits; the revocable group is
  one class (`--revocable class`) or a random 10% of the training rows (`--revocable random`). Forget metric: accuracy
  on the revocable rows; utility: test accuracy on the other classes (class) or on all classes (random); recovery data:
  held-out rows of the revocable class (class) or held-out rows (random), never trained on. 200 validation rows are
  carved out of the training data: one prepared model is trained per candidate of `Digits.grid` (or of the
  command's `--grid`), `choose` picks one on the validation split (the same rule for both groups), and the test split
  only reports the normal and the chosen model.
- `tofu`: a tiny Llama built from a config, with a byte-level BPE tokenizer trained on the data, on TOFU (real data
  from `../shared/data/tofu`); the revocable group is the forget10 authors (400 rows) and the rest of the training
  data a subset of retain90 (`--tofu-retain`, so it runs in minutes on a CPU). Forget metric: mean answer probability
  on forget10; utility: mean answer probability on the trained retain rows; recovery data: forget10's paraphrased
  answers (the same facts said another way). With no held-out rows of the revocable group, the settings are chosen at
  another training seed: a normal model and one prepared model per candidate of `Tofu.grid` are trained at
  `--select-seed` (1) and evaluated as below, `choose` picks one, and only a normal and the chosen model trained anew
  at `--seed` (0) are reported.

Per model it reports: ordinary task performance before unlearning, gradient-ascent steps until the forget metric
reaches the target (`--*-target`), utility after unlearning, and the forget metric after `--relearn-steps` steps of
fine-tuning on the recovery data. Targets (issue 8): at most half the unlearning steps, equal or better utility, less
recovery, and task performance within 1 point of normal training. The table goes to `docs/results.md` between
`<!-- ready2unlearn:begin -->` and `<!-- ready2unlearn:end -->`.

    python bench/ready2unlearn.py                       # both settings
    python bench/ready2unlearn.py --setting digits --revocable random
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_doc import write_section  # noqa: E402  (bench/results_doc.py)

from hf_unlearn import METHODS, Ready2UnlearnConfig, Ready2UnlearnTrainer  # noqa: E402
from hf_unlearn.data import UnlearningCollator, load_digits_rows, load_tofu, prepare_dataset  # noqa: E402
from hf_unlearn.evaluation import answer_stats  # noqa: E402
from hf_unlearn.evaluation.classifier import accuracy_and_macro_f1, classifier_outputs  # noqa: E402

PREPARATION = ("alpha_in", "alpha_re", "lambda1", "lambda2", "lambda3", "meta_every", "meta_batch_size",
               "revocable_loss_cap", "inner_steps", "relearn_steps", "relearn_max_grad_norm", "meta_order",
               "query_batch", "unlearn_rise")
# Command-line names of the config fields whose own name is taken by another flag (--relearn-steps and
# --relearn-max-grad-norm: the attack's).
NULLABLE = ("meta_batch_size", "revocable_loss_cap", "relearn_max_grad_norm")  # None: the config's default meaning
FLAG = {"relearn_steps": "simulated_relearn_steps", "relearn_max_grad_norm": "simulated_relearn_max_grad_norm"}
QUIET = {"report_to": "none", "save_strategy": "no", "disable_tqdm": True, "logging_strategy": "no", "use_cpu": True}


def accuracy(model, rows) -> float:
    out = classifier_outputs(model, rows, batch_size=256)
    return accuracy_and_macro_f1(out["logits"], out["labels"])["accuracy"]


class StopAtTarget(TrainerCallback):
    """After every optimizer step, measures the forget metric and stops once it is at or below the target."""

    def __init__(self, metric, target: float):
        self.metric, self.target, self.reached_at = metric, target, None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.metric(model) <= self.target:
            self.reached_at = state.global_step
            control.should_training_stop = True


class Setting:
    """The data, model and metrics of one benchmark setting (`digits` or `tofu`)."""

    has_validation = False  # True: the settings are chosen on a validation split, else on training seed --select-seed

    name: str
    metric_name: str
    utility_name: str
    task_name: str
    tokenizer = None
    preparation: dict = {}

    grid: tuple[dict, ...] = ({},)

    def candidates(self, args) -> list[dict]:
        """The Ready2UnlearnConfig values to try: the setting's defaults updated by each `grid` entry, then by the
        command line (a value given there holds for every candidate); duplicates dropped. `--grid` replaces the
        setting's grid."""
        found = []
        for entry in getattr(args, "grid", None) or self.grid:
            values = {**self.preparation, **entry}
            given = {name: getattr(args, FLAG.get(name, name)) for name in PREPARATION}
            values.update({name: value for name, value in given.items() if value is not None})
            if values not in found:
                found.append(values)
        return found

    def relearn_lrs(self, args) -> list[float]:
        return list(args.relearn_lr or self.relearn_lr)

    def train_args(self, args) -> dict:
        raise NotImplementedError

    def build_model(self, seed: int):
        raise NotImplementedError


class Digits(Setting):
    has_validation = True
    metric_name = "forget accuracy"
    # The grid's centre; one candidate per `grid` entry is trained and the one to report is chosen on the validation
    # split by `choose` (the same rule for both revocable groups). The test split only reports.
    preparation = {"alpha_in": 0.002, "alpha_re": 0.005, "lambda1": 0.1, "lambda2": 1.0, "lambda3": 0.3,
                   "meta_every": 4, "meta_batch_size": 32, "revocable_loss_cap": None, "inner_steps": 1,
                   "relearn_steps": 1, "relearn_max_grad_norm": None, "meta_order": "first",
                   "query_batch": False, "unlearn_rise": False}  # fmt: skip
    grid = tuple({"lambda1": lambda1, "lambda3": lambda3} for lambda1 in (0.1, 0.3) for lambda3 in (0.3, 0.5, 1.0))
    relearn_lr = (0.005, 0.02)

    def __init__(self, args):
        self.name = f"digits ({'one class' if args.revocable == 'class' else 'random 10%'})"
        rows = load_digits_rows()
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(args.seed)).tolist()
        rows = [rows[i] for i in order]
        # 400 test rows (reported only), 150 held-out rows (recovery data), 200 validation rows (the Ready2Unlearn
        # settings are chosen on them), the rest trained on.
        self.splits = {"test": rows[:400], "validation": rows[550:750]}
        pool, self.train = rows[400:550], rows[750:]
        self.by_class = args.revocable == "class"
        if self.by_class:
            self.revocable = [r for r in self.train if r["labels"] == args.revocable_class]
            self.recovery = [r for r in pool if r["labels"] == args.revocable_class]
        else:
            pick = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(args.seed + 1))
            self.revocable = [self.train[i] for i in sorted(pick[: len(self.train) // 10].tolist())]
            self.recovery = pool[: len(self.revocable)]
        self.args = args
        self.use_split("test")

    def use_split(self, split: str) -> None:
        """Measure task performance, utility and (random 10%) the target on the `validation` or `test` rows."""
        self.split, self.test = split, self.splits[split]
        if self.by_class:
            self.utility_rows = [r for r in self.test if r["labels"] != self.args.revocable_class]
            self.utility_name = f"{split} accuracy (other classes)"
        else:
            self.utility_rows = self.test
            self.utility_name = f"{split} accuracy"
        self.task_name = f"{split} accuracy"
        # A random 10% is forgotten once it looks like unseen data: the normal model's accuracy on this split (set
        # after it is trained), unless --digits-target says otherwise.
        given = self.by_class or self.args.digits_target_given
        self.target = self.args.digits_target if given else None

    def describe(self) -> str:
        return (f"{len(self.train)} training rows ({len(self.revocable)} revocable), "
                f"{len(self.splits['validation'])} validation rows (settings are chosen on them), "
                f"{len(self.splits['test'])} test rows (reported only), {len(self.recovery)} recovery rows never "
                "trained on")  # fmt: skip

    def build_model(self, seed):
        from hf_unlearn.synthetic import build_tiny_image_classifier

        return build_tiny_image_classifier(hidden_size=self.args.digits_hidden, num_layers=2, seed=seed)

    def train_args(self, args):
        return {"num_train_epochs": args.digits_epochs, "learning_rate": args.digits_lr,
                "per_device_train_batch_size": 32, "warmup_steps": 10}  # fmt: skip

    def unlearn_args(self, args):
        return {"learning_rate": args.digits_unlearn_lr, "per_device_train_batch_size": 32}

    def forget_metric(self, model):
        return accuracy(model, self.revocable)

    def task_metric(self, model):
        return accuracy(model, self.test)

    def utility(self, model):
        return accuracy(model, self.utility_rows)


class Tofu(Setting):
    # Set by analogy with digits, without a search (CPU time): α_in ≈ half the normal model's GA path (GA at 0.05 took
    # 6 steps), and the ascent terms capped at −log(target probability) = −log 0.05 ≈ 3.0, not log(vocabulary).
    preparation = {"alpha_in": 0.1, "alpha_re": 0.05, "lambda1": 0.1, "lambda2": 1.0, "lambda3": 0.3,
                   "meta_every": 4, "meta_batch_size": 16, "revocable_loss_cap": 3.0, "inner_steps": 1,
                   "relearn_steps": 1, "relearn_max_grad_norm": None, "meta_order": "first",
                   "query_batch": False, "unlearn_rise": False}  # fmt: skip
    # One candidate per entry, chosen by `choose` at training seed --select-seed (TOFU has no held-out split of the
    # revocable group); the reported models are trained at --seed. Every entry simulates an attacker like the real one
    # (α_re 0.2, 4 steps, gradient norm clipped at 1.0 as Trainer's max_grad_norm) with λ3 1.0, and measures the λ1
    # term as the rise of ℓ(D_rev) on a query batch disjoint from the simulated ascent's (`unlearn_rise`,
    # `query_batch`); they differ in the simulated step α_in and in λ1. Earlier default grids (the level of ℓ(D_rev)
    # on the ascent's own batch; α_in 0.03-0.2, λ1 0.1-1.0, first or second order) cut the GA steps by at most about
    # 28% on the mean over training seeds, or only by learning the revocable group less; docs/results.md lists them.
    grid = tuple({"alpha_in": alpha_in, "lambda1": lambda1, "lambda3": 1.0, "alpha_re": 0.2, "relearn_steps": 4,
                  "relearn_max_grad_norm": 1.0, "query_batch": True, "unlearn_rise": True}
                 for alpha_in, lambda1 in ((0.1, 1.0), (0.1, 2.0), (0.3, 1.0)))  # fmt: skip
    relearn_lr = (0.05, 0.2)
    metric_name = "forget probability"
    utility_name = "retain probability"
    task_name = "retain probability"

    def __init__(self, args):
        from hf_unlearn.synthetic import train_tokenizer

        self.name = "TOFU forget10 (tiny Llama)"
        path = args.tofu_path
        forget = [dict(r) for r in load_tofu("forget10", path)]
        retain = [dict(r) for r in load_tofu("retain90", path)]
        retain = retain[:: max(1, len(retain) // args.tofu_retain)][: args.tofu_retain]  # every k-th: all authors
        paraphrased = [dict(r) for r in load_tofu("forget10_perturbed", path)]
        self.revocable_raw = [{"question": r["question"], "answer": r["answer"]} for r in forget]
        self.retain_raw = [{"question": r["question"], "answer": r["answer"]} for r in retain]
        self.recovery_raw = [{"question": r["question"], "answer": r["paraphrased_answer"]} for r in paraphrased]
        # Trained on the retain rows only, so the vocabulary carries no strings learned from the revocable group.
        self.tokenizer = train_tokenizer([f"{r['question']} {r['answer']}" for r in self.retain_raw], vocab_size=1000)
        prep = {"tokenizer": self.tokenizer, "prompt_template": "Question: {question}\nAnswer:",
                "max_length": args.tofu_max_length}  # fmt: skip
        self.revocable = prepare_dataset(self.revocable_raw, "forget10", **prep)
        self.retain_rows = prepare_dataset(self.retain_raw, "retain", **prep)
        self.train = self.revocable_raw + self.retain_raw
        self.recovery = self.recovery_raw
        self.target = args.tofu_target
        self.args = args

    def describe(self) -> str:
        return (f"{len(self.train)} training rows: all {len(self.revocable_raw)} forget10 rows (revocable) and "
                f"{len(self.retain_raw)} of retain90's 3,600 rows (every k-th, a subset so it runs on a CPU); answers "
                f"truncated to {self.args.tofu_max_length} tokens; recovery data: forget10's "
                f"{len(self.recovery_raw)} paraphrased answers")  # fmt: skip

    def build_model(self, seed):
        from hf_unlearn.synthetic import build_tiny_causal_lm

        return build_tiny_causal_lm(self.tokenizer, hidden_size=64, num_layers=2, num_heads=2,
                                    max_position_embeddings=self.args.tofu_max_length, seed=seed)  # fmt: skip

    def train_args(self, args):
        return {"num_train_epochs": args.tofu_epochs, "learning_rate": 3e-3, "per_device_train_batch_size": 16,
                "warmup_steps": 10, "max_length": args.tofu_max_length}  # fmt: skip

    def unlearn_args(self, args):
        return {"learning_rate": args.tofu_unlearn_lr, "per_device_train_batch_size": 16,
                "max_length": args.tofu_max_length}  # fmt: skip

    def _probability(self, model, rows):
        return answer_stats(model, rows, batch_size=64, pad_token_id=self.tokenizer.pad_token_id)["probability"]

    def forget_metric(self, model):
        return self._probability(model, self.revocable)

    def task_metric(self, model):
        return self._probability(model, self.retain_rows)

    def utility(self, model):
        return self._probability(model, self.retain_rows)


def train(setting: Setting, preparation: dict | None, args, workdir: Path, seed: int | None = None):
    """One model trained normally (`preparation` None) or with Ready2Unlearn (these config values); `seed` (default
    `--seed`) sets the model's initialisation and the training order, not the data split."""
    seed = args.seed if seed is None else seed
    model = setting.build_model(seed)
    values = {**QUIET, "output_dir": str(workdir), "seed": seed, "lr_scheduler_type": "cosine",
              **setting.train_args(args)}  # fmt: skip
    pad = setting.tokenizer.pad_token_id if setting.tokenizer is not None else 0
    start = time.perf_counter()
    if preparation is not None:
        config = Ready2UnlearnConfig(**values, **preparation)
        trainer = Ready2UnlearnTrainer(model=model, args=config, train_dataset=setting.train,
                                       revocable_dataset=setting.revocable_raw if hasattr(setting, "revocable_raw")
                                       else setting.revocable, recovery_dataset=setting.recovery,
                                       processing_class=setting.tokenizer)  # fmt: skip
    else:
        max_length = values.pop("max_length", 512)
        rows = prepare_dataset(setting.train, "train", setting.tokenizer, "Question: {question}\nAnswer:", max_length)
        trainer = Trainer(model=model, args=TrainingArguments(**values, remove_unused_columns=False),
                          train_dataset=rows, data_collator=UnlearningCollator(pad))  # fmt: skip
    trainer.train()
    return model, time.perf_counter() - start


def unlearn(setting: Setting, model, args, workdir: Path, seed: int | None = None) -> int | None:
    """Gradient ascent (`hf_unlearn.METHODS["ga"]`) on the revocable group until the forget metric reaches the
    target; the number of optimizer steps it took (0 if the model starts at the target), or None if
    `--max-unlearn-steps` were not enough. `seed` (default `--seed`): the data order."""
    if setting.forget_metric(model) <= setting.target:  # already there: no unlearning needed
        return 0
    config_cls, trainer_cls = METHODS["ga"]
    seed = args.seed if seed is None else seed
    values = {**QUIET, "output_dir": str(workdir), "seed": seed, "max_steps": args.max_unlearn_steps,
              "lr_scheduler_type": "constant", "optim": "sgd", "max_grad_norm": 0, **setting.unlearn_args(args)}
    stop = StopAtTarget(setting.forget_metric, setting.target)
    forget = setting.revocable_raw if hasattr(setting, "revocable_raw") else setting.revocable
    trainer = trainer_cls(model=model, args=config_cls(**values), forget_dataset=forget,
                          processing_class=setting.tokenizer, callbacks=[stop])  # fmt: skip
    trainer.train()
    return stop.reached_at


def relearn(setting: Setting, model, args, learning_rate: float, workdir: Path, seed: int | None = None) -> None:
    """`--relearn-steps` steps of ordinary fine-tuning on the recovery data (the attacker's relearning), the gradient
    norm clipped at `--relearn-max-grad-norm` (`Trainer`'s `max_grad_norm`; 0: no clipping). `seed` (default
    `--seed`): the data order."""
    rows = prepare_dataset(setting.recovery, "recovery", setting.tokenizer, "Question: {question}\nAnswer:",
                           getattr(args, "tofu_max_length", 512))  # fmt: skip
    pad = setting.tokenizer.pad_token_id if setting.tokenizer is not None else 0
    values = {**QUIET, "output_dir": str(workdir), "seed": args.seed if seed is None else seed,
              "max_steps": args.relearn_steps,
              "learning_rate": learning_rate, "optim": args.relearn_optim, "per_device_train_batch_size": 16,
              "max_grad_norm": args.relearn_max_grad_norm, "lr_scheduler_type": "constant",
              "remove_unused_columns": False}  # fmt: skip
    trainer = Trainer(model=model, args=TrainingArguments(**values), train_dataset=rows,
                      data_collator=UnlearningCollator(pad))  # fmt: skip
    trainer.train()


def evaluate(setting: Setting, model, args, workdir: Path, seed: int | None = None) -> dict:
    """Task performance and forget metric of a trained model, then GA to the target, utility after it, and the forget
    metric after each relearning attack (each from the unlearned weights; `seed`, default `--seed`, sets the GA and
    relearning data order). Changes `model`: pass a copy."""
    row = {"task": setting.task_metric(model), "forget_before": setting.forget_metric(model)}
    if setting.target is None:  # random 10%: the normal model (evaluated first) sets it
        setting.target = round(row["task"], 4)
    row["steps"] = unlearn(setting, model, args, workdir / "ga", seed)
    row["forget_after"] = setting.forget_metric(model)
    row["utility"] = setting.utility(model)
    unlearned = copy.deepcopy(model.state_dict())
    row["recovered"] = {}
    for learning_rate in setting.relearn_lrs(args):
        model.load_state_dict(unlearned)
        relearn(setting, model, args, learning_rate, workdir / "relearn", seed)
        row["recovered"][learning_rate] = setting.forget_metric(model)
    return row


def choose(validation: dict) -> int:
    """The selection rule (the same for every setting), on the validation split. A candidate is admissible if its
    prepared model's validation accuracy is not more than 1 point below the normal model's and its forget metric
    before unlearning not more than 5 points below the normal model's (it must have learned the revocable group, or
    "unlearning" it is empty). Among the admissible ones (all, if none is), the candidate meeting the most of the
    issue's comparative targets (half the GA steps, equal or better utility, less recovery at each learning rate)
    wins; ties go to fewer GA steps, then higher utility after GA."""
    normal = validation["normal"]
    rows = {i: row for i, row in validation.items() if i != "normal"}

    def admissible(row):
        # rounded: 0.975 - 0.01 is 0.9650000000000001 in floating point
        return (round(row["task"] - normal["task"], 6) >= -0.01
                and round(row["forget_before"] - normal["forget_before"], 6) >= -0.05)  # fmt: skip

    pool = [i for i, row in rows.items() if admissible(row)] or list(rows)

    def key(i):
        met = sum(ok for _, ok, _ in comparative(verdicts({"normal": normal, "prepared": rows[i]})))
        steps = rows[i]["steps"] if rows[i]["steps"] is not None else float("inf")
        return (-met, steps, -rows[i]["utility"])

    return min(pool, key=key)


def run_setting(setting: Setting, args, log=print) -> dict:
    """Trains the normal model and one prepared model per candidate and, with more than one candidate, keeps the one
    `choose` picks without looking at the reported run. Digits (`has_validation`): all models trained at `--seed`,
    the candidates evaluated on the validation split, the normal and the chosen model reported on the test split.
    TOFU (no held-out split of the revocable group): the normal model and the candidates trained and evaluated at
    training seed `--select-seed`, then the normal and the chosen model trained anew at `--seed` and reported.
    Returns {"normal": row, "prepared": row, "candidates": [...], "chosen": i, "validation": {...},
    "select_seed": the selection's training seed, None when chosen on a validation split or not chosen}."""
    candidates = setting.candidates(args)
    by_seed = len(candidates) > 1 and not setting.has_validation
    select_seed = args.select_seed if by_seed else args.seed
    if by_seed and select_seed == args.seed:
        raise ValueError("--select-seed must differ from --seed: the reported models must not be the ones chosen on")
    trained = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        trained["normal"] = train(setting, None, args, tmp / "train-normal", seed=select_seed)
        for i, preparation in enumerate(candidates):
            trained[i] = train(setting, preparation, args, tmp / f"train-{i}", seed=select_seed)
            log(f"  {setting.name}: trained candidate {i} {preparation} at training seed {select_seed} in "
                f"{trained[i][1]:.0f} s")  # fmt: skip
        validation, chosen = {}, 0
        if len(candidates) > 1:
            if not by_seed:
                setting.use_split("validation")
            where = f"training seed {select_seed}" if by_seed else "validation"
            for i in ("normal", *range(len(candidates))):
                validation[i] = evaluate(setting, copy.deepcopy(trained[i][0]), args, tmp / f"val-{i}", select_seed)
                log(f"  {setting.name} / {where} / {i}: {validation[i]}")
            chosen = choose(validation)
            if not by_seed:
                setting.use_split("test")
        results = {"candidates": candidates, "chosen": chosen, "validation": validation,
                   "select_seed": select_seed if by_seed else None}  # fmt: skip
        if by_seed:  # the reported models: trained anew at --seed, never seen by the choice
            trained = {"normal": train(setting, None, args, tmp / "report-normal"),
                       chosen: train(setting, candidates[chosen], args, tmp / "report-prepared")}  # fmt: skip
        for label, key in (("normal", "normal"), ("prepared", chosen)):
            model, seconds = trained[key]
            results[label] = {"train_seconds": seconds, **evaluate(setting, model, args, tmp / f"test-{label}")}
            log(f"  {setting.name} / {label}: {results[label]}")
        task_seeds, step_seeds = args.task_seeds or [], getattr(args, "step_seeds", None) or []
        # Over training seeds (the chosen settings, the same data split): the 1-point task rule and, with step seeds,
        # the half-the-steps rule judged on means, above one seed's noise (GA steps vary much with the training seed).
        for key, seeds in (("task_seeds", task_seeds), ("step_seeds", step_seeds)):
            if seeds:
                results[key] = {"normal": {}, "prepared": {}}
        for seed in dict.fromkeys([*task_seeds, *step_seeds]):
            for label, preparation in (("normal", None), ("prepared", candidates[chosen])):
                if seed == args.seed:
                    row = results[label]
                else:
                    model, _ = train(setting, preparation, args, tmp / f"seed-{seed}-{label}", seed=seed)
                    row = (evaluate(setting, model, args, tmp / f"seed-{seed}-{label}-eval", seed)
                           if seed in step_seeds else {"task": setting.task_metric(model)})  # fmt: skip
                if seed in task_seeds:
                    results["task_seeds"][label][seed] = row["task"]
                if seed in step_seeds:
                    results["step_seeds"][label][seed] = row["steps"]
                log(f"  {setting.name} / {label} / training seed {seed}: {setting.task_name} {row['task']:.4f}"
                    + (f", GA steps {row['steps']}" if seed in step_seeds else ""))
    return results


def spread(values: dict) -> str:
    """`mean ± sample standard deviation (v1 / v2 / ...)` of per-seed values."""
    numbers = torch.tensor(list(values.values()), dtype=torch.float64)
    sd = numbers.std().item() if len(numbers) > 1 else 0.0
    return f"{numbers.mean().item():.4f} ± {sd:.4f} ({' / '.join(f'{v:.4f}' for v in values.values())})"


def verdicts(results: dict) -> list[tuple[str, bool, str]]:
    normal, prepared = results["normal"], results["prepared"]
    n_steps, p_steps = normal["steps"], prepared["steps"]
    if n_steps is None and p_steps is None:
        steps = (False, "neither model reached the target within the step budget")
    elif p_steps is None:
        steps = (False, f"prepared did not reach the target; normal took {n_steps}")
    else:
        bound = n_steps if n_steps is not None else float("inf")
        steps = (2 * p_steps <= bound, f"{p_steps} vs {n_steps if n_steps is not None else '> budget'}")
    found = [
        ("at most half the unlearning steps", *steps),
        ("equal or better utility after unlearning", round(prepared["utility"], 4) >= round(normal["utility"], 4),
         f"{prepared['utility']:.4f} vs {normal['utility']:.4f}"),
    ]  # fmt: skip
    for learning_rate, value in prepared["recovered"].items():
        theirs = normal["recovered"][learning_rate]
        found.append((f"less recovery after relearning at learning rate {learning_rate}", value < theirs,
                      f"{value:.4f} vs {theirs:.4f}"))  # fmt: skip
    found.append(("task performance within 1 point of normal training (not more than 1 point worse)",
                  round((normal["task"] - prepared["task"]) * 100, 6) <= 1.0,
                  f"{prepared['task']:.4f} vs {normal['task']:.4f}"))  # fmt: skip
    if results.get("step_seeds"):
        seeds = results["step_seeds"]
        listed = {label: " / ".join(str(v) for v in seeds[label].values()) for label in ("normal", "prepared")}
        if any(v is None for label in seeds for v in seeds[label].values()):
            ok, detail = False, f"a model did not reach the target within the step budget ({listed['prepared']} vs " \
                f"{listed['normal']})"  # fmt: skip
        else:
            means = {label: sum(seeds[label].values()) / len(seeds[label]) for label in ("normal", "prepared")}
            ok = 2 * means["prepared"] <= means["normal"]
            detail = (f"mean {means['prepared']:.1f} ({listed['prepared']}) vs {means['normal']:.1f} "
                      f"({listed['normal']})")  # fmt: skip
        names = ", ".join(map(str, seeds["normal"]))
        found.append((f"at most half the unlearning steps, mean over training seeds {names}", ok, detail))
    if results.get("task_seeds"):
        seeds = results["task_seeds"]
        means = {label: sum(seeds[label].values()) / len(seeds[label]) for label in ("normal", "prepared")}
        found.append((f"task performance within 1 point of normal training, mean over training seeds "
                      f"{', '.join(map(str, seeds['normal']))} (not more than 1 point worse)",
                      round((means["normal"] - means["prepared"]) * 100, 6) <= 1.0,
                      f"{spread(seeds['prepared'])} vs {spread(seeds['normal'])}"))  # fmt: skip
    return found


def comparative(found: list) -> list:
    """The comparative targets of `verdicts` (steps, utility, recovery), without the task-performance ones."""
    return [v for v in found if not v[0].startswith("task performance")]


def describe_preparation(prep: dict) -> str:
    return (f"α_in={prep['alpha_in']}, α_re={prep['alpha_re']}, λ1={prep['lambda1']}, λ2={prep['lambda2']}, "
            f"λ3={prep['lambda3']}, revocable_loss_cap={prep['revocable_loss_cap'] or 'log C'}, "
            f"{prep['meta_order']} order, {prep['inner_steps']} simulated unlearning and {prep['relearn_steps']} "
            f"simulated relearning step(s) ({clipping(prep.get('relearn_max_grad_norm'))}), "
            f"meta step every {prep['meta_every']} optimizer step(s), "
            f"{prep['meta_batch_size']} rows per auxiliary batch"
            + (" (revocable: a support and a disjoint query batch)" if prep.get("query_batch") else "")
            + ("; the λ1 term is the rise of ℓ(D_rev), not its level" if prep.get("unlearn_rise") else ""))  # fmt: skip


def clipping(max_grad_norm: float | None) -> str:
    return f"gradient norm clipped at {max_grad_norm}" if max_grad_norm else "unclipped"


def steps_text(row: dict, args) -> str:
    return str(row["steps"]) if row["steps"] is not None else f"> {args.max_unlearn_steps}"


def section(setting: Setting, results: dict, args, command: str) -> str:
    models = ("normal", "prepared")
    steps = {k: steps_text(results[k], args) for k in models}
    candidates, chosen = results["candidates"], results["chosen"]
    lrs = setting.relearn_lrs(args)
    lines = [
        f"### {setting.name}",
        "",
        f"Command: `{command}` (CPU, one thread).",
        "",
        f"Ready2Unlearn: {describe_preparation(candidates[chosen])}; stable set: the default sample of non-revocable "
        "training rows.",
        "",
        f"Data: {setting.describe()}. GA: {setting.unlearn_args(args)['learning_rate']} learning rate (SGD), "
        f"until {setting.metric_name} ≤ {setting.target}. Relearning: {args.relearn_steps} {args.relearn_optim} "
        f"steps ({clipping(args.relearn_max_grad_norm)}, batch 16) on the recovery data from the unlearned weights, "
        "at each learning rate in the table.",
        "",
    ]
    if results["validation"]:
        varied = [name for name in PREPARATION if len({c[name] for c in candidates}) > 1]
        validation, seed = results["validation"], results.get("select_seed")
        # digits: a validation split; TOFU: another training seed (same data), the reported models trained at --seed
        where, task, short = ("the validation split", "validation accuracy", "on validation") if seed is None else (
            f"training seed {seed} (a normal model and every candidate trained at that seed on the same data, "
            "evaluated with the same GA and relearning, their data order also from that seed)", setting.task_name,
            f"at training seed {seed}")  # fmt: skip
        lines += [
            f"Choosing the settings on {where} ({len(candidates)} candidates"
            + (", the command's `--grid` in place of the script's default grid" if getattr(args, "grid", None) else "")
            + ", the rest as above; "
            f"`choose` in the script): a candidate is admissible if its {task} is not more than 1 point "
            f"below the normal model's ({validation['normal']['task']:.4f}) and its {setting.metric_name} before "
            f"unlearning not more than 5 points below the normal model's ({validation['normal']['forget_before']:.4f}"
            f"); the admissible candidate meeting most of the comparative targets {short} wins, ties to fewer GA "
            f"steps, then higher utility. The normal model {short}: "
            f"{steps_text(validation['normal'], args)} GA steps, utility {validation['normal']['utility']:.4f}, "
            "recovery "
            + ", ".join(f"{validation['normal']['recovered'][lr]:.4f}" for lr in lrs) + ".",
            "",
            "| candidate | " + " | ".join(varied) + f" | {task} | {setting.metric_name} before | "
            "GA steps | utility after GA | " + " | ".join(f"after relearning (lr {lr})" for lr in lrs)
            + " | targets met |",
            "|---|" + "---|" * len(varied) + "---|---|---|---|" + "---|" * len(lrs) + "---|",
        ]
        for i, candidate in enumerate(candidates):
            row = validation[i]
            met = sum(ok for _, ok, _ in comparative(verdicts({"normal": validation["normal"], "prepared": row})))
            name = f"{i} (chosen)" if i == chosen else str(i)
            lines.append(f"| {name} | " + " | ".join(str(candidate[n]) for n in varied) + f" | {row['task']:.4f} | "
                         f"{row['forget_before']:.4f} | {steps_text(row, args)} | "
                         f"{row['utility']:.4f} | " + " | ".join(f"{row['recovered'][lr]:.4f}" for lr in lrs)
                         + f" | {met} of {2 + len(lrs)} |")  # fmt: skip
        lines += ["", "On the test split (reported only):" if seed is None else f"The normal model and the chosen "
                  f"settings trained anew at training seed {args.seed} (reported only; not seen by the choice):", ""]
    lines += [
        f"| model | {setting.task_name} before unlearning | {setting.metric_name} before | GA steps to target | "
        f"{setting.metric_name} after GA | {setting.utility_name} after GA | "
        + " | ".join(f"{setting.metric_name} after relearning (lr {lr})" for lr in lrs)
        + " | training time (s) |",
        "|---|---|---|---|---|---|" + "---|" * len(lrs) + "---|",
    ]
    for label in models:
        row = results[label]
        recovered = " | ".join(f"{row['recovered'][lr]:.4f}" for lr in lrs)
        lines.append(f"| {label} | {row['task']:.4f} | {row['forget_before']:.4f} | {steps[label]} | "
                     f"{row['forget_after']:.4f} | {row['utility']:.4f} | {recovered} | "
                     f"{row['train_seconds']:.1f} |")  # fmt: skip
    lines += ["", "Targets:", ""]
    lines += [f"- {name}: **{'met' if ok else 'NOT met'}** ({detail})" for name, ok, detail in verdicts(results)]
    return "\n".join(lines)


def merge(old: str, intro: str, parts: list[str]) -> str:
    """The section's new text: `intro`, then the old `### ` subsections with each new part put in place of the old one
    of the same heading (new headings appended), so running one setting keeps the other settings' tables."""
    old_parts = ["### " + p.strip() for p in old.split("\n### ")[1:]] if old else []
    # Tables written before each carried its own command: the command was in the old intro; keep it with them.
    command = re.search(r"^Command: `[^`]*`", old, flags=re.M) if old else None
    if command:
        old_parts = [p if "\nCommand: `" in p else p.replace("\n\n", f"\n\n{command.group(0)} (an earlier run, not "
                     "regenerated since).\n\n", 1) for p in old_parts]  # fmt: skip
    heading = {p.splitlines()[0]: p for p in parts}
    merged = [heading.pop(p.splitlines()[0], p) for p in old_parts]
    return "\n\n".join([intro, *merged, *heading.values()])


def boolean(text: str) -> bool:
    """`true`/`false` (also 1/0, yes/no) -> bool, for `query_batch` and `unlearn_rise`."""
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean: use true or false.")


def grid_entry(text: str) -> dict:
    """`--grid` entry `name=value,...` -> {name: value} with each value of its config field's type."""
    entry = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        if name not in PREPARATION or not value:
            raise argparse.ArgumentTypeError(f"{item!r}: use name=value with a name among {list(PREPARATION)}")
        kind = {"meta_order": str, "meta_every": int, "meta_batch_size": int, "inner_steps": int,
                "relearn_steps": int, "query_batch": boolean, "unlearn_rise": boolean}.get(name, float)  # fmt: skip
        entry[name] = None if value.lower() == "none" and name in NULLABLE else kind(value)
    return entry


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=["digits", "tofu", "all"], default="all")
    parser.add_argument("--seed", type=int, default=0, help="Training seed of the reported models.")
    parser.add_argument("--select-seed", type=int, default=1,
                        help="TOFU (no validation split): the candidates and a normal model are trained and compared "
                             "at this training seed, and only the chosen settings are trained at --seed and reported.")
    parser.add_argument("--revocable", choices=["class", "random", "both"], default="class",
                        help="digits: the revocable group is one class, a random 10%% of the training rows, or both "
                             "(two digits runs).")
    parser.add_argument("--revocable-class", type=int, default=3)
    parser.add_argument("--digits-epochs", type=float, default=40)
    parser.add_argument("--digits-lr", type=float, default=3e-3, help="Training learning rate (AdamW, cosine).")
    parser.add_argument("--digits-hidden", type=int, default=64, help="Hidden size of the tiny ViT.")
    parser.add_argument("--digits-target", type=float, default=None,
                        help="GA stops at forget accuracy <= this (default: 0.1 for a class; for a random 10%%, the "
                             "normal model's test accuracy).")
    parser.add_argument("--digits-unlearn-lr", type=float, default=3e-4, help="GA learning rate (SGD).")
    parser.add_argument("--tofu-path", default=str(ROOT.parent / "shared" / "data" / "tofu"))
    parser.add_argument("--tofu-retain", type=int, default=300, help="Retain90 rows trained on (a subset).")
    parser.add_argument("--tofu-max-length", type=int, default=128)
    parser.add_argument("--tofu-epochs", type=float, default=20)
    parser.add_argument("--tofu-target", type=float, default=0.05, help="GA stops at forget probability <= this.")
    parser.add_argument("--tofu-unlearn-lr", type=float, default=0.01, help="GA learning rate (SGD).")
    parser.add_argument("--max-unlearn-steps", type=int, default=300)
    parser.add_argument("--relearn-steps", type=int, default=10)
    parser.add_argument("--relearn-lr", type=float, nargs="+", default=None,
                        help="Relearning learning rates, one attack each from the same unlearned weights (default: "
                             "the setting's: digits 0.005 0.02, tofu 0.05 0.2).")
    parser.add_argument("--relearn-optim", default="sgd", help="Relearning optimizer (a TrainingArguments optim).")
    parser.add_argument("--relearn-max-grad-norm", type=float, default=1.0,
                        help="Relearning clips the gradient norm at this (TrainingArguments.max_grad_norm; 1.0 is "
                             "Trainer's default, 0 turns clipping off).")
    parser.add_argument("--task-seeds", type=int, nargs="+", default=None,
                        help="Also train the normal and the chosen prepared model with these training seeds (the same "
                             "data split; --seed's models are reused) and judge the 1-point task rule on the mean.")
    parser.add_argument("--step-seeds", type=int, nargs="+", default=None,
                        help="Also train, unlearn and relearn the normal and the chosen prepared model with these "
                             "training seeds (the same data split; --seed's models are reused) and judge the "
                             "half-the-steps rule on the mean GA steps.")
    for name in PREPARATION:  # default: the setting's own (Digits.preparation, Tofu.preparation)
        kind = int if name in ("meta_every", "meta_batch_size", "inner_steps", "relearn_steps") else float
        kind = str if name == "meta_order" else boolean if name in ("query_batch", "unlearn_rise") else kind
        parser.add_argument("--" + FLAG.get(name, name).replace("_", "-"), type=kind, default=None,
                            help=f"Ready2UnlearnConfig.{name} (default: the setting's, see the script).")
    parser.add_argument("--grid", type=grid_entry, nargs="+", default=None, metavar="NAME=VALUE,...",
                        help="Candidates to try in place of the setting's grid, each a comma-separated list of "
                             "Ready2UnlearnConfig fields, e.g. lambda1=0.05,lambda3=0.5,alpha_re=0.01,relearn_steps=2.")
    parser.add_argument("--output", default=str(ROOT / "docs" / "results.md"))
    parser.add_argument("--no-write", action="store_true", help="Print only; leave docs/results.md alone.")
    args = parser.parse_args(argv)
    args.digits_target_given = args.digits_target is not None
    args.digits_target = 0.1 if args.digits_target is None else args.digits_target
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    settings = []
    if args.setting in ("digits", "all"):
        for revocable in ("class", "random") if args.revocable == "both" else (args.revocable,):
            settings.append(Digits(argparse.Namespace(**{**vars(args), "revocable": revocable})))
    if args.setting in ("tofu", "all"):
        settings.append(Tofu(args))
    command = ("python bench/ready2unlearn.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    intro = ("Each table's command is in it (CPU, one thread). Same data, seed and schedule for both models. "
             "Unlearning: `ga` (SGD, constant learning rate) until the target, the same run for both models. Task "
             "performance: within 1 point means not more than 1 point worse than normal training.")  # fmt: skip
    parts = []
    for setting in settings:
        print(f"== {setting.name}: {setting.describe()}")
        results = run_setting(setting, args)
        body = section(setting, results, args, command)
        print(body)
        parts.append(body)
    if not args.no_write:
        output = Path(args.output)
        text = output.read_text() if output.exists() else ""
        found = re.search(r"<!-- ready2unlearn:begin -->\n(.*?)\n<!-- ready2unlearn:end -->", text, flags=re.S)
        write_section(output, "ready2unlearn", "Ready2Unlearn: prepared vs normally trained models "
                      "(`bench/ready2unlearn.py`)", merge(found.group(1) if found else "", intro, parts))
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
