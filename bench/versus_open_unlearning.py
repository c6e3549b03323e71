"""hf-unlearn beside open-unlearning (locuslab), the reference framework, on one checkpoint (issue 29).

Builds ../shared/PEER.md's tiny Llama and WordLevel tokenizer, fine-tunes it on TOFU full (and a gold model on
retain90) once, then runs each job as its own process for both frameworks, interleaved `--repeats` times: GradDiff,
NPO, NPO+LoRA (theirs: full NPO) on forget10/retain90, and the TOFU forget10 eval. Prints steps/s, process wall and
peak RSS side by side, and every metric both compute on the same checkpoint with the relative difference.

    python bench/versus_open_unlearning.py --peer-src ../peer/open-unlearning --peer-python ../peer/venv/bin/python \
        [--workdir DIR] [--repeats 2] [--steps 60] [--jobs graddiff npo npo_lora eval] [--eval-limit N] [--output]

The open-unlearning checkout needs PEER.md's three changes (deepspeed import, local JSONL, configs/model/tiny-llama).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path

from common import ROOT, log, parser, publish, setup, train

TEMPLATE = "Question: {question}\nAnswer:"
TOFU = ROOT.parent / "shared" / "data" / "tofu"
# job -> (our method, their trainer, LoRA on ours); open-unlearning has no LoRA, so npo_lora meets their full NPO
JOBS = {"graddiff": ("grad_diff", "GradDiff", False), "npo": ("npo", "NPO", False), "npo_lora": ("npo", "NPO", True)}
# the reference's loss reduction and retain sampling, passed to ours where UnlearningConfig has the fields
PEER_CONVENTIONS = {"nll_reduction": "token", "retain_sampling": "replacement"}
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HYDRA_FULL_ERROR": "1"}
# PEER.md's overrides for CPU/fp32 and timing training alone, plus gradient_accumulation_steps=1 (their finetune.yaml
# accumulates 4 micro-batches per optimizer step)
PEER_TRAIN = ["trainer.args.bf16=false", "trainer.args.bf16_full_eval=false", "trainer.args.optim=adamw_torch",
              "trainer.args.warmup_epochs=null", "trainer.args.report_to=none", "trainer.args.do_eval=false",
              "trainer.args.eval_on_start=false", "trainer.args.eval_strategy=no",
              "trainer.args.gradient_accumulation_steps=1"]  # fmt: skip
PEER_MIAS = "+eval/tofu_metrics=[exact_memorization,mia_min_k_plus_plus,mia_min_k,mia_loss,mia_zlib]"
ROUGE_KEYS = ["forget_Q_A_ROUGE"] + [f"model_utility.pre_compute.{s}_Q_A_ROUGE" for s in ("retain", "ra", "wf")]
# the wrapper every measured command runs in: the child's wall and its peak RSS (KiB), on the last line
WRAP = ("import resource,subprocess,sys,time;t=time.perf_counter();rc=subprocess.call(sys.argv[1:]);"
        "print('@@measured',rc,time.perf_counter()-t,resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
NAMES = {"train_steps_per_second": "steps/s", "wall": "process wall (s)", "rss": "peak RSS (GiB)"}
# their TOFU_EVAL.json key -> ours (evaluate_tofu); from configs/eval/tofu.yaml and configs/eval/tofu_metrics/*
METRICS = {"forget_quality": "forget_quality", "model_utility": "model_utility",
           "forget_Q_A_Prob": "forget_probability", "forget_Q_A_ROUGE": "forget_rouge",
           "forget_truth_ratio": "forget_truth_ratio", "retain_Q_A_Prob": "retain_probability",
           "retain_Q_A_ROUGE": "retain_rouge", "retain_Truth_Ratio": "retain_truth_ratio",
           "ra_Q_A_Prob_normalised": "real_authors_probability", "ra_Q_A_ROUGE": "real_authors_rouge",
           "ra_Truth_Ratio": "real_authors_truth_ratio", "wf_Q_A_Prob_normalised": "world_facts_probability",
           "wf_Q_A_ROUGE": "world_facts_rouge", "wf_Truth_Ratio": "world_facts_truth_ratio", "privleak": "privleak",
           "mia_loss": "mia_loss_auc", "mia_zlib": "mia_zlib_auc", "mia_min_k": "mia_min_k_auc",
           "mia_min_k_plus_plus": "mia_min_k_plus_plus_auc", "extraction_strength": "extraction_strength",
           "exact_memorization": "exact_memorization"}  # fmt: skip
# their QADataset on every row, in their venv: the token ids and labels they train and score
PEER_IDS = """import json, sys
sys.path.insert(0, sys.argv[1] + "/src")
from omegaconf import OmegaConf
from transformers import AutoTokenizer
from data.qa import QADataset
template = OmegaConf.to_container(OmegaConf.load(sys.argv[1] + "/configs/model/tiny-llama.yaml").template_args)
tokenizer, out = AutoTokenizer.from_pretrained(sys.argv[2]), {}
for split in sys.argv[5:]:
    data = QADataset(dict(path="json", data_files=f"{sys.argv[3]}/{split}.jsonl", split="train"), template, tokenizer)
    out[split] = [[data[i]["input_ids"].tolist(), data[i]["labels"].tolist()] for i in range(len(data))]
from transformers import AutoModelForCausalLM
row = data[0]  # the last split's first row
model = AutoModelForCausalLM.from_pretrained(sys.argv[2])
out["loss"] = model(input_ids=row["input_ids"][None], labels=row["labels"][None]).loss.item()
json.dump(out, open(sys.argv[4], "w"))
"""


def build_tokenizer(tofu: Path):
    """PEER.md's WordLevel tokenizer: TOFU full's questions and answers, BOS prepended, vocab 8,208."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from hf_unlearn.data import read_jsonl

    texts = [text for row in read_jsonl(tofu / "full.jsonl") for text in (row["question"], row["answer"])]
    core = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.train_from_iterator(texts + ["Question: Answer:"],
                             trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "<s>", "</s>"]))  # fmt: skip
    core.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", bos_token="<s>",
                                   eos_token="</s>")  # fmt: skip


def build_model(seed: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=8208, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                                        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                                        pad_token_id=0, bos_token_id=2, eos_token_id=3)).float()  # fmt: skip


def fine_tuned(path: Path, train_split: str, tokenizer, args) -> Path:
    """PEER.md's fine-tune (batch 16, lr 1e-3, 5 epochs, plain Trainer) saved under `path`, or the one already there."""
    if (path / "config.json").exists():
        portable(path)
        return path
    from hf_unlearn.data import UnlearningCollator, prepare_dataset, read_jsonl

    rows = prepare_dataset(read_jsonl(args.tofu / f"{train_split}.jsonl"), train_split, tokenizer, TEMPLATE, 512)
    model = build_model(args.seed)
    log(f"fine-tuning on {train_split} ({len(rows)} rows) -> {path}")
    seconds = train(model, rows, epochs=5, learning_rate=1e-3, batch_size=16, seed=args.seed,
                    collator=UnlearningCollator(tokenizer.pad_token_id))  # fmt: skip
    log(f"fine-tuned in {seconds:.0f} s")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    portable(path)
    return path


def portable(path: Path) -> None:
    """Lets their transformers (4.45) read what ours (5.x) saved: the tokenizer class 4.45 knows, and the rope theta
    and dtype under 4.45's keys (5.x nests them in `rope_parameters` and names the dtype `dtype`)."""
    for name, update in (("tokenizer_config.json", {"tokenizer_class": "PreTrainedTokenizerFast"}),
                         ("config.json", {"rope_theta": 10000.0, "torch_dtype": "float32"})):  # fmt: skip
        file = path / name
        if file.exists():
            config = json.loads(file.read_text())
            config.update({k: v for k, v in update.items() if name != "config.json" or k not in config})
            file.write_text(json.dumps(config, indent=2))


def check_token_ids(model_dir: Path, args) -> str:
    """Our rows (prepare_dataset, our template) against their QADataset's, run in their venv: the same ids and labels
    on every forget10/retain90/holdout10 row, or an AssertionError."""
    from transformers import AutoTokenizer

    from hf_unlearn.data import prepare_dataset, read_jsonl

    splits = ["forget10", "retain90", "holdout10"]
    out = args.workdir / "peer_ids.json"
    out.unlink(missing_ok=True)
    command = [args.peer_python, "-c", PEER_IDS, str(args.peer_src), str(model_dir), str(args.tofu), str(out), *splits]
    process = subprocess.run(command, env=peer_env(args), capture_output=True, text=True)
    if not out.exists():
        raise RuntimeError(f"their QADataset failed: {process.stderr[-3000:]}")
    theirs, tokenizer = json.loads(out.read_text()), AutoTokenizer.from_pretrained(model_dir)
    import torch
    from transformers import AutoModelForCausalLM

    ids, labels = (torch.tensor([value]) for value in theirs[splits[-1]][0])
    loss = AutoModelForCausalLM.from_pretrained(model_dir)(input_ids=ids, labels=labels).loss.item()
    assert abs(loss - theirs["loss"]) <= 1e-5 * abs(loss), f"the same model, another loss: {loss} / {theirs['loss']}"
    for split in splits:
        ours = prepare_dataset(read_jsonl(args.tofu / f"{split}.jsonl"), split, tokenizer, TEMPLATE, 512)
        for index, (row, (ids, labels)) in enumerate(zip(ours, theirs[split], strict=True)):
            assert row["input_ids"] == ids and row["labels"] == labels, f"{split} row {index} differs: {row} / {ids}"
    rows = sum(len(theirs[split]) for split in splits)
    return (f"Token ids and labels identical on all {rows} rows of {', '.join(splits)} (their QADataset, their "
            f"venv); the fine-tuned model's loss on one row: {loss:.6f} (ours), {theirs['loss']:.6f} (theirs)")


def model_paths(model: Path) -> list[str]:
    """Hydra overrides naming the model (their experiment configs set a Hub id over model=tiny-llama's)."""
    return [f"model.{part}.pretrained_model_name_or_path={model}" for part in ("model_args", "tokenizer_args")]


def peer_env(args, model: Path | None = None, tofu: Path | None = None) -> dict:
    env = {**os.environ, **OFFLINE, "TOFU_DATA_DIR": str(tofu or args.tofu)}
    env.pop("PYTHONPATH", None)
    return {**env, "TINY_LLAMA_PATH": str(model)} if model else env


def measured(command: list[str], log_file: Path, cwd: Path = ROOT, env: dict | None = None) -> dict:
    """Runs `command` inside the wrapper; its wall (s), peak RSS (GiB) and Trainer numbers, or raises with the log."""
    with open(log_file, "w") as out:
        subprocess.run([sys.executable, "-c", WRAP, *command], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    text = log_file.read_text()
    found = re.findall(r"@@measured (-?\d+) ([\d.]+) (\d+)", text)
    if not found or found[-1][0] != "0":
        raise RuntimeError(f"{' '.join(command)} failed; the end of {log_file}:\n{text[-3000:]}")
    result = {"wall": float(found[-1][1]), "rss": int(found[-1][2]) / 2**20}
    for key in ("train_steps_per_second", "train_loss", "train_runtime"):
        values = re.findall(rf"'{key}': ([-+\w.]+)", text)
        if values:
            result[key] = float(values[-1])
    return result


def unlearn(job: str, side: str, out: Path, args) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if side == "ours":
        return measured([sys.executable, __file__, "--worker", "unlearn", "--job", job, "--model", str(args.original),
                         "--out", str(out), "--steps", str(args.steps), "--seed", str(args.seed),
                         "--tofu-path", str(args.tofu)], out / "log.txt")  # fmt: skip
    command = [args.peer_python, "src/train.py", "--config-name=unlearn.yaml", "experiment=unlearn/tofu/default",
               f"trainer={JOBS[job][1]}", "model=tiny-llama", "forget_split=forget10", "retain_split=retain90",
               "holdout_split=holdout10", f"task_name=versus_{job}", f"paths.output_dir={out}", *PEER_TRAIN,
               "trainer.args.per_device_train_batch_size=4", f"+trainer.args.max_steps={args.steps}",
               "trainer.args.save_strategy=no", "trainer.args.learning_rate=1e-4", f"trainer.args.seed={args.seed}",
               *model_paths(args.original)]
    return measured(command, out.parent / f"{out.name}.log", args.peer_src, peer_env(args, args.original))


def evaluate(model: Path, side: str, out: Path, args, gold: Path | None) -> tuple[dict, dict]:
    """(wall and RSS, {metric: value}) of one framework's TOFU forget10 eval of `model`."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if side == "ours":
        command = [sys.executable, __file__, "--worker", "eval", "--model", str(model), "--out", str(out / "eval.json"),
                   "--tofu-path", str(args.eval_tofu), "--max-new-tokens", str(args.max_new_tokens)]  # fmt: skip
        speed = measured(command + (["--gold", str(gold)] if gold else []), out / "log.txt")
        return speed, json.loads((out / "eval.json").read_text())
    rouge = [f"eval.tofu.metrics.{key}.generation_args.max_new_tokens={args.max_new_tokens}" for key in ROUGE_KEYS]
    command = [args.peer_python, "src/eval.py", "--config-name=eval.yaml", "experiment=eval/tofu/default",
               "model=tiny-llama", "model.model_args.device_map=cpu", "forget_split=forget10",
               "holdout_split=holdout10", f"retain_logs_path={gold or 'null'}", PEER_MIAS, "eval.tofu.batch_size=32",
               "eval.tofu.overwrite=true", "task_name=versus_eval", f"paths.output_dir={out}",
               *model_paths(model), *(rouge if args.max_new_tokens != 200 else [])]  # fmt: skip
    speed = measured(command, out.parent / f"{out.name}.log", args.peer_src, peer_env(args, model, args.eval_tofu))
    logs = json.loads((out / "TOFU_EVAL.json").read_text())
    return speed, {key: value["agg_value"] for key, value in logs.items() if isinstance(value, dict)
                   and isinstance(value.get("agg_value"), (int, float))}  # fmt: skip


def gold_reference(side: str, args) -> Path:
    """The gold model's eval by each framework, once: our score_gold arguments / their TOFU_EVAL.json."""
    out = args.workdir / "eval" / f"gold-{side}-{args.eval_tag}"
    target = out / ("gold_args.json" if side == "ours" else "TOFU_EVAL.json")
    if not target.exists():
        log(f"{side}: evaluating the gold model")
        _, result = evaluate(args.gold, side, out, args, None)
        if side == "ours":
            from hf_unlearn.evaluation.tofu import score_gold

            target.write_text(json.dumps(score_gold(json.loads((out / "eval.json").read_text()))))
    return target


def worker(args) -> None:
    """One measured job of ours, in its own process: an unlearning run or a TOFU eval."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(args.model), AutoTokenizer.from_pretrained(args.model)
    if args.worker == "eval":
        from hf_unlearn.evaluation import evaluate_tofu

        gold = json.loads(Path(args.gold).read_text()) if args.gold else {}
        result = evaluate_tofu(model, tokenizer, "forget10", path=args.tofu_path, max_new_tokens=args.max_new_tokens,
                               batch_size=32, **gold)  # fmt: skip
        Path(args.out).write_text(json.dumps(result))
        return
    from hf_unlearn import METHODS
    from hf_unlearn.data import load_tofu

    method, _, lora = JOBS[args.job]
    config_cls, trainer_cls = METHODS[method]
    names = {f.name for f in fields(config_cls)}
    # where UnlearningConfig has the fields (hf-unlearn after issue 29); an older one runs its own defaults
    conventions = {key: value for key, value in PEER_CONVENTIONS.items() if key in names}
    print(f"@@conventions {json.dumps(conventions)}", flush=True)
    # the reference's other settings: weight decay 0.01, AdamW (torch), a log line every 5 steps, linear decay
    config = config_cls(output_dir=args.out, per_device_train_batch_size=4, max_steps=args.steps, learning_rate=1e-4,
                        save_strategy="no", report_to=[], use_cpu=True, seed=args.seed, weight_decay=0.01,
                        optim="adamw_torch", logging_steps=5, **conventions)  # fmt: skip
    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = trainer_cls(model=model, args=config, forget_dataset=load_tofu("forget10", args.tofu_path),
                          retain_dataset=load_tofu("retain90", args.tofu_path), processing_class=tokenizer,
                          peft_config=peft_config)  # fmt: skip
    print(trainer.train().metrics, flush=True)
    trainer.model.save_pretrained(args.out)  # as theirs does at the end of every run (weights and tokenizer)
    tokenizer.save_pretrained(args.out)
    portable(Path(args.out))


def spread(values: list[float], digits: str) -> str:
    if not values:
        return "n/a"
    mean = statistics.mean(values)
    if len(values) == 1:
        return f"{mean:{digits}}"
    return f"{mean:{digits}} ({min(values):{digits}}–{max(values):{digits}})"


def ratio(ours: list[float], theirs: list[float]) -> str:
    return f"{statistics.mean(ours) / statistics.mean(theirs):.2f}" if ours and theirs else "n/a"


def limited_tofu(args) -> Path:
    """TOFU as is, or (with --eval-limit N) the first N rows of every split, so both frameworks score the same rows."""
    if not args.eval_limit:
        return args.tofu
    folder = args.workdir / f"tofu-first{args.eval_limit}"
    folder.mkdir(parents=True, exist_ok=True)
    for file in args.tofu.glob("*.jsonl"):
        lines = file.read_text().splitlines()[: args.eval_limit]
        (folder / file.name).write_text("\n".join(lines) + "\n")
    return folder


def metric_table(results: dict) -> list[str]:
    """Per model evaluated by both: every metric side by side, the relative difference (ours − theirs) / |theirs|."""
    models = [m for m in results if "ours" in results[m] and "theirs" in results[m]]
    head = ["metric (theirs → ours)"] + [f"{m}: {c}" for m in models for c in ("ours", "theirs", "rel. diff")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = set()
    for theirs_key, ours_key in METRICS.items():
        cells = []
        for model in models:
            a, b = results[model]["ours"].get(ours_key), results[model]["theirs"].get(theirs_key)
            if a is None or b is None:
                cells += [f"{a:.5g}" if a is not None else "n/a", f"{b:.5g}" if b is not None else "n/a", "n/a"]
                continue
            diff = (a - b) / abs(b) if b else (0.0 if a == b else math.inf)
            cells += [f"{a:.5g}", f"{b:.5g}", f"{diff:+.2e}"]
            if ours_key.startswith("mia_") and abs(b - (1 - a)) < abs(b - a):
                notes.add(theirs_key)
        lines.append(f"| {theirs_key} → {ours_key} | " + " | ".join(cells) + " |")
    if notes:
        lines.append(f"\nAUCs closer to 1 − ours than to ours (opposite orientation): {', '.join(sorted(notes))}.")
    return lines


def main():
    p = parser(__doc__, "versus_open_unlearning", seed=0)
    p.add_argument("--peer-src", type=Path, help="A checkout of open-unlearning with PEER.md's changes.")
    p.add_argument("--peer-python", help="The python of open-unlearning's own venv.")
    p.add_argument("--workdir", type=Path, help="Models, runs and logs (default: a temp dir, removed; kept if given).")
    p.add_argument("--repeats", type=int, default=2, help="Interleaved runs per job and side.")
    p.add_argument("--steps", type=int, default=60, help="Optimizer steps per unlearning run.")
    p.add_argument("--jobs", nargs="+", default=["graddiff", "npo", "npo_lora", "eval"], choices=[*JOBS, "eval"])
    p.add_argument("--max-new-tokens", type=int, default=200, help="Generation length for ROUGE (theirs: 200).")
    p.add_argument("--eval-limit", type=int, help="Score only the first N rows of every split (quick checks).")
    p.add_argument("--tofu-path", type=Path, default=TOFU, help="TOFU JSONL files.")
    for name in ("--worker", "--job", "--model", "--out", "--gold"):
        p.add_argument(name, help=argparse.SUPPRESS)
    setup(args := p.parse_args())
    if args.worker:
        return worker(args)
    if not (args.peer_src and args.peer_python):
        p.error("--peer-src and --peer-python are required")
    args.peer_src, args.tofu = args.peer_src.resolve(), args.tofu_path.resolve()
    temporary = None if args.workdir else tempfile.TemporaryDirectory(prefix="versus-")
    args.workdir = (args.workdir or Path(temporary.name)).resolve()
    load_start, start = os.getloadavg(), time.perf_counter()
    import torch

    from hf_unlearn.config import UnlearningConfig

    tokenizer = build_tokenizer(args.tofu)
    assert len(tokenizer) == 8208, f"vocab {len(tokenizer)}, PEER.md's is 8208"
    args.original = fine_tuned(args.workdir / "models" / "original", "full", tokenizer, args)
    args.gold = fine_tuned(args.workdir / "models" / "gold", "retain90", tokenizer, args)
    ids_check = check_token_ids(args.original, args)
    log(ids_check)
    speed: dict[tuple[str, str, str], list[float]] = {}
    losses: dict[tuple[str, str], list[float]] = {}
    saved: dict[str, Path] = {}

    def record(job, side, result, prefix=""):
        for key, name in NAMES.items():
            if key in result:
                speed.setdefault((job, prefix + name, side), []).append(result[key])
        if "train_loss" in result:
            losses.setdefault((job, side), []).append(result["train_loss"])

    for rep in range(args.repeats):
        for job in [j for j in args.jobs if j in JOBS]:
            for side in ("ours", "theirs"):
                out = args.workdir / "runs" / f"{job}-{side}-{rep}"
                result = unlearn(job, side, out, args)
                log(f"{job} {side} #{rep}: {result}")
                record(job, side, result)
                if job == "graddiff" and rep == 0:
                    saved[f"graddiff_{side}"] = out
    results: dict[str, dict] = {}
    if "eval" in args.jobs:
        args.eval_tag = f"n{args.eval_limit or 'all'}-t{args.max_new_tokens}"
        args.eval_tofu = limited_tofu(args)
        golds = {side: gold_reference(side, args) for side in ("ours", "theirs")}
        models = {"original": args.original, **saved}
        for rep in range(args.repeats):
            for name, path in models.items():
                for side in ("ours", "theirs"):
                    out = args.workdir / "eval" / f"{name}-{side}-{rep}"
                    result, metrics = evaluate(path, side, out, args, golds[side])
                    log(f"eval {name} {side} #{rep}: {result}")
                    record(f"eval {name}", side, result, "eval ")
                    results.setdefault(name, {}).setdefault(side, metrics)
    load_end = os.getloadavg()
    applied = [k for k in PEER_CONVENTIONS if k in {f.name for f in fields(UnlearningConfig)}]
    peer_torch = subprocess.run([args.peer_python, "-c", "import torch; print(torch.__version__)"],
                                capture_output=True, text=True).stdout.strip()  # fmt: skip
    git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True).stdout.strip()  # noqa: E731
    dirty = " (uncommitted changes)" if git("-C", str(ROOT), "status", "--porcelain", "hf_unlearn") else ""
    lines = [f"Command: `python bench/versus_open_unlearning.py {' '.join(sys.argv[1:])}`", "",
             f"hf-unlearn {git('-C', str(ROOT), 'rev-parse', '--short', 'HEAD')}{dirty}; open-unlearning "
             f"{git('-C', str(args.peer_src), 'rev-parse', '--short', 'HEAD')}; torch {torch.__version__} (ours), "
             f"{peer_torch} (theirs); {os.cpu_count()} CPUs; load average at start "
             f"{' / '.join(f'{x:.2f}' for x in load_start)}, at end {' / '.join(f'{x:.2f}' for x in load_end)}; "
             f"bench wall {time.perf_counter() - start:.0f} s.", "",
             f"Tiny Llama (PEER.md, 6.8M parameters, fp32), fine-tuned 5 epochs on TOFU full; {args.repeats} "
             f"interleaved repeats; unlearning forget10/retain90, batch 4 + 4, {args.steps} steps, lr 1e-4, seed "
             f"{args.seed}; npo_lora: ours NPO + LoRA r=8 (q_proj, v_proj) vs their full NPO. Reference conventions "
             f"applied to ours: {', '.join(f'{k}={PEER_CONVENTIONS[k]}' for k in applied) or 'none (fields absent)'}. "
             f"Eval: forget10, {args.max_new_tokens} new tokens, batch 32, "
             f"{f'first {args.eval_limit} rows of every split' if args.eval_limit else 'every row'}. {ids_check}.",
             "", "| job | measure | ours | theirs | ratio ours/theirs |", "|---|---|---|---|---|"]  # fmt: skip
    for job, name in dict.fromkeys((j, n) for j, n, _ in speed):
        ours, theirs = speed.get((job, name, "ours"), []), speed.get((job, name, "theirs"), [])
        digits = ".2f" if "RSS" in name or "steps" in name else ".1f"
        lines.append(f"| {job} | {name} | {spread(ours, digits)} | {spread(theirs, digits)} | {ratio(ours, theirs)} |")
    for job, side in sorted(losses):
        if side == "ours":
            lines.append(f"| {job} | final train_loss | {spread(losses[job, 'ours'], '.4f')} | "
                         f"{spread(losses.get((job, 'theirs'), []), '.4f')} | |")  # fmt: skip
    if results:
        lines += ["", "Metrics on the same checkpoints (graddiff_X: X's GradDiff run #0):", ""] + metric_table(results)
    publish(args, "hf-unlearn vs open-unlearning (`bench/versus_open_unlearning.py`)", "\n".join(lines))
    if temporary:
        temporary.cleanup()


if __name__ == "__main__":
    main()
