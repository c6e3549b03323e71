"""Ready2Unlearn vs normal training: later gradient-ascent unlearning steps, utility after it, and relearning.

A normal model and one `Ready2UnlearnTrainer` model per grid candidate, one chosen on a validation split (digits: a tiny
ViT forgetting a class or a random 10%) or at training seed `--select-seed` (TOFU forget10: a tiny Llama). Each run
replaces its setting's table in the section.

    python bench/ready2unlearn.py --setting digits --revocable random --task-seeds 0 1 2 --output
"""

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common
import torch

from hf_unlearn import METHODS, Ready2UnlearnConfig, Ready2UnlearnTrainer, UnlearningEvalCallback
from hf_unlearn.data import UnlearningCollator, load_digits_rows, load_tofu, prepare_dataset
from hf_unlearn.evaluation import accuracy_and_macro_f1, answer_stats, classifier_outputs
from hf_unlearn.synthetic import build_tiny_causal_lm, build_tiny_image_classifier, train_tokenizer

TOFU, INF = common.ROOT.parent / "shared" / "data" / "tofu", float("inf")
TEMPLATE = "Question: {question}\nAnswer:"
# The Ready2UnlearnConfig fields a --grid entry may set, at the digits centre (each entry updates its setting's).
PREPARATION = {"alpha_in": 0.002, "alpha_re": 0.005, "lambda1": 0.1, "lambda2": 1.0, "lambda3": 0.3, "meta_every": 4,
               "meta_batch_size": 32, "revocable_loss_cap": None, "inner_steps": 1, "relearn_steps": 1,
               "relearn_max_grad_norm": None, "meta_order": "first", "query_batch": False, "unlearn_rise": False}
MAX_UNLEARN_STEPS, RELEARN_STEPS, RELEARN_MAX_GRAD_NORM = 300, 10, 1.0  # the attack clips as Trainer does by default
INTRO = ("Each table's command is in it (CPU, one thread). Same data, seed and schedule for both models. Unlearning: "
         "`ga` (SGD, constant learning rate) until the target, the same run for both models. Task performance: within "
         "1 point means not more than 1 point worse than normal training.")  # fmt: skip


class Setting:
    """Rows for the trainers (`train`, `revocable`, `recovery`), a model, and the `metric` of `forget_rows` (forget
    metric), `test` (task performance) and `utility_rows` (utility), all described by `data`."""

    has_validation = False  # True: candidates are chosen on a validation split, else at training seed --select-seed
    tokenizer, pad, max_length, preparation, grid = None, 0, 512, PREPARATION, ({},)


class Digits(Setting):
    has_validation, metric_name, relearn_lr = True, "forget accuracy", (0.005, 0.02)
    epochs, learning_rate, batch_size, unlearn_lr, revocable_class = 40, 3e-3, 32, 3e-4, 3
    grid = tuple({"lambda1": lambda1, "lambda3": lambda3} for lambda1 in (0.1, 0.3) for lambda3 in (0.3, 0.5, 1.0))

    def __init__(self, args):
        self.by_class = args.revocable == "class"
        self.name = f"digits ({'one class' if self.by_class else 'random 10%'})"
        rows = load_digits_rows()
        rows = [rows[i] for i in torch.randperm(len(rows), generator=torch.Generator().manual_seed(args.seed))]
        # 400 test rows (reported only), 150 held out (recovery data), 200 validation rows, the rest trained on
        self.splits, pool, self.train = {"test": rows[:400], "validation": rows[550:750]}, rows[400:550], rows[750:]
        if self.by_class:
            self.revocable = self.forget_rows = [r for r in self.train if r["labels"] == self.revocable_class]
            self.recovery = [r for r in pool if r["labels"] == self.revocable_class]
        else:
            pick = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(args.seed + 1)).tolist()
            self.revocable = self.forget_rows = [self.train[i] for i in sorted(pick[: len(pick) // 10])]
            self.recovery = pool[: len(self.revocable)]
        self.data = (f"{len(self.train)} training rows ({len(self.revocable)} revocable), 200 validation rows (settings"
                     f" are chosen on them), 400 test rows (reported only), {len(self.recovery)} recovery rows never "
                     "trained on")  # fmt: skip
        self.use_split("test")

    def use_split(self, split: str) -> None:
        self.test, self.task_name = self.splits[split], f"{split} accuracy"
        self.utility_rows = [r for r in self.test if not self.by_class or r["labels"] != self.revocable_class]
        self.utility_name = self.task_name + (" (other classes)" if self.by_class else "")
        self.target = 0.1 if self.by_class else None  # random 10%: the normal model's accuracy, set on evaluating it

    def build_model(self, seed):
        return build_tiny_image_classifier(hidden_size=64, num_layers=2, seed=seed)

    def metric(self, model, rows) -> float:
        out = classifier_outputs(model, rows, batch_size=256)
        return accuracy_and_macro_f1(out["logits"], out["labels"])["accuracy"]


class Tofu(Setting):
    name, metric_name, task_name = "TOFU forget10 (tiny Llama)", "forget probability", "retain probability"
    relearn_lr = (0.05, 0.2)
    epochs, learning_rate, batch_size, unlearn_lr, target, max_length, retain_size = 20, 3e-3, 16, 0.01, 0.05, 128, 300
    # by analogy with digits: α_in ≈ half the normal model's GA path, ascent terms capped at −log 0.05 ≈ 3.0
    preparation = {**PREPARATION, "alpha_in": 0.1, "alpha_re": 0.05, "meta_batch_size": 16, "revocable_loss_cap": 3.0}

    def __init__(self):
        self.revocable, retain, self.recovery = ([{"question": r["question"], "answer": r[answer]} for r in load_tofu(
            split, TOFU)] for split, answer in (("forget10", "answer"), ("retain90", "answer"),
                                                ("forget10_perturbed", "paraphrased_answer")))  # fmt: skip
        retain = retain[:: max(1, len(retain) // self.retain_size)][: self.retain_size]  # every k-th: all authors
        self.train, self.utility_name = self.revocable + retain, self.task_name
        # trained on the retain rows only, so the vocabulary carries no strings learned from the revocable group
        self.tokenizer = train_tokenizer([f"{r['question']} {r['answer']}" for r in retain], vocab_size=1000)
        self.pad = self.tokenizer.pad_token_id
        self.forget_rows = prepare_dataset(self.revocable, "forget10", self.tokenizer, TEMPLATE, self.max_length)
        self.test = self.utility_rows = prepare_dataset(retain, "retain", self.tokenizer, TEMPLATE, self.max_length)
        self.data = (f"{len(self.train)} training rows: all {len(self.revocable)} forget10 rows (revocable) and "
                     f"{len(retain)} of retain90's 3,600 rows (every k-th, a subset so it runs on a CPU); answers "
                     f"truncated to {self.max_length} tokens; recovery data: forget10's {len(self.recovery)} "
                     "paraphrased answers")  # fmt: skip

    def build_model(self, seed):
        return build_tiny_causal_lm(self.tokenizer, hidden_size=64, num_layers=2, num_heads=2,
                                    max_position_embeddings=self.max_length, seed=seed)  # fmt: skip

    def metric(self, model, rows) -> float:
        return answer_stats(model, rows, batch_size=64, pad_token_id=self.pad)["probability"]


def fit(setting: Setting, trainer_cls, config_cls, values: dict, **inputs) -> None:
    """Trains with a package trainer on the CPU, at the setting's batch size (no checkpoints, logs or bars)."""
    with tempfile.TemporaryDirectory() as out:
        config = config_cls(output_dir=out, per_device_train_batch_size=setting.batch_size, report_to=[], use_cpu=True,
                            max_length=setting.max_length, save_strategy="no", logging_strategy="no", disable_tqdm=True,
                            **values)  # fmt: skip
        trainer_cls(args=config, processing_class=setting.tokenizer, **inputs).train()


def train(setting: Setting, preparation: dict | None, seed: int):
    """(model, seconds): trained normally (`preparation` None) or with Ready2Unlearn; `seed`: init and data order."""
    model, start = setting.build_model(seed), time.perf_counter()
    schedule = {"lr_scheduler_type": "cosine", "warmup_steps": 10, "learning_rate": setting.learning_rate}
    if preparation is None:
        rows = prepare_dataset(setting.train, "train", setting.tokenizer, TEMPLATE, setting.max_length)
        common.train(model, rows, epochs=setting.epochs, batch_size=setting.batch_size, seed=seed, weight_decay=0.0,
                     collator=UnlearningCollator(setting.pad), **schedule)  # fmt: skip
    else:
        fit(setting, Ready2UnlearnTrainer, Ready2UnlearnConfig, {"num_train_epochs": setting.epochs, "seed": seed,
            **schedule, **preparation}, model=model, train_dataset=setting.train, revocable_dataset=setting.revocable,
            recovery_dataset=setting.recovery)  # fmt: skip
    return model, time.perf_counter() - start


def evaluate(setting: Setting, model, seed: int) -> dict:
    """Task performance, forget metric; GA to the target, utility after it; forget metric after each relearning."""
    row = {"task": setting.metric(model, setting.test), "forget_before": setting.metric(model, setting.forget_rows)}
    setting.target = round(row["task"], 4) if setting.target is None else setting.target  # random 10%: normal model's
    row["steps"], forget = 0, {"forget": ("<=", setting.target)}
    if row["forget_before"] > setting.target:  # stop at the first step that reaches the target
        stop = UnlearningEvalCallback(lambda m: {"forget": setting.metric(m, setting.forget_rows)}, 1, forget)
        config_cls, trainer_cls = METHODS["ga"]
        fit(setting, trainer_cls, config_cls, {"seed": seed, "max_steps": MAX_UNLEARN_STEPS, "optim": "sgd",
            "learning_rate": setting.unlearn_lr, "lr_scheduler_type": "constant", "max_grad_norm": 0}, model=model,
            forget_dataset=setting.revocable, callbacks=[stop])  # fmt: skip
        row["steps"] = stop.chosen_step
    row["forget_after"] = setting.metric(model, setting.forget_rows)
    row["utility"], row["recovered"] = setting.metric(model, setting.utility_rows), {}
    unlearned = copy.deepcopy(model.state_dict())
    recovery = prepare_dataset(setting.recovery, "recovery", setting.tokenizer, TEMPLATE, setting.max_length)
    for learning_rate in setting.relearn_lr:
        model.load_state_dict(unlearned)
        common.train(model, recovery, epochs=1, learning_rate=learning_rate, batch_size=16, seed=seed, optim="sgd",
                     max_steps=RELEARN_STEPS, max_grad_norm=RELEARN_MAX_GRAD_NORM, weight_decay=0.0,
                     collator=UnlearningCollator(setting.pad))  # fmt: skip
        row["recovered"][learning_rate] = setting.metric(model, setting.forget_rows)
    return row


def choose(validation: dict) -> int:
    """Among the candidates within 1 point of the normal model's task performance and 5 points of its forget metric
    before GA (all, if none is), the one meeting most comparative targets; ties: fewer GA steps, then more utility."""
    normal, rows = validation["normal"], {i: row for i, row in validation.items() if i != "normal"}
    # rounded: 0.975 - 0.01 is 0.9650000000000001 in floating point
    admissible = {i for i, row in rows.items() if round(row["task"] - normal["task"], 6) >= -0.01
                  and round(row["forget_before"] - normal["forget_before"], 6) >= -0.05}  # fmt: skip

    def key(i):
        met = sum(ok for _, ok, _ in verdicts({"normal": normal, "prepared": rows[i]})[:-1])  # not the task rule
        return -met, rows[i]["steps"] if rows[i]["steps"] is not None else INF, -rows[i]["utility"]

    return common.choose(rows, key, (lambda i: i in admissible) if admissible else None)[0]


def run_setting(setting: Setting, args) -> dict:
    """The normal model and one per candidate; `choose` picks one on the validation split (digits: these models are
    reported) or at --select-seed (TOFU: the reported ones are trained anew at --seed). Then --task/step-seeds."""
    candidates = [{**setting.preparation, **entry} for entry in args.grid or setting.grid]  # each updates the centre
    by_seed = len(candidates) > 1 and not setting.has_validation
    select_seed = args.select_seed if by_seed else args.seed
    if by_seed and select_seed == args.seed:
        raise ValueError("--select-seed must differ from --seed: the reported models must not be the ones chosen on")
    trained = {"normal": train(setting, None, select_seed)}
    trained |= {i: train(setting, preparation, select_seed) for i, preparation in enumerate(candidates)}
    validation, chosen = {}, 0
    if len(candidates) > 1:
        if setting.has_validation:
            setting.use_split("validation")
        for i in ("normal", *range(len(candidates))):
            validation[i] = evaluate(setting, copy.deepcopy(trained[i][0]), select_seed)
            common.log(f"{setting.name} / choice at seed {select_seed} / {i}: {validation[i]}")
        chosen = choose(validation)
        if setting.has_validation:
            setting.use_split("test")
    results = {"candidates": candidates, "chosen": chosen, "validation": validation,
               "select_seed": select_seed if by_seed else None}  # fmt: skip
    if by_seed:  # the reported models: trained anew at --seed, never seen by the choice
        trained = {"normal": train(setting, None, args.seed), chosen: train(setting, candidates[chosen], args.seed)}
    for label, key in (("normal", "normal"), ("prepared", chosen)):
        results[label] = {"train_seconds": trained[key][1], **evaluate(setting, trained[key][0], args.seed)}
    results.update({key: {"normal": {}, "prepared": {}} for key in ("task_seeds", "step_seeds") if getattr(args, key)})
    for seed in dict.fromkeys([*args.task_seeds, *args.step_seeds]):
        for label, preparation in (("normal", None), ("prepared", candidates[chosen])):
            row = results[label]
            if seed != args.seed:
                model = train(setting, preparation, seed)[0]
                row = evaluate(setting, model, seed) if seed in args.step_seeds else {
                    "task": setting.metric(model, setting.test)}  # fmt: skip
            for key, value in (("task_seeds", "task"), ("step_seeds", "steps")):
                if seed in getattr(args, key):
                    results[key][label][seed] = row[value]
            common.log(f"{setting.name} / {label} / seed {seed}: {row['task']:.4f}, GA steps {row.get('steps')}")
    return results


def spread(values: dict) -> str:
    v, sd = list(values.values()), statistics.stdev(values.values()) if len(values) > 1 else 0.0
    return f"{statistics.mean(v):.4f} ± {sd:.4f} ({' / '.join(f'{x:.4f}' for x in v)})"


def verdicts(results: dict) -> list[tuple[str, bool, str]]:
    """(target, met, detail) per target: the comparative ones, the task rule, then the rules on means over seeds."""
    normal, prepared = results["normal"], results["prepared"]
    n_steps, p_steps = (INF if row["steps"] is None else row["steps"] for row in (normal, prepared))
    task = "task performance within 1 point of normal training"
    found = [("at most half the unlearning steps", p_steps < INF and 2 * p_steps <= n_steps,
              f"{steps_text(prepared)} vs {steps_text(normal)}"),
             ("equal or better utility after unlearning", round(prepared["utility"], 4) >= round(normal["utility"], 4),
              f"{prepared['utility']:.4f} vs {normal['utility']:.4f}")]  # fmt: skip
    found += [(f"less recovery after relearning at learning rate {lr}", value < normal["recovered"][lr],
               f"{value:.4f} vs {normal['recovered'][lr]:.4f}")
              for lr, value in prepared["recovered"].items()]  # fmt: skip
    found.append((f"{task} (not more than 1 point worse)", round((normal["task"] - prepared["task"]) * 100, 6) <= 1.0,
                  f"{prepared['task']:.4f} vs {normal['task']:.4f}"))  # fmt: skip
    if seeds := results.get("step_seeds"):  # a model that never reached the target counts as inf steps
        n, p = (statistics.mean(INF if v is None else v for v in seeds[k].values()) for k in ("normal", "prepared"))
        listed = {label: " / ".join(map(str, values.values())) for label, values in seeds.items()}
        names, ok = ", ".join(map(str, seeds["normal"])), p < INF and 2 * p <= n
        found.append((f"at most half the unlearning steps, mean over training seeds {names}", ok,
                      f"mean {p:.1f} ({listed['prepared']}) vs {n:.1f} ({listed['normal']})"))  # fmt: skip
    if seeds := results.get("task_seeds"):
        n, p = (statistics.mean(seeds[k].values()) for k in ("normal", "prepared"))
        found.append((f"{task}, mean over training seeds {', '.join(map(str, seeds['normal']))} (not more than 1 point "
                      "worse)", round((n - p) * 100, 6) <= 1.0, f"{spread(seeds['prepared'])} vs "
                      f"{spread(seeds['normal'])}"))  # fmt: skip
    return found


def clipping(max_grad_norm: float | None) -> str:
    return f"gradient norm clipped at {max_grad_norm}" if max_grad_norm else "unclipped"


def steps_text(row: dict) -> str:
    return str(row["steps"]) if row["steps"] is not None else f"> {MAX_UNLEARN_STEPS}"


def section(setting: Setting, results: dict, args, command: str) -> str:
    """The setting's `### ` subsection: command, settings, the choice (several candidates), reported models, targets."""
    candidates, chosen, lrs, name = results["candidates"], results["chosen"], setting.relearn_lr, setting.metric_name
    p = candidates[chosen]

    def recovered(row, separator=" | "):
        return separator.join(f"{row['recovered'][lr]:.4f}" for lr in lrs)

    lines = [f"### {setting.name}", "", f"Command: `{command}` (CPU, one thread).", "",
             f"Ready2Unlearn: α_in={p['alpha_in']}, α_re={p['alpha_re']}, λ1={p['lambda1']}, λ2={p['lambda2']}, "
             f"λ3={p['lambda3']}, revocable_loss_cap={p['revocable_loss_cap'] or 'log C'}, {p['meta_order']} order, "
             f"{p['inner_steps']} simulated unlearning and {p['relearn_steps']} simulated relearning step(s) "
             f"({clipping(p['relearn_max_grad_norm'])}), meta step every {p['meta_every']} optimizer step(s), "
             f"{p['meta_batch_size']} rows per auxiliary batch"
             + (" (revocable: a support and a disjoint query batch)" if p["query_batch"] else "")
             + ("; the λ1 term is the rise of ℓ(D_rev), not its level" if p["unlearn_rise"] else "")
             + "; stable set: the default sample of non-revocable training rows.", "",
             f"Data: {setting.data}. GA: {setting.unlearn_lr} learning rate (SGD), until {name} ≤ {setting.target}. "
             f"Relearning: {RELEARN_STEPS} sgd steps ({clipping(RELEARN_MAX_GRAD_NORM)}, batch 16) on the recovery "
             "data from the unlearned weights, at each learning rate in the table.", ""]  # fmt: skip
    if validation := results["validation"]:
        varied = [field for field in PREPARATION if len({c[field] for c in candidates}) > 1]
        normal, seed = validation["normal"], results["select_seed"]
        where, task, short = ("the validation split", "validation accuracy", "on validation") if seed is None else (
            f"training seed {seed} (a normal model and every candidate trained at that seed on the same data, "
            "evaluated with the same GA and relearning, their data order also from that seed)", setting.task_name,
            f"at training seed {seed}")  # fmt: skip
        grid = ", the command's `--grid` in place of the script's default grid" if args.grid else ""
        lines += [
            f"Choosing the settings on {where} ({len(candidates)} candidates{grid}, the rest as above; `choose` in the "
            f"script): a candidate is admissible if its {task} is not more than 1 point below the normal model's "
            f"({normal['task']:.4f}) and its {name} before unlearning not more than 5 points below the normal "
            f"model's ({normal['forget_before']:.4f}); the admissible candidate meeting most of the comparative "
            f"targets {short} wins, ties to fewer GA steps, then higher utility. The normal model {short}: "
            f"{steps_text(normal)} GA steps, utility {normal['utility']:.4f}, recovery "
            + recovered(normal, ", ") + ".", "",
            f"| candidate | {' | '.join(varied)} | {task} | {name} before | GA steps | utility after GA | "
            + " | ".join(f"after relearning (lr {lr})" for lr in lrs) + " | targets met |",
            "|---|" + "---|" * (len(varied) + 4 + len(lrs) + 1)]  # fmt: skip
        for i, candidate in enumerate(candidates):
            row, mark = validation[i], " (chosen)" if i == chosen else ""
            met = sum(ok for _, ok, _ in verdicts({"normal": normal, "prepared": row})[:-1])  # not the task rule
            lines.append(f"| {i}{mark} | {' | '.join(str(candidate[f]) for f in varied)} | {row['task']:.4f} | "
                         f"{row['forget_before']:.4f} | {steps_text(row)} | {row['utility']:.4f} | {recovered(row)} | "
                         f"{met} of {2 + len(lrs)} |")  # fmt: skip
        lines += ["", "On the test split (reported only):" if seed is None else "The normal model and the chosen "
                  f"settings trained anew at training seed {args.seed} (reported only; not seen by the choice):", ""]
    lines += [f"| model | {setting.task_name} before unlearning | {name} before | GA steps to target | {name} after GA "
              f"| {setting.utility_name} after GA | " + " | ".join(f"{name} after relearning (lr {lr})" for lr in lrs)
              + " | training time (s) |", "|---|---|---|---|---|---|" + "---|" * len(lrs) + "---|"]  # fmt: skip
    lines += [f"| {label} | {row['task']:.4f} | {row['forget_before']:.4f} | {steps_text(row)} | "
              f"{row['forget_after']:.4f} | {row['utility']:.4f} | {recovered(row)} | {row['train_seconds']:.1f} |"
              for label, row in results.items() if label in ("normal", "prepared")]  # fmt: skip
    lines += ["", "Targets:", ""] + [f"- {target}: **{'met' if ok else 'NOT met'}** ({detail})"
                                     for target, ok, detail in verdicts(results)]  # fmt: skip
    return "\n".join(lines)


def merge(args, part: str) -> str:
    """INTRO and the section's `### ` parts in --output's file, `part` in place of the one of its heading (or added)."""
    text = Path(args.output).read_text() if args.output and Path(args.output).exists() else ""
    old = text.partition(f"<!-- {args.section}:begin -->\n")[2].partition(f"\n<!-- {args.section}:end -->")[0]
    heading = part.splitlines()[0]
    parts = [part if p.startswith(heading + "\n") else p for p in ("### " + p.strip() for p in old.split("\n### ")[1:])]
    return "\n\n".join([INTRO, *parts, *([] if part in parts else [part])])


def grid_entry(text: str) -> dict:
    """`--grid` entry `name=value,...` -> {name: value}, each value of its field's type (booleans: true or false)."""
    entry = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        if name not in PREPARATION or not value:
            raise argparse.ArgumentTypeError(f"{item!r}: use name=value with a name among {list(PREPARATION)}")
        kind = float if PREPARATION[name] is None else type(PREPARATION[name])
        if kind is bool and value.lower() not in ("true", "false"):
            raise argparse.ArgumentTypeError(f"{value!r} is not a boolean: use true or false.")
        entry[name] = value.lower() == "true" if kind is bool else kind(value)
    return entry


def main(argv=None):
    parser = common.parser(__doc__, "ready2unlearn")
    parser.add_argument("--setting", choices=["digits", "tofu"], required=True)
    parser.add_argument("--revocable", choices=["class", "random"], default="class", help="digits: forget a class.")
    parser.add_argument("--select-seed", type=int, default=1, help="TOFU: the training seed the choice is made at.")
    parser.add_argument("--grid", type=grid_entry, nargs="+", metavar="NAME=VALUE,...", help="Config fields to try.")
    parser.add_argument("--task-seeds", type=int, nargs="+", default=[], help="Also judge the task rule on their mean.")
    parser.add_argument("--step-seeds", type=int, nargs="+", default=[], help="Also the GA-steps rule on their mean.")
    args = parser.parse_args(argv)
    common.setup(args)
    torch.set_num_threads(1)
    setting = Digits(args) if args.setting == "digits" else Tofu()
    command = " ".join(["python bench/ready2unlearn.py", *(sys.argv[1:] if argv is None else argv)])
    heading = "Ready2Unlearn: prepared vs normally trained models (`bench/ready2unlearn.py`)"
    common.publish(args, heading, merge(args, section(setting, run_setting(setting, args), args, command)))


if __name__ == "__main__":
    main()
