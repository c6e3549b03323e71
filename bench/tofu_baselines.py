"""TOFU baselines end to end: fine-tune a small Llama on TOFU `full`, train the gold model on `retain90`, unlearn
`forget10` with each causal-LM method (`--methods`, default all of them), and write one table: forget quality, model
utility, answer probabilities, MIA AUCs, PrivLeak, wall time, steps. Sanity check: the original has forget quality
near 0 and MIA AUC well above 0.5; the gold model forget quality 1.0 by construction and MIA AUC near 0.5.

    python bench/tofu_baselines.py [--tofu-path ../shared/data/tofu] [--device cuda] [--epochs 30] [--cache DIR]

`--cache DIR` keeps the fine-tuned original and each row, so a run cut short resumes where it stopped.
"""

from __future__ import annotations

import copy
import sys
import time

from common import ROOT, Cache, parser, publish, setup, trained_once

from hf_unlearn import METHODS
from hf_unlearn.data import load_tofu, tofu_authors
from hf_unlearn.evaluation import evaluate_tofu
from hf_unlearn.evaluation.tofu import score_gold
from hf_unlearn.pipeline import finetune
from hf_unlearn.synthetic import build_tiny_causal_lm, train_tokenizer

COLUMNS = ["forget_quality", "model_utility", "forget_probability", "retain_probability", "mia_loss_auc",
           "mia_min_k_auc", "mia_min_k_plus_plus_auc", "privleak"]  # fmt: skip
HIDDEN, LAYERS = 256, 4  # the Llama
UNLEARN = {"num_train_epochs": 5, "learning_rate": 1e-4, "per_device_train_batch_size": 8}
# The registered methods that unlearn question/answer rows of a causal LM, and why the others are not in the table.
LM_METHODS = ["ga", "grad_diff", "npo", "simnpo", "idk_nll", "idk_dpo", "altpo", "undial", "wga", "satimp", "ce_u",
              "rmu", "deepcut"]  # fmt: skip
NOT_HERE = {"ac": "aligns an encoder's embeddings", "siu": "unlearns a concept of a vision-language model",
            # its MMD term trains forget losses toward never-trained rows'; TOFU's only such rows (holdout10) are the
            # MIA's negatives, so the attack would be scored on the method's own training signal
            "a_amu": "needs never-trained rows; TOFU's are the MIA's holdout"}  # fmt: skip
METHOD_SETTINGS = {
    "deepcut": {"group_column": "author"},  # DeepCUT's class: the question's author
    "rmu": {"steering_layer": LAYERS - 2},  # the paper's layer 7 is past this model's 4 layers; MLPs of 0..2 train
    # the model samples 2 alternates per question first, from the fine-tune's own prompt: a model trained only on
    # TOFU follows no instruction, and AltPO's default prompt (asking for changed facts) gets empty answers from it
    "altpo": {"num_alternates": 2, "alternate_max_tokens": 64, "alternate_prompt": "Question: {question}\nAnswer:"},
}


def main():
    p = parser(__doc__, "tofu-baselines", seed=None, cache=True, device=True, threads=True)
    p.add_argument("--tofu-path", default=str(ROOT.parent / "shared" / "data" / "tofu"))
    p.add_argument("--epochs", type=int, default=30, help="Fine-tune epochs (original and gold alike).")
    p.add_argument("--methods", nargs="+", default=LM_METHODS, choices=sorted(METHODS), help="Methods to run.")
    p.add_argument("--eval-batch-size", type=int, default=32, help="Rows per scoring pass.")
    p.add_argument("--generation-batch-size", type=int, help="Questions per generate call (default: as scoring).")
    setup(args := p.parse_args())
    use_cpu = args.device == "cpu"
    full, retain, forget = (tofu_authors(load_tofu(split, args.tofu_path), split)
                            for split in ("full", "retain90", "forget10"))  # fmt: skip
    tokenizer = train_tokenizer([f"{r['question']} {r['answer']}" for r in retain], vocab_size=8000)  # deterministic
    # the fine-tuned original under the fine-tune's options; the rows under the evaluation's too (model utility moves
    # with the generation batch)
    models = Cache(args.cache, f"e{args.epochs}")
    rows = Cache(args.cache, models.suffix, f"eb{args.eval_batch_size}", f"gb{args.generation_batch_size}")

    def fine_tuned(name, train_rows):
        """A model fine-tuned on `train_rows` (or the cache's) and the fine-tune's wall time in seconds."""
        model = build_tiny_causal_lm(tokenizer, hidden_size=HIDDEN, num_layers=LAYERS, num_heads=max(1, HIDDEN // 64),
                                     max_position_embeddings=512)  # fmt: skip
        return trained_once(models, name, model, lambda: finetune(
            model, tokenizer, train_rows, f"/tmp/tofu-{name}", num_train_epochs=args.epochs, learning_rate=1e-3,
            per_device_train_batch_size=32, use_cpu=use_cpu, lr_scheduler_type="cosine", warmup_steps=50))

    def evaluate(model, **gold_args):
        return evaluate_tofu(model.to(args.device), tokenizer, "forget10", args.tofu_path,
                             batch_size=args.eval_batch_size, generation_batch_size=args.generation_batch_size,
                             **gold_args)  # fmt: skip

    def gold_row():
        model, seconds = fine_tuned("gold", retain)
        return evaluate(model), seconds, "-"

    def unlearned(name):
        config_cls, trainer_cls = METHODS[name]
        config = config_cls(output_dir=f"/tmp/tofu-{name}", use_cpu=use_cpu, report_to="none", save_strategy="no",
                            logging_steps=50, disable_tqdm=True, seed=0, **UNLEARN,
                            **METHOD_SETTINGS.get(name, {}))  # fmt: skip
        trainer = trainer_cls(model=copy.deepcopy(original), args=config, forget_dataset=forget,
                              retain_dataset=retain if config.uses_retain else None,
                              processing_class=tokenizer)  # fmt: skip
        start = time.perf_counter()
        output = trainer.train()
        wall = time.perf_counter() - start
        return evaluate(trainer.model, **gold_args), wall, output.global_step

    original, original_seconds = fine_tuned("original", full)
    gold = rows.get("gold", gold_row)
    gold_args = score_gold(gold[0])
    table = {"original (fine-tuned on full)": rows.get("original", lambda: (evaluate(original, **gold_args),
                                                                            original_seconds, "-")),
             "gold (retain90 only)": gold}  # fmt: skip
    for name in args.methods:
        table[name] = rows.get(name, lambda name=name: unlearned(name))

    params = sum(p.numel() for p in original.parameters()) / 1e6
    header = ["model", *COLUMNS, "wall time (s)", "steps"]
    lines = [f"Llama {params:.1f}M parameters (hidden {HIDDEN} × {LAYERS} layers), fine-tuned {args.epochs} epochs on "
             f"TOFU full; unlearning forget10 for {UNLEARN['num_train_epochs']:g} epochs at lr "
             f"{UNLEARN['learning_rate']:g}, batch {UNLEARN['per_device_train_batch_size']}, retain90 paired. Device: "
             f"{args.device}. Command: `python bench/tofu_baselines.py {' '.join(sys.argv[1:])}`", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]  # fmt: skip
    for name, (result, wall, steps) in table.items():
        cells = [f"{result[c]:.4g}" if c in result else "n/a" for c in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {wall:.1f} | {steps} |")
    publish(args, "TOFU baselines (`bench/tofu_baselines.py`)", "\n".join(lines))


if __name__ == "__main__":
    main()
