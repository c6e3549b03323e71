"""Overhead of the unlearning trainers over a plain `Trainer`, and memory of NPO's reference model with PEFT.

1. Seconds per step: GA vs a plain `Trainer` on the same forget batches (one forward/backward each), and GradDiff vs a
   plain `Trainer` with two accumulated micro-batches over the same forget and retain rows; medians of interleaved
   runs. Target: ratio <= 1.10.
2. Peak memory of NPO on a LoRA model with the adapter-disabled reference vs a frozen copy of the model, each in a
   fresh process. Target: the adapter-disabled reference adds no second model.

    python bench/overhead.py --steps 20 --repeats 3 [--device cuda --hidden 1024 --layers 8] [--output]
"""

import copy
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import common
import torch
from peft import LoraConfig
from transformers import Trainer, TrainerCallback, TrainingArguments

from hf_unlearn import METHODS, UnlearningCollator
from hf_unlearn.data import prepare_dataset
from hf_unlearn.synthetic import build_tiny_causal_lm, make_fictitious_qa, split_forget_retain, train_tokenizer

BATCH, WARMUP = 8, 5


class StepClock(TrainerCallback):
    def __init__(self):
        self.times = []  # wall time at the end of each optimizer step, data loading included

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter())


def run(args, name: str, hidden: int, layers: int, steps: int, warmup: int = WARMUP, reference: str = ""):
    """(trainer, seconds per step after `warmup` steps) of `warmup` + `steps` steps on a fresh model. `name`: `ga`,
    `grad_diff`, `npo` (a LoRA adapter; `reference` "frozen_copy" or the adapter-disabled model), or a plain `Trainer`
    on the forget rows (`plain_1`) or, two micro-batches accumulated, on forget batch, retain batch, ... (`plain_2`; it
    samples at random, so it sees other pairs, but the work per step is the same)."""
    forget, retain = split_forget_retain(make_fictitious_qa(num_people=100, facts_per_person=5), 0.5)
    tokenizer = train_tokenizer([f"{r['question']} {r['answer']}" for r in retain])
    model = build_tiny_causal_lm(tokenizer, hidden_size=hidden, num_layers=layers, num_heads=max(1, hidden // 64))
    clock = StepClock()
    with tempfile.TemporaryDirectory() as output_dir:
        values = dict(output_dir=output_dir, max_steps=warmup + steps, per_device_train_batch_size=BATCH,
                      report_to="none", save_strategy="no", logging_steps=10, disable_tqdm=True, seed=0,
                      use_cpu=args.device == "cpu", learning_rate=1e-5)  # fmt: skip
        if name in METHODS:
            config_cls, trainer_cls = METHODS[name]
            frozen = copy.deepcopy(model).eval().requires_grad_(False) if reference == "frozen_copy" else None
            lora = {"peft_config": LoraConfig(r=8, target_modules=["q_proj", "v_proj"]), "reference_model": frozen}
            trainer = trainer_cls(model=model, args=config_cls(**values), forget_dataset=forget, callbacks=[clock],
                                  retain_dataset=None if name == "ga" else retain, processing_class=tokenizer,
                                  **(lora if name == "npo" else {}))  # fmt: skip
        else:
            rows, other = (prepare_dataset(data, split, tokenizer, "Question: {question}\nAnswer:", 512)
                           for data, split in ((forget, "forget"), (retain, "retain")))  # fmt: skip
            if name == "plain_2":
                rows = [row for i in range(0, len(rows), BATCH) for row in rows[i : i + BATCH] + other[i : i + BATCH]]
                values["gradient_accumulation_steps"] = 2
            trainer = Trainer(model=model, args=TrainingArguments(**values), train_dataset=rows, callbacks=[clock],
                              data_collator=UnlearningCollator(tokenizer.pad_token_id))  # fmt: skip
        trainer.train()
    return trainer, (clock.times[-1] - clock.times[warmup - 1]) / steps


def memory(args, reference: str) -> dict:
    """NPO + LoRA for 3 steps with this reference: MB of weights, of the reference copy and of this process's peak."""
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer, _ = run(args, "npo", args.memory_hidden, args.memory_layers, steps=2, warmup=1, reference=reference)
    cpu = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    peak = torch.cuda.max_memory_allocated() if args.device == "cuda" else cpu
    model, copied = (sum(p.numel() * p.element_size() for p in m.parameters()) if m else 0
                     for m in (trainer.model, trainer.reference_model))  # fmt: skip
    return {"model": model / 2**20, "reference": copied / 2**20, "peak": peak / 2**20}


def main():
    parser = common.parser(__doc__, "overhead", seed=None, device=True)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30, help=f"Timed steps per run (after {WARMUP} warm-up steps).")
    parser.add_argument("--repeats", type=int, default=3, help="Interleaved runs per trainer (the median is kept).")
    parser.add_argument("--memory-hidden", type=int, default=1024)
    parser.add_argument("--memory-layers", type=int, default=8)
    args = parser.parse_args()
    times = {name: [] for name in ("ga", "plain_1", "grad_diff", "plain_2")}
    for repeat in range(args.repeats):  # interleaved, so drift in machine speed hits both sides alike
        for name in times:
            times[name].append(run(args, name, args.hidden, args.layers, args.steps)[1])
            common.log(f"run {repeat + 1} of {args.repeats}, {name}: {times[name][-1]:.4f} s/step")
    t = {name: statistics.median(values) for name, values in times.items()}
    mb = {}
    for reference in ("adapter_disabled", "frozen_copy"):  # each in a fresh process: the peak is the process's
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            mb[reference] = pool.submit(memory, args, reference).result()
    body = "\n".join([
        f"Command: `python bench/overhead.py {' '.join(sys.argv[1:])}` ({args.device}, {torch.get_num_threads()} "
        f"torch threads). Model hidden {args.hidden} × {args.layers} layers, batch {BATCH}; seconds per step after "
        f"{WARMUP} warm-up steps, median of {args.repeats} interleaved runs of {args.steps} steps. Target ≤ 1.10.", "",
        "| trainer | s/step | ratio |", "|---|---|---|", f"| plain Trainer (1 fwd/bwd) | {t['plain_1']:.4f} | |",
        f"| GATrainer (1 fwd/bwd) | {t['ga']:.4f} | {t['ga'] / t['plain_1']:.3f} |",
        f"| plain Trainer (2 accumulated) | {t['plain_2']:.4f} | |",
        f"| GradDiffTrainer (forget + retain) | {t['grad_diff']:.4f} | {t['grad_diff'] / t['plain_2']:.3f} |", "",
        f"NPO + LoRA (r 8 on q/v), model hidden {args.memory_hidden} × {args.memory_layers} layers "
        f"({mb['adapter_disabled']['model']:.0f} MB of weights), each reference in a fresh process:", "",
        f"| reference | reference copy (MB) | peak {'GPU memory' if args.device == 'cuda' else 'RSS'} (MB) |",
        "|---|---|---|", *(f"| {r} | {m['reference']:.0f} | {m['peak']:.0f} |" for r, m in mb.items())])  # fmt: skip
    common.publish(args, "Overhead of the unlearning trainer (`bench/overhead.py`)", body)


if __name__ == "__main__":
    main()
