"""DeepCUT on TOFU: a small causal LM fine-tuned on TOFU `full` unlearns `forget10`, with each question's author as its
class (`group_column="author"`). TOFU's forget authors have no retain questions, so every anchor uses the label-free
fallback (its frozen representation as the negative); the run says so.

    python examples/deepcut_tofu.py                                  # TOFU from the Hub (locuslab/TOFU)
    python examples/deepcut_tofu.py --tofu-path ../shared/data/tofu  # offline: the local JSONL files
    python examples/deepcut_tofu.py --tofu-path ../shared/data/tofu --evaluate   # + the TOFU suite (slower)

The LM is a tiny Llama built from a config with a tokenizer trained in-process on retain90's text (nothing to
download); pass `--model` for a pretrained causal LM instead (then `--epochs 0` skips the fine-tune if it already
knows TOFU).
"""

from __future__ import annotations

import argparse
import copy

from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_unlearn import DeepCUTConfig, DeepCUTTrainer
from hf_unlearn.data import load_tofu, tofu_authors
from hf_unlearn.evaluation import answer_stats
from hf_unlearn.pipeline import finetune
from hf_unlearn.synthetic import build_tiny_causal_lm, train_tokenizer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tofu-path", help="Local folder of TOFU JSONL files (default: the Hub).")
    parser.add_argument("--model", help="A causal LM id or path (default: a tiny Llama built from a config).")
    parser.add_argument("--epochs", type=float, default=10, help="Fine-tune epochs on TOFU full (0: none).")
    parser.add_argument("--unlearn-epochs", type=float, default=3)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--evaluate", action="store_true", help="Also run the TOFU suite (forget quality needs a gold "
                        "model: see `hf-unlearn gold`).")  # fmt: skip
    parser.add_argument("--output-dir", default="deepcut-tofu")
    args = parser.parse_args()

    full = tofu_authors(load_tofu("full", args.tofu_path), "full")
    forget = tofu_authors(load_tofu("forget10", args.tofu_path), "forget10")
    retain = tofu_authors(load_tofu("retain90", args.tofu_path), "retain90")
    if args.model:
        tokenizer, model = AutoTokenizer.from_pretrained(args.model), AutoModelForCausalLM.from_pretrained(args.model)
    else:
        tokenizer = train_tokenizer([f"{r['question']} {r['answer']}" for r in retain], vocab_size=4000)
        model = build_tiny_causal_lm(tokenizer, hidden_size=128, num_layers=2, max_position_embeddings=512)
    if args.epochs:
        print(f"fine-tuning on TOFU full ({len(full)} questions) for {args.epochs:g} epochs ...")
        seconds = finetune(model, tokenizer, full, f"{args.output_dir}/finetune", num_train_epochs=args.epochs,
                           learning_rate=1e-3, per_device_train_batch_size=32)  # fmt: skip
        print(f"fine-tuned in {seconds:.0f} s")
    original = copy.deepcopy(model) if args.evaluate else None

    config = DeepCUTConfig(output_dir=args.output_dir, group_column="author", learning_rate=args.learning_rate,
                           num_train_epochs=args.unlearn_epochs, per_device_train_batch_size=8, report_to="none",
                           save_strategy="no", logging_steps=10, forget_description="TOFU forget10: the questions "
                           "about its 20 fictitious authors.")  # fmt: skip
    trainer = DeepCUTTrainer(model=model, args=config, forget_dataset=forget, retain_dataset=retain,
                             processing_class=tokenizer)  # fmt: skip
    pad = tokenizer.pad_token_id or 0
    sample = trainer.retain_dataset[:400] if hasattr(trainer.retain_dataset, "__getitem__") else None
    before = {"forget": answer_stats(model, trainer.forget_dataset, pad_token_id=pad),
              "retain": answer_stats(model, sample, pad_token_id=pad)}  # fmt: skip
    trainer.train()
    after = {"forget": answer_stats(model, trainer.forget_dataset, pad_token_id=pad),
             "retain": answer_stats(model, sample, pad_token_id=pad)}  # fmt: skip
    for split in ("forget", "retain"):
        print(f"{split} answer probability: {before[split]['probability']:.4f} -> {after[split]['probability']:.4f}")
    if args.evaluate:
        from hf_unlearn.evaluation import evaluate_tofu

        results = {name: evaluate_tofu(m, tokenizer, "forget10", args.tofu_path)
                   for name, m in (("original", original), ("unlearned", trainer.model))}  # fmt: skip
        trainer.record_evaluation(**results)
        for key in ("model_utility", "forget_truth_ratio", "mia_min_k_auc"):
            print(f"{key}: {results['original'][key]:.4f} -> {results['unlearned'][key]:.4f}")
    trainer.create_model_card(dataset_tags="locuslab/TOFU", dataset_args="forget10")
    trainer.save_model()
    tokenizer.save_pretrained(args.output_dir)
    print(f"model, tokenizer, card and manifest in {args.output_dir}/")


if __name__ == "__main__":
    main()
