"""Wall time of the whole TOFU suite on forget10 (forget, retain_perturbed, holdout10, real authors, world facts) for an
untrained Llama of about 7M parameters, so every greedy generation runs the full 64 new tokens. Target: under 60 s.
`--budget` also prints the suite's matrix-multiply work and its floor at this machine's best measured `F.linear` rate.

    python bench/eval_speed.py [--batch-size 32] [--generation-batch-size 128] [--budget] [--output]
"""

import sys
import time

import common
import torch

from hf_unlearn.data import load_tofu
from hf_unlearn.evaluation.tofu import TEMPLATE, evaluate_tofu
from hf_unlearn.synthetic import build_tiny_causal_lm, train_tokenizer

TOFU, FORGET, NEW_TOKENS = common.ROOT.parent / "shared" / "data" / "tofu", "forget10", 64


def budget(model, tokenizer, generation_batch: int) -> list[str]:
    """The suite's matrix-multiply FLOPs (2 per weight per token; the tied embedding on answer and generated tokens
    only) and their least time at the best rate `F.linear` reaches on the model's shapes (attention etc. excluded)."""
    hidden, vocab, weights = model.config.hidden_size, model.config.vocab_size, model.num_parameters()
    prompts = answers = questions = generated_prompts = 0
    splits = ("forget10_perturbed", "retain_perturbed", "real_authors_perturbed", "world_facts_perturbed", "holdout10")
    for split in splits:
        for row in load_tofu(split, TOFU):
            prompt = len(tokenizer(TEMPLATE.format(question=row["question"]))["input_ids"])
            texts = [row["answer"], row.get("paraphrased_answer"), *row.get("perturbed_answer", [])]
            prompts += prompt  # each prompt once: the rows that share it are scored against its KV cache
            answers += sum(len(tokenizer(" " + text)["input_ids"]) for text in texts if text is not None)
            if not split.startswith("holdout"):  # ROUGE generations: every split but the holdout
                questions, generated_prompts = questions + 1, generated_prompts + prompt
    generated, body = questions * NEW_TOKENS, weights - vocab * hidden  # body: weights other than the embedding
    flops = {"scoring": 2 * (body * (prompts + answers) + vocab * hidden * answers),
             "generation": 2 * (body * (generated_prompts + generated) + vocab * hidden * generated)}  # fmt: skip
    flops["whole suite"] = sum(flops.values())
    lines, rates = [f"- compute budget: scoring {prompts:,} prompt + {answers:,} answer tokens; generation "
                    f"{questions:,} questions x {NEW_TOKENS} new tokens"], []  # fmt: skip
    for rows, out in ((2048, model.config.intermediate_size), (2048, vocab), (generation_batch, hidden),
                      (generation_batch, vocab)):  # fmt: skip
        x, w, repeats = torch.randn(rows, hidden), torch.randn(out, hidden), max(5, int(1e9 / (rows * hidden * out)))
        torch.nn.functional.linear(x, w)
        start = time.perf_counter()
        for _ in range(repeats):
            torch.nn.functional.linear(x, w)
        rates.append(2 * rows * hidden * out * repeats / (time.perf_counter() - start))
        lines.append(f"  - F.linear [{rows} x {hidden}] x [{hidden} x {out}]: {rates[-1] / 1e9:.0f} GFLOP/s")
    return lines + [f"  - {name}: {value / 1e12:.2f} TFLOP -> at least {value / max(rates):.1f} s at "
                    f"{max(rates) / 1e9:.0f} GFLOP/s" for name, value in flops.items()]  # fmt: skip


def main():
    parser = common.parser(__doc__, "eval_speed", seed=None)
    parser.add_argument("--batch-size", type=int, default=32, help="Rows scored per forward pass.")
    parser.add_argument("--generation-batch-size", type=int, help="Questions per generate call (default: batch size).")
    parser.add_argument("--budget", action="store_true", help="Also print the compute the suite needs and its floor.")
    args = parser.parse_args()
    tokenizer = train_tokenizer([f"{r['question']} {r['answer']}" for r in load_tofu("retain90", TOFU)], 8000)
    model = build_tiny_causal_lm(tokenizer, hidden_size=256, num_layers=8, num_heads=4, max_position_embeddings=512)
    start, generation_batch = time.perf_counter(), args.generation_batch_size or args.batch_size
    results = evaluate_tofu(model, tokenizer, FORGET, TOFU, max_new_tokens=NEW_TOKENS, batch_size=args.batch_size,
                            generation_batch_size=generation_batch)
    lines = [f"Command: `python bench/eval_speed.py {' '.join(sys.argv[1:])}` ({torch.get_num_threads()} torch "
             f"threads; Llama, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, vocab "
             f"{len(tokenizer)}).", "", f"- TOFU suite on {FORGET} (max_new_tokens {NEW_TOKENS}, batch size "
             f"{args.batch_size}, generation batch size {generation_batch}): **{time.perf_counter() - start:.1f} s** "
             f"(target < 60 s); model_utility {results['model_utility']:.4f}"]  # fmt: skip
    common.publish(args, "Evaluation speed (`bench/eval_speed.py`)",
                   "\n".join(lines + (budget(model, tokenizer, generation_batch) if args.budget else [])))


if __name__ == "__main__":
    main()
