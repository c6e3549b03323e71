"""Where an unlearning step's time goes, on the side-by-side bench's model (issue 29): the torch profiler's self CPU
time of GradDiff and NPO steps grouped by kind of work, and the first-answer projection (`logits_to_keep`) switched
off and on, interleaved, as steps/s.

    python bench/profile_step.py [--tofu-path ../shared/data/tofu] [--steps 30] [--repeats 3] [--threads 1] [--output]

The model is ../shared/PEER.md's tiny Llama (vocab 8,208, hidden 256, 4 layers) with its WordLevel tokenizer, as
`bench/versus_open_unlearning.py` builds them, untrained (a step's arithmetic does not depend on the weights); rows
are TOFU forget10 / retain90, batch 4 + 4, lr 1e-4.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import ROOT, load, log, parser, publish, setup
from versus_open_unlearning import build_model, build_tokenizer

from hf_unlearn import METHODS, losses
from hf_unlearn.data import load_tofu

# aten operators by kind of work (self CPU time, so nested calls are not counted twice); the log-probabilities, losses
# and the finite check are elementwise operators (exp, sub, amax, ...) shared with the model, so they stay in the rest
KINDS = {"matrix multiplies": ("aten::mm", "aten::addmm", "aten::bmm"),
         "attention": ("aten::_scaled_dot_product",),
         "optimizer (AdamW)": ("aten::_fused_adamw", "aten::_foreach", "Optimizer.step")}  # fmt: skip


def trainer(name: str, tokenizer, rows, steps: int, output_dir: str):
    config_cls, trainer_cls = METHODS[name]
    args = config_cls(output_dir=output_dir, max_steps=steps, per_device_train_batch_size=4, learning_rate=1e-4,
                      report_to=[], save_strategy="no", disable_tqdm=True, use_cpu=True, logging_steps=10)  # fmt: skip
    return trainer_cls(model=build_model(0), args=args, processing_class=tokenizer, **rows)


def shares(name: str, tokenizer, rows, steps: int, output_dir: str) -> dict[str, float]:
    from torch.profiler import ProfilerActivity, profile

    run = trainer(name, tokenizer, rows, steps, output_dir)
    with profile(activities=[ProfilerActivity.CPU]) as profiled:
        run.train()
    events = profiled.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    found = {kind: sum(e.self_cpu_time_total for e in events if e.key.startswith(prefixes)) / total
             for kind, prefixes in KINDS.items()}  # fmt: skip
    return found | {"elementwise and the rest": 1 - sum(found.values())}


def steps_per_second(name: str, tokenizer, rows, steps: int, output_dir: str, keep: bool) -> float:
    original = losses.takes_logits_to_keep
    losses.takes_logits_to_keep = original if keep else (lambda model: False)
    try:
        run = trainer(name, tokenizer, rows, steps, output_dir)
        start = time.perf_counter()
        run.train()
        return steps / (time.perf_counter() - start)
    finally:
        losses.takes_logits_to_keep = original


def main():
    p = parser(__doc__, "profile_step", seed=None, threads=True)
    p.add_argument("--tofu-path", default=str(ROOT.parent / "shared" / "data" / "tofu"))
    p.add_argument("--steps", type=int, default=30, help="Optimizer steps per run.")
    p.add_argument("--repeats", type=int, default=3, help="Interleaved off/on pairs for the steps/s ratio.")
    p.add_argument("--methods", nargs="+", default=["grad_diff", "npo"], choices=sorted(METHODS))
    p.set_defaults(threads=1)
    setup(args := p.parse_args())
    tokenizer = build_tokenizer(Path(args.tofu_path))
    rows = {"forget_dataset": [dict(r) for r in load_tofu("forget10", args.tofu_path)],
            "retain_dataset": [dict(r) for r in load_tofu("retain90", args.tofu_path)]}  # fmt: skip
    lines = [f"`python bench/profile_step.py --steps {args.steps} --repeats {args.repeats} --threads {args.threads}`; "
             f"{args.threads} CPU thread(s), load {load()} at the start.", "",
             "| method | " + " | ".join(KINDS) + " | elementwise and the rest | steps/s without → with "
             "`logits_to_keep` |",
             "|---|" + "---|" * (len(KINDS) + 2)]  # fmt: skip
    with tempfile.TemporaryDirectory() as output_dir:
        for name in args.methods:
            log(f"profiling {name}")
            found = shares(name, tokenizer, rows, args.steps, output_dir)
            speed = {False: [], True: []}
            for _ in range(args.repeats):
                for keep in (False, True):
                    speed[keep].append(steps_per_second(name, tokenizer, rows, args.steps, output_dir, keep))
            off, on = (sorted(speed[keep])[len(speed[keep]) // 2] for keep in (False, True))  # medians
            lines.append(f"| {name} | " + " | ".join(f"{100 * share:.1f}%" for share in found.values())
                         + f" | {off:.2f} → {on:.2f} ({on / off:.2f}×) |")  # fmt: skip
    lines.append(f"\nShares of self CPU time over {args.steps} steps (torch profiler); steps/s: medians of "
                 f"{args.repeats} interleaved runs each.")  # fmt: skip
    publish(args, "Where a step's time goes (`bench/profile_step.py`)", "\n".join(lines))


if __name__ == "__main__":
    main()
