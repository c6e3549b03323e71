"""Wall time of the full TOFU suite (forget10, retain_perturbed, holdout10, real authors, world facts) for a Llama of
about 7M parameters on this machine's CPU. Target: under 60 s.

    python bench/eval_speed.py [--tofu-path ../shared/data/tofu] [--forget-split forget10] [--max-new-tokens 64]
        [--compare-prefix-sharing 100] [--budget]

The model is built from a config and is untrained, so its greedy generations run to `--max-new-tokens` (the worst
case for generation time); the tokenizer is trained in-process on TOFU's retain90 text.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from unittest.mock import patch

import torch

from hf_unlearn.data import load_tofu, prepare_dataset
from hf_unlearn.evaluation import evaluate_tofu, probability
from hf_unlearn.evaluation.tofu import TEMPLATE
from hf_unlearn.synthetic import build_tiny_causal_lm, train_tokenizer

DEFAULT_TOFU = Path(__file__).resolve().parents[2] / "shared" / "data" / "tofu"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tofu-path", default=str(DEFAULT_TOFU))
    parser.add_argument("--forget-split", default="forget10")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--generation-batch-size", type=int, help="Questions per generate call (default: batch size).")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--compare-prefix-sharing", type=int, default=0, metavar="N",
                        help="Also time scoring the answer, paraphrase and perturbed answers of the first N forget "
                        "questions with and without prompt sharing (KV cache), in this process, and print the ratio.")
    parser.add_argument("--budget", action="store_true",
                        help="Also print the compute the suite needs (tokens and FLOPs) and the least time it takes at "
                        "this machine's measured matrix-multiply rate.")
    args = parser.parse_args()

    retain = load_tofu("retain90", args.tofu_path)
    tokenizer = train_tokenizer([f"{r['question']} {r['answer']}" for r in retain], vocab_size=8000)
    model = build_tiny_causal_lm(tokenizer, hidden_size=args.hidden, num_layers=args.layers,
                                 num_heads=args.hidden // 64, max_position_embeddings=512)  # fmt: skip
    params = sum(p.numel() for p in model.parameters())
    start = time.perf_counter()
    results = evaluate_tofu(model, tokenizer, args.forget_split, args.tofu_path, max_new_tokens=args.max_new_tokens,
                            batch_size=args.batch_size, generation_batch_size=args.generation_batch_size)  # fmt: skip
    seconds = time.perf_counter() - start
    threads = torch.get_num_threads()
    print(f"model: Llama, {params / 1e6:.1f}M parameters, vocab {len(tokenizer)}; torch threads {threads}")
    print(f"TOFU suite on {args.forget_split} (max_new_tokens {args.max_new_tokens}, batch size {args.batch_size}, "
          f"generation batch size {args.generation_batch_size or args.batch_size}): {seconds:.1f} s "
          f"(target < 60 s); model_utility {results['model_utility']:.4f}")  # fmt: skip
    if args.compare_prefix_sharing:
        compare_prefix_sharing(model, tokenizer, args)
    if args.budget:
        compute_budget(model, tokenizer, args)


def compute_budget(model, tokenizer, args):
    """The suite's matrix-multiply work, counted from its rows, and the least time it takes at the best rate this
    machine's `F.linear` reaches on the model's own shapes (attention scores, norms and Python overhead excluded)."""
    config = model.config
    hidden, vocab = config.hidden_size, config.vocab_size
    embedding = vocab * hidden  # a lookup: no multiply-adds (tied to the output projection, counted there)
    body = sum(p.numel() for p in model.parameters()) - embedding  # per token: 2 FLOPs per weight
    splits = [f"{args.forget_split}_perturbed", "retain_perturbed", "real_authors_perturbed", "world_facts_perturbed",
              args.forget_split.replace("forget", "holdout")]  # fmt: skip
    prompt_tokens = answer_tokens = questions = generated_prompts = 0
    for split in splits:
        for row in load_tofu(split, args.tofu_path):
            prompt = len(tokenizer(TEMPLATE.format(question=row["question"]))["input_ids"])
            answers = [row["answer"], *([row["paraphrased_answer"]] if "paraphrased_answer" in row else []),
                       *row.get("perturbed_answer", [])]  # fmt: skip
            prompt_tokens += prompt  # each prompt once: rows that share it are scored against its KV cache
            answer_tokens += sum(len(tokenizer(" " + answer)["input_ids"]) for answer in answers)
            if not split.startswith("holdout"):  # ROUGE generations: every split but the holdout
                questions += 1
                generated_prompts += prompt
    generated = questions * args.max_new_tokens
    flops = {
        "scoring": 2 * (body * (prompt_tokens + answer_tokens) + embedding * answer_tokens),
        "generation": 2 * (body * (generated_prompts + generated) + embedding * generated),
    }
    rates = {}
    generating = args.generation_batch_size or args.batch_size
    for rows_, out_features in ((2048, config.intermediate_size), (2048, vocab), (generating, hidden),
                                (generating, vocab)):  # fmt: skip
        x, w = torch.randn(rows_, hidden), torch.randn(out_features, hidden)
        torch.nn.functional.linear(x, w)
        repeats = max(5, int(2e9 / (2 * rows_ * hidden * out_features)))
        start = time.perf_counter()
        for _ in range(repeats):
            torch.nn.functional.linear(x, w)
        rates[(rows_, out_features)] = 2 * rows_ * hidden * out_features * repeats / (time.perf_counter() - start)
    best = max(rates.values())
    print(f"compute budget: scoring {prompt_tokens:,} prompt + {answer_tokens:,} answer tokens; generation "
          f"{questions:,} questions x {args.max_new_tokens} new tokens")
    for (rows_, out_features), rate in rates.items():
        print(f"  F.linear [{rows_} x {hidden}] x [{hidden} x {out_features}]: {rate / 1e9:.0f} GFLOP/s")
    for name, value in flops.items():
        print(f"  {name}: {value / 1e12:.2f} TFLOP -> at least {value / best:.1f} s at {best / 1e9:.0f} GFLOP/s")
    total = sum(flops.values())
    print(f"  whole suite: {total / 1e12:.2f} TFLOP -> at least {total / best:.1f} s of matrix multiplies alone "
          f"(target < 60 s)")


def compare_prefix_sharing(model, tokenizer, args):
    """Wall and CPU time of `token_statistics` on TOFU's seven answers per forget question, prompts shared vs not."""
    forget = load_tofu(f"{args.forget_split}_perturbed", args.tofu_path).select(range(args.compare_prefix_sharing))
    qa = [{"question": row["question"], "answer": answer} for row in forget
          for answer in [row["answer"], row["paraphrased_answer"], *row["perturbed_answer"]]]  # fmt: skip
    rows = prepare_dataset(qa, "rows", tokenizer, TEMPLATE, 512)
    prompt_tokens = sum(probability._prompt_length(row) for row in rows)
    print(f"prompt tokens: {prompt_tokens / sum(len(row['input_ids']) for row in rows):.0%} of all tokens")
    times = {}
    for shared in (True, False, True, False):
        with patch.object(probability, "_takes_cache", (lambda m: True) if shared else (lambda m: False)):
            wall, cpu = time.perf_counter(), time.process_time()
            probability.token_statistics(model, rows, args.batch_size, tokenizer.pad_token_id, min_k_plus_plus=False)
            times.setdefault(shared, []).append((time.perf_counter() - wall, time.process_time() - cpu))
    best = {shared: min(runs) for shared, runs in times.items()}
    print(f"scoring {len(rows)} answers ({len(forget)} questions x 7): prompts shared {best[True][0]:.1f} s wall "
          f"({best[True][1]:.1f} s CPU), one pass per row {best[False][0]:.1f} s ({best[False][1]:.1f} s CPU): "
          f"{best[False][0] / best[True][0]:.2f}x wall, {best[False][1] / best[True][1]:.2f}x CPU")


if __name__ == "__main__":
    main()
