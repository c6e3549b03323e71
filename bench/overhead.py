"""Overhead of `UnlearningTrainer` against a plain `Trainer`, and memory of the PEFT reference model.

1. Step time: gradient ascent (one forward/backward on a forget batch) vs a plain `Trainer` on the same forget
   batches (one forward/backward), and GradDiff (forget + retain batch) vs a plain `Trainer` doing two accumulated
   forward/backward passes over the same forget and retain batches. Target: ratio <= 1.10.
2. Peak memory of NPO on a LoRA model with the adapter-disabled reference vs with a frozen copy of the model, each in
   a fresh process. Target: the adapter-disabled reference adds no second model.

    python bench/overhead.py [--device cpu|cuda] [--hidden 512] [--layers 4] [--steps 30] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from hf_unlearn import GAConfig, GATrainer, GradDiffConfig, GradDiffTrainer, NPOConfig, NPOTrainer, UnlearningCollator
from hf_unlearn.data import prepare_dataset
from hf_unlearn.synthetic import build_tiny_causal_lm, make_fictitious_qa, split_forget_retain, train_tokenizer

TEMPLATE = "Question: {question}\nAnswer:"


class StepClock(TrainerCallback):
    """Seconds per optimizer step after `warmup` steps, data loading included."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end, self.steps = warmup, None, None, 0

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.start = time.perf_counter()
        self.end, self.steps = time.perf_counter(), state.global_step - self.warmup

    def seconds_per_step(self) -> float:
        return (self.end - self.start) / self.steps


def setup(args):
    forget, retain = split_forget_retain(make_fictitious_qa(num_people=100, facts_per_person=5), 0.5)
    tokenizer = train_tokenizer([f"{r['question']} {r['answer']}" for r in retain])
    return forget, retain, tokenizer


def model_for(args, tokenizer):
    heads = max(1, args.hidden // 64)
    return build_tiny_causal_lm(tokenizer, hidden_size=args.hidden, num_layers=args.layers, num_heads=heads)


def common(args, output_dir: str, **extra) -> dict:
    return dict(output_dir=output_dir, max_steps=args.warmup + args.steps, per_device_train_batch_size=args.batch,
                report_to="none", save_strategy="no", logging_steps=10, disable_tqdm=True, seed=0,
                use_cpu=args.device == "cpu", learning_rate=1e-5, **extra)  # fmt: skip


def time_unlearning(args, trainer_cls, config_cls, forget, retain, tokenizer) -> float:
    clock = StepClock(args.warmup)
    trainer = trainer_cls(model=model_for(args, tokenizer), args=config_cls(**common(args, "/tmp/bench-unlearn")),
                          forget_dataset=forget, retain_dataset=retain, processing_class=tokenizer,
                          callbacks=[clock])  # fmt: skip
    trainer.train()
    return clock.seconds_per_step()


def time_plain(args, rows, accumulation: int, tokenizer) -> float:
    clock = StepClock(args.warmup)
    training_args = TrainingArguments(**common(args, "/tmp/bench-plain", gradient_accumulation_steps=accumulation))
    trainer = Trainer(model=model_for(args, tokenizer), args=training_args, train_dataset=rows,
                      data_collator=UnlearningCollator(tokenizer.pad_token_id), callbacks=[clock])  # fmt: skip
    trainer.train()
    return clock.seconds_per_step()


def interleaved(forget_rows, retain_rows, batch: int) -> list:
    """forget batch, retain batch, forget batch, ... so two accumulated plain steps see one of each."""
    rows = []
    for start in range(0, len(forget_rows), batch):
        rows += forget_rows[start:start + batch] + retain_rows[start:start + batch]
    return rows


def step_times(args) -> dict:
    forget, retain, tokenizer = setup(args)
    forget_rows = prepare_dataset(forget, "forget", tokenizer, TEMPLATE, 512)
    retain_rows = prepare_dataset(retain, "retain", tokenizer, TEMPLATE, 512)
    results = {"ga": [], "plain_1": [], "grad_diff": [], "plain_2": []}
    for _ in range(args.repeats):  # interleave the runs so drift in machine speed hits both sides alike
        results["ga"].append(time_unlearning(args, GATrainer, GAConfig, forget, None, tokenizer))
        results["plain_1"].append(time_plain(args, forget_rows, 1, tokenizer))
        results["grad_diff"].append(time_unlearning(args, GradDiffTrainer, GradDiffConfig, forget, retain, tokenizer))
        # the plain Trainer samples at random, so it sees other pairs; the work per step is the same
        results["plain_2"].append(time_plain(args, interleaved(forget_rows, retain_rows, args.batch), 2, tokenizer))
    return {name: statistics.median(values) for name, values in results.items()}


def memory_child(args, variant: str) -> dict:
    from peft import LoraConfig

    forget, retain, tokenizer = setup(args)
    base = model_for(args, tokenizer)
    reference = copy.deepcopy(base).eval().requires_grad_(False) if variant == "frozen_copy" else None
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    lora = LoraConfig(r=8, target_modules=["q_proj", "v_proj"])
    config = NPOConfig(**common(args, "/tmp/bench-memory"))
    trainer = NPOTrainer(model=base, args=config, forget_dataset=forget, retain_dataset=retain,
                         processing_class=tokenizer, peft_config=lora, reference_model=reference)  # fmt: skip
    trainer.train()
    model_bytes = sum(p.numel() * p.element_size() for p in base.parameters())
    held = trainer.reference_model
    reference_bytes = sum(p.numel() * p.element_size() for p in held.parameters()) if held is not None else 0
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"model_mb": model_bytes / 2**20, "reference_mb": reference_bytes / 2**20, "peak_mb": peak / 2**20}


def memory(args) -> dict:
    out = {}
    for variant in ("adapter_disabled", "frozen_copy"):
        command = [sys.executable, __file__, "--memory-child", variant, "--device", args.device, "--hidden",
                   str(args.memory_hidden), "--layers", str(args.memory_layers), "--steps", "2", "--warmup", "1"]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        out[variant] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-hidden", type=int, default=1024)
    parser.add_argument("--memory-layers", type=int, default=8)
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(args, args.memory_child)))
        return

    times = step_times(args)
    print(f"device {args.device}; model hidden {args.hidden} x {args.layers} layers; batch {args.batch}; "
          f"median of {args.repeats} runs of {args.steps} steps")  # fmt: skip
    print(f"{'':<34}{'s/step':>10}{'ratio':>8}")
    print(f"{'plain Trainer (1 fwd/bwd)':<34}{times['plain_1']:>10.4f}")
    print(f"{'GATrainer (1 fwd/bwd)':<34}{times['ga']:>10.4f}{times['ga'] / times['plain_1']:>8.3f}")
    print(f"{'plain Trainer (2 accumulated)':<34}{times['plain_2']:>10.4f}")
    print(f"{'GradDiffTrainer (forget+retain)':<34}{times['grad_diff']:>10.4f}"
          f"{times['grad_diff'] / times['plain_2']:>8.3f}")  # fmt: skip

    mem = memory(args)
    unit = "peak GPU MB" if args.device.startswith("cuda") else "peak RSS MB"
    print(f"\nNPO + LoRA, model hidden {args.memory_hidden} x {args.memory_layers} layers "
          f"({mem['adapter_disabled']['model_mb']:.0f} MB of weights)")  # fmt: skip
    print(f"{'reference':<22}{'reference copy MB':>18}{unit:>14}")
    for variant, values in mem.items():
        print(f"{variant:<22}{values['reference_mb']:>18.0f}{values['peak_mb']:>14.0f}")


if __name__ == "__main__":
    main()
