"""Wall time of the whole TOFU suite on forget10 (forget, retain_perturbed, holdout10, real authors, world facts), per
model and per split, `--repeats` times: for an untrained Llama of about 7M parameters (the worst case: every greedy
generation runs all its new tokens) and, with `--model DIR`, for a fine-tuned model (its answers end at EOS). `--budget`
also prints the suite's matrix-multiply work and its floor at this machine's best measured `F.linear` rate;
`--gradnorm` also times each model's suite with the GradNorm attack on (one backward pass per forget and holdout row).

    python bench/eval_speed.py [--model DIR] [--repeats 2] [--max-new-tokens 64] [--batch-size 32] [--budget]
        [--gradnorm] [--output]
"""

import statistics
import sys
import time

import common
import torch

from hf_unlearn.data import load_tofu
from hf_unlearn.evaluation import tofu
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


class SplitClock:
    """Seconds per split of one suite run: the suite scores and answers forget, retain, real authors and world facts in
    that order (`_split_statistics`, then `greedy_answers`), then the holdout for the MIA; each split's time runs from
    its first scoring call to the next split's."""

    SPLITS = ("forget", "retain", "real_authors", "world_facts", "holdout (MIA)")

    def __init__(self):
        self.marks: list[float] = []
        self.original = tofu._split_statistics

    def __enter__(self):
        def timed(*args, **kwargs):
            self.marks.append(time.perf_counter())
            return self.original(*args, **kwargs)

        tofu._split_statistics = timed
        return self

    def __exit__(self, *exc):
        tofu._split_statistics = self.original

    def per_split(self, start: float, end: float) -> dict[str, float]:
        """`start` and `end` of the run; the last split's end is taken where the last generation finished (the holdout
        pass follows)."""
        bounds = [start, *self.marks[1:], self.holdout_start, end]
        return dict(zip(self.SPLITS, (b - a for a, b in zip(bounds, bounds[1:], strict=False)), strict=True))


def timed_suite(model, tokenizer, args, gradnorm: bool = False) -> tuple[float, dict[str, float], dict]:
    """(seconds, seconds per split, results) of one whole suite run."""
    original_greedy = tofu.greedy_answers
    clock = SplitClock()

    def greedy(*a, **k):
        answers = original_greedy(*a, **k)
        clock.holdout_start = time.perf_counter()
        return answers

    tofu.greedy_answers = greedy
    try:
        with clock:
            start = time.perf_counter()
            results = evaluate_tofu(model, tokenizer, FORGET, TOFU, max_new_tokens=args.max_new_tokens,
                                    batch_size=args.batch_size, generation_batch_size=args.generation_batch_size,
                                    gradnorm=gradnorm)  # fmt: skip
            end = time.perf_counter()
    finally:
        tofu.greedy_answers = original_greedy
    return end - start, clock.per_split(start, end), results


def main():
    parser = common.parser(__doc__, "eval_speed", seed=None)
    parser.add_argument("--model", help="A fine-tuned causal LM folder (with its tokenizer) to time beside the "
                                        "untrained one.")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=2, help="Runs of the suite per model (their spread is printed).")
    parser.add_argument("--max-new-tokens", type=int, default=NEW_TOKENS, help="Greedy answer length for ROUGE.")
    parser.add_argument("--batch-size", type=int, default=32, help="Rows scored per forward pass.")
    parser.add_argument("--generation-batch-size", type=int, help="Questions per generate call (default: batch size).")
    parser.add_argument("--budget", action="store_true", help="Also print the compute the suite needs and its floor.")
    parser.add_argument("--gradnorm", action="store_true", help="Also time each model's suite with GradNorm on.")
    args = parser.parse_args()
    args.generation_batch_size = args.generation_batch_size or args.batch_size
    tokenizer = train_tokenizer([f"{r['question']} {r['answer']}" for r in load_tofu("retain90", TOFU)], 8000)
    models = {"untrained": (build_tiny_causal_lm(tokenizer, hidden_size=256, num_layers=8, num_heads=4,
                                                 max_position_embeddings=512), tokenizer)}  # fmt: skip
    if args.model:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        models["fine-tuned"] = (AutoModelForCausalLM.from_pretrained(args.model),
                                AutoTokenizer.from_pretrained(args.model))  # fmt: skip
    if args.gradnorm:
        models |= {f"{name} + GradNorm": pair for name, pair in models.items()}
    lines = [f"Command: `python bench/eval_speed.py {' '.join(sys.argv[1:])}` ({torch.get_num_threads()} torch "
             f"threads; load {common.load()}); TOFU suite on {FORGET}, max_new_tokens {args.max_new_tokens}, batch "
             f"size {args.batch_size}, generation batch size {args.generation_batch_size}.", "",
             "| model | parameters | runs (s) | spread | " + " | ".join(SplitClock.SPLITS) + " | model_utility |",
             "|---|---|---|---|" + "---|" * len(SplitClock.SPLITS) + "---|"]  # fmt: skip
    runs = {name: [] for name in models}
    for _ in range(args.repeats):  # interleaved, so a change in the machine's load reaches every model alike
        for name, (model, model_tokenizer) in models.items():
            runs[name].append(timed_suite(model, model_tokenizer, args, gradnorm=name.endswith("GradNorm")))
            common.log(f"{name}: {runs[name][-1][0]:.1f} s")
    for name, (model, _) in models.items():
        seconds = [run[0] for run in runs[name]]
        spread = (max(seconds) - min(seconds)) / statistics.mean(seconds)
        splits = [statistics.mean(run[1][split] for run in runs[name]) for split in SplitClock.SPLITS]
        lines.append(f"| {name} | {model.num_parameters() / 1e6:.1f}M | {', '.join(f'{s:.1f}' for s in seconds)} | "
                     f"{spread:.0%} | " + " | ".join(f"{s:.1f}" for s in splits) +
                     f" | {runs[name][-1][2]['model_utility']:.4f} |")  # fmt: skip
    if args.budget:
        lines += [""] + budget(models["untrained"][0], tokenizer, args.generation_batch_size)
    common.publish(args, "Evaluation speed (`bench/eval_speed.py`)", "\n".join(lines))


if __name__ == "__main__":
    main()
