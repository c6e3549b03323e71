"""Wall time of the full TOFU suite (forget10, retain_perturbed, holdout10, real authors, world facts) for a Llama of
about 7M parameters on this machine's CPU. Target: under 60 s.

    python bench/eval_speed.py [--tofu-path ../shared/data/tofu] [--forget-split forget10] [--max-new-tokens 64]

The model is built from a config and is untrained, so its greedy generations run to `--max-new-tokens` (the worst
case for generation time); the tokenizer is trained in-process on TOFU's retain90 text.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from hf_unlearn.data import load_tofu
from hf_unlearn.evaluation import evaluate_tofu
from hf_unlearn.synthetic import build_tiny_causal_lm, train_tokenizer

DEFAULT_TOFU = Path(__file__).resolve().parents[2] / "shared" / "data" / "tofu"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tofu-path", default=str(DEFAULT_TOFU))
    parser.add_argument("--forget-split", default="forget10")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=8)
    args = parser.parse_args()

    retain = load_tofu("retain90", args.tofu_path)
    tokenizer = train_tokenizer([f"{r['question']} {r['answer']}" for r in retain], vocab_size=8000)
    model = build_tiny_causal_lm(tokenizer, hidden_size=args.hidden, num_layers=args.layers,
                                 num_heads=args.hidden // 64, max_position_embeddings=512)  # fmt: skip
    params = sum(p.numel() for p in model.parameters())
    start = time.perf_counter()
    results = evaluate_tofu(model, tokenizer, args.forget_split, args.tofu_path, max_new_tokens=args.max_new_tokens,
                            batch_size=args.batch_size)  # fmt: skip
    seconds = time.perf_counter() - start
    threads = torch.get_num_threads()
    print(f"model: Llama, {params / 1e6:.1f}M parameters, vocab {len(tokenizer)}; torch threads {threads}")
    print(f"TOFU suite on {args.forget_split} (max_new_tokens {args.max_new_tokens}): {seconds:.1f} s "
          f"(target < 60 s); model_utility {results['model_utility']:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
