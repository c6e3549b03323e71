"""TOFU baselines end to end: fine-tune a small Llama on TOFU `full`, train the gold model on `retain90`, unlearn
`forget10` with every registered method, and write one table (forget quality, model utility, MIA AUCs, wall time,
steps) to `docs/results.md` with the command that produced it.

    python bench/tofu_baselines.py --tofu-path ../shared/data/tofu [--device cuda] [--epochs 30] [--cache DIR]

With `--cache DIR` the fine-tuned original and gold models (and their fine-tune times) and each row's results are
kept in DIR, and a rerun with the same DIR skips what is there: a run cut short resumes where it stopped.

Expected ordering (a sanity check of the metrics): the original model has forget quality near 0 and MIA AUC well
above 0.5 on forget vs holdout; the gold model has forget quality 1.0 by construction and MIA AUC near 0.5.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
from results_doc import write_section  # bench/results_doc.py
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from hf_unlearn import METHODS
from hf_unlearn.data import load_tofu, tofu_authors
from hf_unlearn.evaluation import evaluate_tofu
from hf_unlearn.evaluation.tofu import score_gold
from hf_unlearn.pipeline import finetune
from hf_unlearn.synthetic import build_tiny_causal_lm, train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["forget_quality", "model_utility", "forget_probability", "retain_probability", "mia_loss_auc",
           "mia_min_k_auc", "mia_min_k_plus_plus_auc", "privleak"]  # fmt: skip


# Per-method settings beyond the shared ones: DeepCUT's class is the question's author.
METHOD_SETTINGS = {"deepcut": {"group_column": "author"}}


def rows(split, path):
    return tofu_authors(load_tofu(split, path), split)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tofu-path", default=str(ROOT.parent / "shared" / "data" / "tofu"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=30, help="Fine-tune epochs (original and gold alike).")
    parser.add_argument("--unlearn-epochs", type=float, default=5)
    parser.add_argument("--unlearn-lr", type=float, default=1e-4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--output", default=str(ROOT / "docs" / "results.md"))
    parser.add_argument("--limit", type=int, help="Evaluate only the first N rows of each split (smoke tests).")
    parser.add_argument("--methods", nargs="+", help="Registered methods to run (default: all).")
    parser.add_argument("--eval-batch-size", type=int, default=32, help="Rows per scoring pass.")
    parser.add_argument("--generation-batch-size", type=int, help="Questions per generate call (default: as scoring).")
    parser.add_argument("--cache", help="Folder keeping the fine-tuned models and each row's results (resumable).")
    args = parser.parse_args()
    use_cpu = args.device == "cpu"

    full, retain = rows("full", args.tofu_path), rows("retain90", args.tofu_path)
    forget = rows("forget10", args.tofu_path)
    cache = Path(args.cache) if args.cache else None
    if cache and (cache / "tokenizer" / "tokenizer.json").exists():
        tokenizer = PreTrainedTokenizerFast.from_pretrained(cache / "tokenizer")
    else:
        tokenizer = train_tokenizer([f"{r['question']} {r['answer']}" for r in retain], vocab_size=8000)
        if cache:
            tokenizer.save_pretrained(cache / "tokenizer")
    recipe = {"num_train_epochs": args.epochs, "learning_rate": 1e-3, "per_device_train_batch_size": 32,
              "use_cpu": use_cpu, "lr_scheduler_type": "cosine", "warmup_steps": 50}  # fmt: skip

    def fresh():
        return build_tiny_causal_lm(tokenizer, hidden_size=args.hidden, num_layers=args.layers,
                                    num_heads=max(1, args.hidden // 64), max_position_embeddings=512)  # fmt: skip

    def fine_tuned(name, train_rows):
        """A model fine-tuned on `train_rows` and its fine-tune time in seconds, from the cache when it is there."""
        folder = cache / name if cache else None
        if folder and (folder / "seconds.json").exists():
            model = AutoModelForCausalLM.from_pretrained(folder)
            return model, json.loads((folder / "seconds.json").read_text())["seconds"]
        model = fresh()
        seconds = finetune(model, tokenizer, train_rows, f"/tmp/tofu-{name}", **recipe)
        if folder:
            model.save_pretrained(folder)
            (folder / "seconds.json").write_text(json.dumps({"seconds": seconds}))
        return model, seconds

    def row(name, compute):
        """`compute()` -> (results, wall time, steps) for one table row, kept in the cache when there is one."""
        path = cache / "rows" / f"{name}.json" if cache else None
        if path and path.exists():
            return tuple(json.loads(path.read_text()))
        value = compute()
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value, default=float))
        return value

    def evaluate(model, **gold_args):
        return evaluate_tofu(model.to(args.device), tokenizer, "forget10", args.tofu_path,
                             max_new_tokens=args.max_new_tokens, limit=args.limit, batch_size=args.eval_batch_size,
                             generation_batch_size=args.generation_batch_size, **gold_args)  # fmt: skip

    original, original_seconds = fine_tuned("original", full)

    def gold_row():
        model, seconds = fine_tuned("gold", retain)
        return evaluate(model), seconds, "-"

    gold = row("gold", gold_row)
    gold_args = score_gold(gold[0])
    table = {"original (fine-tuned on full)": row("original", lambda: (evaluate(original, **gold_args),
                                                                       original_seconds, "-")),
             "gold (retain90 only)": gold}  # fmt: skip

    def unlearned(name):
        config_cls, trainer_cls = METHODS[name]
        model = copy.deepcopy(original)
        config = config_cls(output_dir=f"/tmp/tofu-{name}", learning_rate=args.unlearn_lr, use_cpu=use_cpu,
                            num_train_epochs=args.unlearn_epochs, per_device_train_batch_size=8, report_to="none",
                            save_strategy="no", logging_steps=50, disable_tqdm=True, seed=0,
                            **METHOD_SETTINGS.get(name, {}))  # fmt: skip
        kept = retain if config.uses_retain else None
        trainer = trainer_cls(model=model, args=config, forget_dataset=forget, retain_dataset=kept,
                              processing_class=tokenizer)  # fmt: skip
        start = time.perf_counter()
        output = trainer.train()
        wall = time.perf_counter() - start
        return evaluate(trainer.model, **gold_args), wall, output.global_step

    for name in args.methods or sorted(METHODS):
        table[name] = row(name, lambda name=name: unlearned(name))

    params = sum(p.numel() for p in original.parameters()) / 1e6
    command = "python bench/tofu_baselines.py " + " ".join(sys.argv[1:])
    header = ["model", *COLUMNS, "wall time (s)", "steps"]
    lines = [f"Llama {params:.1f}M parameters (hidden {args.hidden} × {args.layers} layers), fine-tuned {args.epochs} "
             f"epochs on TOFU full; unlearning forget10 for {args.unlearn_epochs:g} epochs at lr {args.unlearn_lr:g}, "
             f"batch 8, retain90 paired. Device: {args.device}. Command: `{command}`", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]  # fmt: skip
    for name, (result, wall, steps) in table.items():
        cells = [f"{result[c]:.4g}" if c in result else "n/a" for c in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {wall:.1f} | {steps} |")
    block = "\n".join(lines)
    print(block)
    write_section(args.output, "tofu-baselines", "TOFU baselines (`bench/tofu_baselines.py`)", block)


if __name__ == "__main__":
    main()
