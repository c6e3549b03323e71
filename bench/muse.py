"""MUSE-News end to end: train a small Llama on part of MUSE-News' forget corpus plus retain texts (the original), its
retrained model on the retain texts alone, unlearn the forget part with each causal-LM method (`--methods`, default all
of them), and write one table: VerbMem, KnowMem on forget and retain, PrivLeak, wall time, steps. Sanity check: the
original memorises (VerbMem well above the retrained model's) and PrivLeak(retrained) = 0 by construction.

Sized to train in minutes on a CPU: `--rows N` rows of each evaluated split (`evaluate_muse`'s `limit`), and as forget
corpus only the raw/forget articles that hold them: those sharing a line with the continuations (`gt`) of the first N
verbmem rows (the text a model must reproduce) or with the first N privleak forget texts, and the article holding each
of the first N KnowMem forget answers (of those holding the answer, the one naming most of the question's capitalised
words), plus each of the first N verbmem rows (prompt and continuation) as one text, so that its continuation follows
the same ~1,000 tokens at the same positions as in the test. Windows of 2,048 tokens (`corpus_rows`), so an article is
one window. Retain corpus: `--retain-texts` privleak/retain2 texts (the offline copy's retain corpus), those holding the
first N KnowMem retain answers first.

    python bench/muse.py [--muse-path ../shared/data/muse_news] [--rows 2] [--epochs 60] [--cache DIR]

`--cache DIR` keeps the trained original and retrained models and each row, so a run cut short resumes where it stopped.
"""

from __future__ import annotations

import copy
import re
import sys
import time

from common import ROOT, Cache, load, log, parser, publish, setup, trained_once
from tofu_baselines import LAYERS, LM_METHODS, METHOD_SETTINGS

from hf_unlearn import METHODS
from hf_unlearn.data import corpus_rows
from hf_unlearn.evaluation.muse import evaluate_muse, load_muse, score_muse_gold
from hf_unlearn.pipeline import finetune
from hf_unlearn.synthetic import build_tiny_causal_lm, train_tokenizer

WINDOW = 2048  # tokens per training row: a verbmem row (~1,100 tokens with its continuation) fits whole
HIDDEN = 128  # × LAYERS (4, as the TOFU bench, whose RMU steering layer fits it): 1.7M parameters, 2x its speed
COLUMNS = ["verbmem_f", "knowmem_f", "knowmem_r", "privleak", "mia_min_k_auc"]
UNLEARN = {"num_train_epochs": 3, "learning_rate": 5e-4, "per_device_train_batch_size": 2, "max_length": WINDOW}
# the TOFU bench's settings, but DeepCUT label-free: raw text has no author column to group by
SETTINGS = {**METHOD_SETTINGS, "deepcut": {}}


def holding(texts: list[str], corpus: list[str]) -> set[int]:
    """The `corpus` texts sharing a line of 80+ characters with one of `texts` (a line in 4+ of them is boilerplate)."""
    found = set()
    for line in {line for text in texts for line in text.split("\n") if len(line) >= 80}:
        hits = [i for i, doc in enumerate(corpus) if line in doc]
        found.update(hits if len(hits) <= 3 else [])
    return found


def answering(qa: list[dict], corpus: list[str]) -> list[int]:
    """For each question, the `corpus` text holding its answer that names most of the question's capitalised words
    (none when no text holds the answer)."""
    found = []
    for row in qa:
        words = set(re.findall(r"[A-Z][a-z]+", row["question"]))
        hits = [i for i, doc in enumerate(corpus) if row["answer"] in doc]
        found += [max(hits, key=lambda i: sum(word in corpus[i] for word in words))] if hits else []
    return found


def main():
    p = parser(__doc__, "muse", seed=None, cache=True, device=True, threads=True)
    p.add_argument("--muse-path", default=str(ROOT.parent / "shared" / "data" / "muse_news"))
    p.add_argument("--rows", type=int, default=2, help="Rows of each evaluated split; the forget corpus holds them.")
    p.add_argument("--retain-texts", type=int, default=2, help="privleak/retain2 texts in the retain corpus.")
    p.add_argument("--epochs", type=int, default=60, help="Training epochs (original and retrained alike).")
    p.add_argument("--methods", nargs="+", default=LM_METHODS, choices=sorted(METHODS), help="Methods to run.")
    p.add_argument("--max-new-tokens", type=int, help="One generation cap for VerbMem and KnowMem (default MUSE's).")
    setup(args := p.parse_args())
    use_cpu, n = args.device == "cpu", args.rows
    split = {name: [dict(row) for row in load_muse(*name.split("/"), args.muse_path)]
             for name in ("raw/forget", "verbmem/forget", "privleak/forget", "knowmem/forget_qa", "privleak/retain2",
                          "knowmem/retain_qa")}  # fmt: skip
    raw, retain_texts = ([row["text"] for row in split[name]] for name in ("raw/forget", "privleak/retain2"))
    by_verbmem = holding([row["gt"] for row in split["verbmem/forget"][:n]], raw)
    by_privleak = holding([row["text"] for row in split["privleak/forget"][:n]], raw)
    by_knowmem = answering(split["knowmem/forget_qa"][:n], raw)
    chosen = sorted(by_verbmem | by_privleak | set(by_knowmem))
    first = answering(split["knowmem/retain_qa"][:n], retain_texts)
    kept = list(dict.fromkeys(first + list(range(len(retain_texts)))))[: args.retain_texts]
    excerpts = [f"{row['prompt']} {row['gt']}" for row in split["verbmem/forget"][:n]]
    forget = [{"text": text} for text in [raw[i] for i in chosen] + excerpts]
    retain = [{"text": retain_texts[i]} for i in kept]
    tokenizer = train_tokenizer(retain_texts, vocab_size=8000)  # on every retain text, never a forget one (as `run`)
    tokens = {side: sum(len(ids) for ids in tokenizer([r["text"] for r in rows])["input_ids"])
              for side, rows in (("forget", forget), ("retain", retain))}  # fmt: skip
    sizing = (f"forget corpus ({tokens['forget']} tokens): the first {n} verbmem rows and {len(chosen)} raw/forget "
              f"articles: {len(by_verbmem)} hold their continuations, {len(by_privleak)} the first {n} privleak forget "
              f"texts, {len(set(by_knowmem))} hold {len(by_knowmem)} of the first {n} KnowMem forget answers; retain "
              f"corpus: {len(retain)} privleak/retain2 texts ({tokens['retain']} tokens), {len(set(first))} holding "
              f"{len(first)} of the first {n} KnowMem retain answers")  # fmt: skip
    log(sizing)
    models = Cache(args.cache, f"n{n}", f"r{args.retain_texts}", f"e{args.epochs}", f"w{WINDOW}")
    rows = Cache(args.cache, models.suffix, f"t{args.max_new_tokens}", *UNLEARN.values())

    def trained(name, train_rows):
        """A model trained on `train_rows` (or the cache's) and the training's wall time in seconds."""
        model = build_tiny_causal_lm(tokenizer, hidden_size=HIDDEN, num_layers=LAYERS, num_heads=max(1, HIDDEN // 64),
                                     max_position_embeddings=4096)  # fmt: skip
        windows = corpus_rows([row["text"] for row in train_rows], name, tokenizer, WINDOW)
        return trained_once(models, name, model, lambda: finetune(
            model, tokenizer, windows, f"/tmp/muse-{name}", num_train_epochs=args.epochs, learning_rate=2e-3,
            per_device_train_batch_size=1, use_cpu=use_cpu, lr_scheduler_type="cosine", warmup_steps=10))

    def evaluate(model, **gold_args):
        return evaluate_muse(model.to(args.device), tokenizer, args.muse_path, limit=n,
                             max_new_tokens=args.max_new_tokens, **gold_args)  # fmt: skip

    def retrained_row():
        model, seconds = trained("retrained", retain)
        return evaluate(model), seconds, "-"

    def unlearned(trainer):
        start = time.perf_counter()
        output = trainer.train()
        wall = time.perf_counter() - start
        return evaluate(trainer.model, **gold_args), wall, output.global_step

    original, original_seconds = trained("original", forget + retain)
    retrained = rows.get("retrained", retrained_row)
    gold_args = score_muse_gold(retrained[0])
    table = {"original (forget + retain)": rows.get("original", lambda: (evaluate(original, **gold_args),
                                                                         original_seconds, "-")),
             "retrained (retain only)": retrained}  # fmt: skip
    refused = {}
    for name in args.methods:
        config_cls, trainer_cls = METHODS[name]
        try:  # a method that cannot take raw text rows refuses them here, before any training
            config = config_cls(output_dir=f"/tmp/muse-{name}", use_cpu=use_cpu, report_to="none", save_strategy="no",
                                logging_steps=50, disable_tqdm=True, seed=0, **UNLEARN,
                                **SETTINGS.get(name, {}))  # fmt: skip
            trainer = trainer_cls(model=copy.deepcopy(original), args=config, forget_dataset=forget,
                                  retain_dataset=retain if config.uses_retain else None,
                                  processing_class=tokenizer)  # fmt: skip
        except (ValueError, KeyError, TypeError) as error:
            refused[name] = str(error).strip().splitlines()[0]
            log(f"{name}: not applicable: {refused[name]}")
            continue
        table[name] = rows.get(name, lambda trainer=trainer: unlearned(trainer))
        log(f"{name}: done (load {load()})")

    params = sum(p.numel() for p in original.parameters()) / 1e6
    header = ["model", "VerbMem forget", "KnowMem forget", "KnowMem retain", "PrivLeak (%)", "Min-K AUC",
              "wall time (s)", "steps"]  # fmt: skip
    lines = [f"Llama {params:.1f}M parameters (hidden {HIDDEN} × {LAYERS} layers, 8,000-token BPE trained on all "
             f"100 retain texts), trained {args.epochs} epochs (lr 2e-3, cosine, batch 1 window of {WINDOW} "
             f"tokens). {n} rows of each evaluated split; {sizing}. Unlearning: {UNLEARN['num_train_epochs']:g} "
             f"epochs at lr {UNLEARN['learning_rate']:g}, batch {UNLEARN['per_device_train_batch_size']} windows of "
             f"{WINDOW} tokens, the retain corpus paired. "
             "VerbMem and KnowMem are ROUGE-L F1 in [0, 1]; wall time: training for the first two rows, unlearning "
             f"for the rest. Device: {args.device}. Command: `python bench/muse.py {' '.join(sys.argv[1:])}`", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]  # fmt: skip
    for name, (result, wall, steps) in table.items():
        cells = [f"{result[c]:.4g}" if c in result else "n/a" for c in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {wall:.1f} | {steps} |")
    lines += [""] + [f"- {name}: not applicable: {why}" for name, why in refused.items()]
    publish(args, "MUSE-News (`bench/muse.py`)", "\n".join(lines).rstrip())


if __name__ == "__main__":
    main()
