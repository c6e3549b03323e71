"""Per-process memory of NPO (policy + frozen reference + AdamW) under DDP, DeepSpeed ZeRO-2 and ZeRO-3, 2 processes on
CPU (gloo). Target: under ZeRO-3 each rank holds <= 0.6x the model states that it holds under DDP.

    python bench/scale.py [--hidden 1024] [--layers 8] [--steps 3] [--output [FILE]]

Launches `torch.distributed.run --nproc_per_node 2` on itself once per engine (`--worker ENGINE OUT`). Each rank
measures, at its second optimizer step (the optimizer's states exist, the gradients are not yet freed), the bytes of
the model states it holds, each storage counted once: the policy's weights (a ZeRO-3 parameter's `ds_tensor`
partition), the fp32 master weights the optimizer updates, their gradients, AdamW's states, and the reference model's
weights. Communication buckets (DDP's, ZeRO's `reduce_bucket_size` buffer) are not model states: they show in RSS only.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
import psutil
import torch
from transformers import TrainerCallback

ENGINES = ("ddp", "zero2", "zero3")
MB = 2**20


def storage_bytes(tensors, seen: set) -> int:
    """Bytes of the storages behind `tensors` not yet in `seen` (views of one flat buffer count it once)."""
    storages = {s.data_ptr(): s.nbytes() for s in (t.untyped_storage() for t in tensors if t is not None)}
    new = {pointer: size for pointer, size in storages.items() if size and pointer not in seen}
    seen.update(new)
    return sum(new.values())


def weights(module) -> list:
    return [t for p in module.parameters() for t in (p.data, getattr(p, "ds_tensor", None))]


def model_states(trainer, inner: torch.optim.Optimizer) -> dict:
    """MB per kind of model state this rank holds; each storage counts in the first kind that holds it."""
    masters = [p for group in inner.param_groups for p in group["params"]]
    kinds = {"weights": weights(trainer.model), "master": masters,
             "grads": [p.grad for p in masters + list(trainer.model.parameters())],
             "optimizer": [t for state in inner.state.values() for t in state.values() if torch.is_tensor(t)],
             "reference": weights(trainer.reference_model)}  # fmt: skip
    seen = set()
    return {kind: storage_bytes(tensors, seen) / MB for kind, tensors in kinds.items()}


class Probe(TrainerCallback):
    """Times the steps; after step 1 it arms a pre-hook on the torch optimizer that measures the next step once."""

    def __init__(self):
        self.trainer, self.times, self.states, self.rss, self.setup_peak = None, [], None, None, None

    def on_train_begin(self, args, state, control, **kwargs):  # the engines are set up: the peak so far is theirs
        self.setup_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter())
        if state.global_step == 1:
            inner = self.trainer.optimizer  # AcceleratedOptimizer -> AdamW; DeepSpeed's wrapper -> ZeRO -> AdamW
            while hasattr(inner, "optimizer"):
                inner = inner.optimizer
            handle = inner.register_step_pre_hook(lambda optimizer, *_: self.measure(optimizer, handle))

    def measure(self, inner, handle):
        handle.remove()
        self.states, self.rss = model_states(self.trainer, inner), psutil.Process().memory_info().rss / MB


def worker(args) -> None:
    engine, out = args.worker
    torch.set_num_threads(1)
    from hf_unlearn import NPOConfig, NPOTrainer
    from hf_unlearn.synthetic import build_tiny_causal_lm, make_fictitious_qa, split_forget_retain, train_tokenizer

    if engine != "ddp":
        import deepspeed  # noqa: F401  (in the baseline, as DDP's torch.distributed is)
    forget, retain = split_forget_retain(make_fictitious_qa(num_people=40, facts_per_person=5), forget_fraction=0.2)
    tokenizer = train_tokenizer([f"{r['question']} {r['answer']}" for r in forget + retain])
    baseline = psutil.Process().memory_info().rss / MB
    # the model before the config: once a ZeRO-3 TrainingArguments exists, a model is built under zero.Init
    model = build_tiny_causal_lm(tokenizer, hidden_size=args.hidden, num_layers=args.layers,
                                 num_heads=max(1, args.hidden // 64))  # fmt: skip
    parameters = sum(p.numel() for p in model.parameters())
    extra = {} if engine == "ddp" else {"deepspeed": str(common.ROOT / "examples" / "accelerate" / f"ds_{engine}.json")}
    probe = Probe()
    with tempfile.TemporaryDirectory() as output_dir:
        config = NPOConfig(output_dir=output_dir, max_steps=args.steps, per_device_train_batch_size=4, seed=0,
                           learning_rate=1e-5, report_to="none", save_strategy="no", logging_strategy="no",
                           disable_tqdm=True, use_cpu=True, **extra)  # fmt: skip
        probe.trainer = NPOTrainer(model=model, args=config, forget_dataset=forget, retain_dataset=retain,
                                   processing_class=tokenizer, callbacks=[probe])  # fmt: skip
        probe.trainer.train()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    rate = (len(probe.times) - 1) / (probe.times[-1] - probe.times[0])
    record = {"parameters": parameters, "states": probe.states, "baseline": baseline, "peak": peak,
              "setup_peak": probe.setup_peak, "rss_at_step": probe.rss, "steps_per_s": rate}  # fmt: skip
    Path(out, f"rank{config.process_index}.json").write_text(json.dumps(record))
    torch.distributed.destroy_process_group()
    os._exit(0)  # skip the interpreter's teardown (gloo's threads vs finalisation)


def launch(args, engine: str, out: Path) -> list[dict]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__,
               "--hidden", str(args.hidden), "--layers", str(args.layers), "--steps", str(args.steps),
               "--worker", engine, str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(out / "log.txt", "w") as log:
        result = subprocess.run(command, env=env, cwd=common.ROOT, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode:
        raise SystemExit(f"{engine} failed ({result.returncode}):\n" + (out / "log.txt").read_text()[-4000:])
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def main():
    parser = common.parser(__doc__, "scale", seed=None)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="Optimizer steps (>= 2: measured at the 2nd).")
    parser.add_argument("--worker", nargs=2, metavar=("ENGINE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.steps < 2:
        parser.error("--steps must be >= 2: the 2nd step is measured and steps/s is timed after the 1st")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for engine in ENGINES:
            start = time.perf_counter()
            (out := Path(tmp, engine)).mkdir()
            ranks = launch(args, engine, out)
            rows[engine] = {"states": max(sum(r["states"].values()) for r in ranks),
                            "rss": max(r["peak"] - r["baseline"] for r in ranks),
                            "setup": max(r["setup_peak"] - r["baseline"] for r in ranks),
                            "kinds": {k: max(r["states"][k] for r in ranks) for k in ranks[0]["states"]},
                            "steps_per_s": min(r["steps_per_s"] for r in ranks), "ranks": ranks}  # fmt: skip
            common.log(f"{engine}: {rows[engine]['states']:.0f} MB of model states, RSS - baseline at that step "
                       f"{max(r['rss_at_step'] - r['baseline'] for r in ranks):.0f} MB, peak {rows[engine]['rss']:.0f} "
                       f"MB; {time.perf_counter() - start:.0f} s")  # fmt: skip
    ddp, parameters = rows["ddp"], rows["ddp"]["ranks"][0]["parameters"]
    ratio = rows["zero3"]["states"] / ddp["states"]
    lines = [f"Command: `python bench/scale.py {' '.join(sys.argv[1:])}`: NPO (frozen reference copy, AdamW, fp32) on "
             f"a Llama of hidden {args.hidden} × {args.layers} layers ({parameters / 1e6:.1f} M parameters, "
             f"{parameters * 4 / MB:.0f} MB in fp32), batch 4 per rank, {args.steps} steps, 2 processes on CPU (gloo, "
             "1 thread each). Per rank: the larger of the two ranks. Model states: measured at the 2nd optimizer step, "
             "each storage once. Peak RSS: over the RSS after imports (before the model is built), for the whole run "
             "and up to the end of the engines' set-up. Steps/s: after the 1st step.", "",
             "| engine | model states per rank (MB) | ratio to DDP | weights / master / grads / AdamW / reference (MB) "
             "| peak RSS − baseline (MB) | ratio to DDP | of it, set-up (MB) | steps/s |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for engine, row in rows.items():
        kinds = " / ".join(f"{v:.0f}" for v in row["kinds"].values())
        lines.append(f"| {engine} | {row['states']:.0f} | {row['states'] / ddp['states']:.2f} | {kinds} | "
                     f"{row['rss']:.0f} | {row['rss'] / ddp['rss']:.2f} | {row['setup']:.0f} | "
                     f"{row['steps_per_s']:.3f} |")  # fmt: skip
    verdict = "met" if ratio <= 0.6 else "NOT met"
    lines += ["", f"ZeRO-3 / DDP model states per rank: {ratio:.4f} (target ≤ 0.6: {verdict}); ZeRO-2 / DDP: "
              f"{rows['zero2']['states'] / ddp['states']:.4f}."]  # fmt: skip
    common.publish(args, "Memory per process under DDP, ZeRO-2 and ZeRO-3 (`bench/scale.py`)", "\n".join(lines))


if __name__ == "__main__":
    main()
