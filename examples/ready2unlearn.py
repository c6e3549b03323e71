"""Ready2Unlearn on real images, offline: train a prepared and an ordinary digits classifier on the same data, then
unlearn one class from both with gradient ascent (`ga`) until its accuracy is at most 10%, and compare.

    python examples/ready2unlearn.py [--output-dir ready2unlearn-example] [--epochs 15]

The prepared model is saved with its card (README.md) and manifest naming the revocable class by a salted
fingerprint; the unlearned model's card, written next, lists that preparation in its lineage.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import Trainer, TrainerCallback, TrainingArguments, ViTForImageClassification  # noqa: E402

from hf_unlearn import METHODS, Ready2UnlearnConfig, Ready2UnlearnTrainer, UnlearningCollator  # noqa: E402
from hf_unlearn.data import load_digits_rows  # noqa: E402
from hf_unlearn.evaluation.classifier import accuracy_and_macro_f1, classifier_outputs  # noqa: E402
from hf_unlearn.manifest import read_salt  # noqa: E402
from hf_unlearn.synthetic import build_tiny_image_classifier  # noqa: E402


def accuracy(model, rows) -> float:
    out = classifier_outputs(model, rows, batch_size=256)
    return accuracy_and_macro_f1(out["logits"], out["labels"])["accuracy"]


class StopAtTarget(TrainerCallback):
    """Stops unlearning after the first optimizer step at which `reached(model)` holds, and remembers that step."""

    def __init__(self, reached):
        self.reached, self.reached_at = reached, None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.reached(model):
            self.reached_at, control.should_training_stop = state.global_step, True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="ready2unlearn-example")
    parser.add_argument("--epochs", type=float, default=15)
    parser.add_argument("--revocable-class", type=int, default=3)
    parser.add_argument("--target", type=float, default=0.1, help="GA stops once forget accuracy is at or below.")
    parser.add_argument("--max-unlearn-steps", type=int, default=100)
    parser.add_argument("--unlearn-lr", type=float, default=3e-3, help="Gradient-ascent learning rate (SGD).")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.output_dir)

    rows = load_digits_rows()
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0)).tolist()
    test, train = [rows[i] for i in order[:400]], [rows[i] for i in order[400:]]
    revocable = [row for row in train if row["labels"] == args.revocable_class]
    others = [row for row in test if row["labels"] != args.revocable_class]
    common = {"num_train_epochs": args.epochs, "learning_rate": 3e-3, "per_device_train_batch_size": 32, "seed": 0,
              "report_to": "none", "save_strategy": "no", "logging_strategy": "no", "disable_tqdm": True,
              "remove_unused_columns": False, "use_cpu": True, "lr_scheduler_type": "cosine",
              "warmup_steps": 10}  # fmt: skip

    # 1. The ordinary model: a plain Trainer.
    normal = build_tiny_image_classifier(seed=0)
    Trainer(model=normal, args=TrainingArguments(output_dir=str(out / "normal"), **common), train_dataset=train,
            data_collator=UnlearningCollator()).train()  # fmt: skip

    # 2. The prepared model: the same data and schedule, plus the rows that may be revoked later.
    prepared = build_tiny_image_classifier(seed=0)
    # The settings bench/ready2unlearn.py chose for one digit class (docs/results.md, "digits (one class)"; chosen there
    # for a larger ViT trained 40 epochs, so here they illustrate the API rather than reproduce that table).
    # query_batch + unlearn_rise: the λ1 term is the rise of the revocable loss, measured on revocable rows the
    # simulated ascent did not use.
    config = Ready2UnlearnConfig(output_dir=str(out / "prepared"), alpha_in=0.002, alpha_re=0.01, lambda1=0.3,
                                 lambda3=0.5, relearn_steps=2, meta_every=4, meta_batch_size=32, query_batch=True,
                                 unlearn_rise=True,
                                 revocable_description=f"all training images of the digit {args.revocable_class}",
                                 **common)  # fmt: skip
    trainer = Ready2UnlearnTrainer(model=prepared, args=config, train_dataset=train, revocable_dataset=revocable)
    trainer.train()
    trainer.save_model()  # weights + card + manifest (revocable group by fingerprint) + salt

    # 3. Unlearn the class from both with the same gradient-ascent run. The prepared model is loaded from its folder,
    #    as a later unlearning job would, so the unlearned model's manifest links back to the preparation.
    prepared = ViTForImageClassification.from_pretrained(out / "prepared")
    ga_config, ga_trainer = METHODS["ga"]
    print(f"{'model':<10} {'test acc':>9} {'forget acc':>11} | {'GA steps to target':>18} {'forget acc':>10} "
          f"{'other-class test acc':>21}")
    for name, model in (("normal", normal), ("prepared", prepared)):
        before = (accuracy(model, test), accuracy(model, revocable))
        ga_args = ga_config(output_dir=str(out / f"{name}-ga"), max_steps=args.max_unlearn_steps,
                            learning_rate=args.unlearn_lr,
                            optim="sgd", lr_scheduler_type="constant", per_device_train_batch_size=32,
                            report_to="none", save_strategy="no", disable_tqdm=True, use_cpu=True)  # fmt: skip
        salt = read_salt(out / "prepared") if name == "prepared" else None  # one salt: the fingerprints match
        stop = StopAtTarget(lambda m: accuracy(m, revocable) <= args.target)
        unlearning = ga_trainer(model=model, args=ga_args, forget_dataset=revocable, fingerprint_salt=salt,
                                callbacks=[stop])  # fmt: skip
        unlearning.train()
        if name == "prepared":
            unlearning.save_model()
        steps = stop.reached_at if stop.reached_at is not None else f"> {args.max_unlearn_steps}"
        print(f"{name:<10} {before[0]:>9.4f} {before[1]:>11.4f} | {steps:>18} {accuracy(model, revocable):>10.4f} "
              f"{accuracy(model, others):>21.4f}")

    lineage = json.loads((out / "prepared-ga" / "unlearning_manifest.json").read_text())["requests"]
    print("lineage of the unlearned prepared model:", [(r["request"], r["method"]) for r in lineage])


if __name__ == "__main__":
    main()
