"""Ready2Unlearn vs normal training: later gradient-ascent unlearning steps, utility after it, and relearning.

Two settings, each training one model normally (`transformers.Trainer`) and one with `Ready2UnlearnTrainer` on the same
data, seed and schedule, then unlearning the revocable group from both with the same `ga` run:

- `digits`: a tiny ViT (`build_tiny_image_classifier`) on scikit-learn's handwritten digits; the revocable group is
  one class (`--revocable class`) or a random 10% of the training rows (`--revocable random`). Forget metric: accuracy
  on the revocable rows; utility: test accuracy on the other classes (class) or on all classes (random); recovery data:
  held-out rows of the revocable class (class) or held-out rows (random), never trained on.
- `tofu`: a tiny Llama built from a config, with a byte-level BPE tokenizer trained on the data, on TOFU (real data
  from `../shared/data/tofu`); the revocable group is the forget10 authors (400 rows) and the rest of the training
  data a subset of retain90 (`--tofu-retain`, so it runs in minutes on a CPU). Forget metric: mean answer probability
  on forget10; utility: mean answer probability on the trained retain rows; recovery data: forget10's paraphrased
  answers (the same facts said another way).

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
               "revocable_loss_cap")
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

    name: str
    metric_name: str
    utility_name: str
    task_name: str
    tokenizer = None
    preparation: dict = {}

    def preparation_args(self, args) -> dict:
        """The Ready2UnlearnConfig values: the setting's defaults, overridden by the command line."""
        return {name: getattr(args, name) if getattr(args, name) is not None else self.preparation[name]
                for name in PREPARATION}  # fmt: skip

    def relearn_lrs(self, args) -> list[float]:
        return list(args.relearn_lr or self.relearn_lr)

    def train_args(self, args) -> dict:
        raise NotImplementedError

    def build_model(self, seed: int):
        raise NotImplementedError


class Digits(Setting):
    metric_name = "forget accuracy"
    # Chosen on this setting (seed 0) among a handful of tried values; λ1 = 1 or α_in = 0.001 made the meta step unlearn
    # the revocable class during training (forget accuracy 0.0-0.4 before any unlearning).
    preparation = {"alpha_in": 0.002, "alpha_re": 0.005, "lambda1": 0.1, "lambda2": 1.0, "lambda3": 0.3,
                   "meta_every": 2, "meta_batch_size": 32, "revocable_loss_cap": None}  # fmt: skip
    relearn_lr = (0.005, 0.02)

    def __init__(self, args):
        self.name = f"digits ({'one class' if args.revocable == 'class' else 'random 10%'})"
        rows = load_digits_rows()
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(args.seed)).tolist()
        rows = [rows[i] for i in order]
        self.test, pool, self.train = rows[:400], rows[400:550], rows[550:]
        if args.revocable == "class":
            self.revocable = [r for r in self.train if r["labels"] == args.revocable_class]
            self.recovery = [r for r in pool if r["labels"] == args.revocable_class]
            self.utility_rows = [r for r in self.test if r["labels"] != args.revocable_class]
            self.utility_name = "test accuracy (other classes)"
        else:
            pick = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(args.seed + 1))
            self.revocable = [self.train[i] for i in sorted(pick[: len(self.train) // 10].tolist())]
            self.recovery = pool[: len(self.revocable)]
            self.utility_rows = self.test
            self.utility_name = "test accuracy"
        self.task_name = "test accuracy"
        # A random 10% is forgotten once it looks like unseen data: the normal model's test accuracy (set after it
        # is trained), unless --digits-target says otherwise.
        self.target = args.digits_target if args.revocable == "class" or args.digits_target_given else None
        self.args = args

    def describe(self) -> str:
        return (f"{len(self.train)} training rows ({len(self.revocable)} revocable), {len(self.test)} test rows, "
                f"{len(self.recovery)} recovery rows never trained on")  # fmt: skip

    def build_model(self, seed):
        from hf_unlearn.synthetic import build_tiny_image_classifier

        return build_tiny_image_classifier(hidden_size=32, num_layers=2, seed=seed)

    def train_args(self, args):
        return {"num_train_epochs": args.digits_epochs, "learning_rate": 3e-3, "per_device_train_batch_size": 32,
                "warmup_steps": 10}  # fmt: skip

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
                   "meta_every": 4, "meta_batch_size": 16, "revocable_loss_cap": 3.0}  # fmt: skip
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


def train(setting: Setting, prepared: bool, args, workdir: Path):
    model = setting.build_model(args.seed)
    values = {**QUIET, "output_dir": str(workdir), "seed": args.seed, "lr_scheduler_type": "cosine",
              **setting.train_args(args)}  # fmt: skip
    pad = setting.tokenizer.pad_token_id if setting.tokenizer is not None else 0
    start = time.perf_counter()
    if prepared:
        config = Ready2UnlearnConfig(**values, **setting.preparation_args(args))
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


def unlearn(setting: Setting, model, args, workdir: Path) -> int | None:
    """Gradient ascent (`hf_unlearn.METHODS["ga"]`) on the revocable group until the forget metric reaches the
    target; the number of optimizer steps it took, or None if `--max-unlearn-steps` were not enough."""
    config_cls, trainer_cls = METHODS["ga"]
    values = {**QUIET, "output_dir": str(workdir), "seed": args.seed, "max_steps": args.max_unlearn_steps,
              "lr_scheduler_type": "constant", "optim": "sgd", "max_grad_norm": 0, **setting.unlearn_args(args)}
    stop = StopAtTarget(setting.forget_metric, setting.target)
    forget = setting.revocable_raw if hasattr(setting, "revocable_raw") else setting.revocable
    trainer = trainer_cls(model=model, args=config_cls(**values), forget_dataset=forget,
                          processing_class=setting.tokenizer, callbacks=[stop])  # fmt: skip
    trainer.train()
    return stop.reached_at


def relearn(setting: Setting, model, args, learning_rate: float, workdir: Path) -> None:
    """`--relearn-steps` steps of ordinary fine-tuning on the recovery data (the attacker's relearning)."""
    rows = prepare_dataset(setting.recovery, "recovery", setting.tokenizer, "Question: {question}\nAnswer:",
                           getattr(args, "tofu_max_length", 512))  # fmt: skip
    pad = setting.tokenizer.pad_token_id if setting.tokenizer is not None else 0
    values = {**QUIET, "output_dir": str(workdir), "seed": args.seed, "max_steps": args.relearn_steps,
              "learning_rate": learning_rate, "optim": args.relearn_optim, "per_device_train_batch_size": 16,
              "lr_scheduler_type": "constant", "remove_unused_columns": False}  # fmt: skip
    trainer = Trainer(model=model, args=TrainingArguments(**values), train_dataset=rows,
                      data_collator=UnlearningCollator(pad))  # fmt: skip
    trainer.train()


def run_setting(setting: Setting, args, log=print) -> dict:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, prepared in (("normal", False), ("prepared", True)):
            model, seconds = train(setting, prepared, args, Path(tmp) / f"train-{label}")
            row = {"train_seconds": seconds, "task": setting.task_metric(model),
                   "forget_before": setting.forget_metric(model)}  # fmt: skip
            if setting.target is None:
                setting.target = round(row["task"], 4)
            row["steps"] = unlearn(setting, model, args, Path(tmp) / f"ga-{label}")
            row["forget_after"] = setting.forget_metric(model)
            row["utility"] = setting.utility(model)
            unlearned = copy.deepcopy(model.state_dict())
            row["recovered"] = {}
            for learning_rate in setting.relearn_lrs(args):  # each attack starts from the unlearned weights
                model.load_state_dict(unlearned)
                relearn(setting, model, args, learning_rate, Path(tmp) / f"relearn-{label}")
                row["recovered"][learning_rate] = setting.forget_metric(model)
            results[label] = row
            log(f"  {setting.name} / {label}: {row}")
    return results


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
    return found


def section(setting: Setting, results: dict, args) -> str:
    steps = {k: (str(v["steps"]) if v["steps"] is not None else f"> {args.max_unlearn_steps}") for k, v in
             results.items()}  # fmt: skip
    prep = setting.preparation_args(args)
    lines = [
        f"### {setting.name}",
        "",
        f"Ready2Unlearn: α_in={prep['alpha_in']}, α_re={prep['alpha_re']}, λ1={prep['lambda1']}, λ2={prep['lambda2']}, "
        f"λ3={prep['lambda3']}, revocable_loss_cap={prep['revocable_loss_cap'] or 'log C'}, first order, "
        f"meta step every {prep['meta_every']} optimizer step(s), "
        f"{prep['meta_batch_size']} rows per auxiliary batch; stable set: the default sample of non-revocable "
        "training rows.",
        "",
        f"Data: {setting.describe()}. GA: {setting.unlearn_args(args)['learning_rate']} learning rate (SGD), "
        f"until {setting.metric_name} ≤ {setting.target}. Relearning: {args.relearn_steps} {args.relearn_optim} "
        f"steps on the recovery data from the unlearned weights, at each learning rate in the table.",
        "",
        f"| model | {setting.task_name} before unlearning | {setting.metric_name} before | GA steps to target | "
        f"{setting.metric_name} after GA | {setting.utility_name} after GA | "
        + " | ".join(f"{setting.metric_name} after relearning (lr {lr})" for lr in setting.relearn_lrs(args))
        + " | training time (s) |",
        "|---|---|---|---|---|---|" + "---|" * len(setting.relearn_lrs(args)) + "---|",
    ]
    for label, row in results.items():
        recovered = " | ".join(f"{row['recovered'][lr]:.4f}" for lr in setting.relearn_lrs(args))
        lines.append(f"| {label} | {row['task']:.4f} | {row['forget_before']:.4f} | {steps[label]} | "
                     f"{row['forget_after']:.4f} | {row['utility']:.4f} | {recovered} | "
                     f"{row['train_seconds']:.1f} |")  # fmt: skip
    lines += ["", "Targets:", ""]
    lines += [f"- {name}: **{'met' if ok else 'NOT met'}** ({detail})" for name, ok, detail in verdicts(results)]
    return "\n".join(lines)



def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=["digits", "tofu", "all"], default="all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--revocable", choices=["class", "random", "both"], default="class",
                        help="digits: the revocable group is one class, a random 10%% of the training rows, or both "
                             "(two digits runs).")
    parser.add_argument("--revocable-class", type=int, default=3)
    parser.add_argument("--digits-epochs", type=float, default=15)
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
    for name in PREPARATION:  # default: the setting's own (Digits.preparation, Tofu.preparation)
        kind = int if name in ("meta_every", "meta_batch_size") else float
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                            help=f"Ready2UnlearnConfig.{name} (default: the setting's, see the script).")
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
    command = "python bench/ready2unlearn.py " + " ".join(argv if argv is not None else sys.argv[1:])
    parts = [f"Command: `{command.strip()}` (CPU, one thread). Same data, seed and schedule for both models. "
             "Unlearning: `ga` (SGD, constant learning rate) until the target, the same run for both models. "
             "Task performance: within 1 point means not more than 1 point worse than normal training."]  # fmt: skip
    for setting in settings:
        print(f"== {setting.name}: {setting.describe()}")
        results = run_setting(setting, args)
        body = section(setting, results, args)
        print(body)
        parts.append(body)
    if not args.no_write:
        write_section(args.output, "ready2unlearn", "Ready2Unlearn: prepared vs normally trained models "
                      "(`bench/ready2unlearn.py`)", "\n\n".join(parts))
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
