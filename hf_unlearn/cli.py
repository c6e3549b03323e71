"""`hf-unlearn` command line."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hf-unlearn", description="Machine unlearning for Hugging Face models.")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="Fine-tune (optional), unlearn and report; offline demo by default.")
    run_parser.add_argument("config", nargs="?", help="YAML run config; omit for the offline demo.")
    run_parser.add_argument("--output-dir", help="Override the config's output_dir.")
    run_parser.add_argument("--method", help="Override the config's method (e.g. ga, grad_diff, npo, simnpo).")
    commands.add_parser("methods", help="List the registered methods.")

    eval_parser = commands.add_parser("eval", help="Evaluate a model with the leaderboards' metrics.")
    eval_parser.add_argument("--model", required=True, help="Model folder or id to evaluate.")
    eval_parser.add_argument("--suite", default="tofu", choices=["tofu"], help="Which metrics (default: tofu).")
    eval_parser.add_argument("--forget-split", default="forget10", help="TOFU forget split (forget01/05/10).")
    eval_parser.add_argument("--gold-model", help="The retain-only model: gives forget_quality and privleak.")
    eval_parser.add_argument("--reference-model", help="A reference model for the Reference MIA (e.g. the base).")
    eval_parser.add_argument("--tofu-path", help="Local folder of TOFU JSONL files (default: the Hub).")
    eval_parser.add_argument("--output", default="eval_results.json", help="Where to write the flat JSON.")
    eval_parser.add_argument("--max-new-tokens", type=int, default=64, help="Greedy generation length for ROUGE.")
    eval_parser.add_argument("--batch-size", type=int, default=32)
    eval_parser.add_argument("--limit", type=int, help="Keep the first N rows of each split (quick checks only).")
    args = parser.parse_args(argv)

    from . import METHODS
    from .pipeline import load_run_config, run

    if args.command == "methods":
        for name, (config_cls, trainer_cls) in sorted(METHODS.items()):
            print(f"{name:<12}{trainer_cls.__name__:<22}{config_cls.__name__}")
        return 0
    try:
        if args.command == "eval":
            return _evaluate(args)
        config = load_run_config(args.config)
        if args.output_dir:
            config["output_dir"] = args.output_dir
        if args.method:
            METHODS[args.method]
            config["method"] = args.method
        run(config)
    except (ValueError, KeyError, FileNotFoundError) as error:
        print(f"hf-unlearn: error: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
    return 0


def _evaluate(args) -> int:
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .evaluation import evaluate_tofu, forget_quality, privleak
    from .evaluation.report import flat_numbers, format_table

    def load(name):
        return AutoModelForCausalLM.from_pretrained(name)

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    options = {"forget_split": args.forget_split, "path": args.tofu_path, "max_new_tokens": args.max_new_tokens,
               "batch_size": args.batch_size, "limit": args.limit}  # fmt: skip
    columns, gold = {}, {}
    reference = load(args.reference_model) if args.reference_model else None
    if args.gold_model:
        gold = evaluate_tofu(load(args.gold_model), tokenizer, reference_model=reference, **options)
        gold["forget_quality"] = forget_quality(gold["forget_truth_ratios"], gold["forget_truth_ratios"])  # 1.0
        gold["privleak"] = privleak(gold["mia_min_k_auc"], gold["mia_min_k_auc"])  # 0 by construction
        for key in ("forget_quality", "privleak"):
            gold["missing"].pop(key, None)
        columns["gold"] = gold
    results = evaluate_tofu(load(args.model), tokenizer, gold_forget_truth_ratios=gold.get("forget_truth_ratios"),
                            gold_mia_auc=gold.get("mia_min_k_auc"), reference_model=reference, **options)  # fmt: skip
    columns = {"model": results, **columns}
    print(format_table(columns))
    with open(args.output, "w") as handle:
        json.dump(flat_numbers(results), handle, indent=2)
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
