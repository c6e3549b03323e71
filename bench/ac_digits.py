"""Alignment Calibration vs the usual baselines on a SimCLR encoder of scikit-learn's digits (real 8×8 scans).

    python bench/ac_digits.py        # ~20 min on a busy 2-core CPU; --write puts the table in docs/results.md

A tiny ResNet `ContrastiveEncoder` is pre-trained with SimCLR on `--train-size` digits (the original), a random 10% of
them is the forget set. Compared: the original; retrained from scratch on retain (the target); fine-tune on retain;
gradient ascent on the forget InfoNCE; NegGrad (retain InfoNCE − forget InfoNCE); Alignment Calibration. Each
unlearning method picks its setting from a small grid on a validation split (held-out digits never trained on, apart
from the test split): the setting whose Forgetting Score and EMIA are closest to the retrained model's, among those
that keep validation linear-probe accuracy within 2 points of it. The table reports the test split.

Forgetting Score, EMIA and the probe (RA / TA / UA, CMIA) are `hf_unlearn.audit.audit_encoder`'s; wall time is the
unlearning (or training) alone, in this process. Heatmaps of the original, retrained and AC encoders go to
docs/ac_digits/ with --write.
"""

from __future__ import annotations

import argparse
import copy
import math
import shutil
import tempfile
import time
from pathlib import Path

import torch
from results_doc import write_section  # bench/results_doc.py

from hf_unlearn import AlignmentCalibrationConfig, AlignmentCalibrationTrainer
from hf_unlearn.audit import audit_encoder, save_heatmaps
from hf_unlearn.augmentations import image_augmentation
from hf_unlearn.data import load_digits_rows
from hf_unlearn.encoders import build_tiny_contrastive_encoder, image_embeddings, train_contrastive

ROOT = Path(__file__).resolve().parents[1]
COMMAND = "python bench/ac_digits.py --write"


def splits(train_size: int, forget_fraction: float, seed: int) -> dict:
    rows = load_digits_rows()
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    pixels = torch.stack([rows[i]["pixel_values"] for i in order])
    labels = torch.tensor([rows[i]["labels"] for i in order])
    num_forget = round(forget_fraction * train_size)
    heldout = len(rows) - train_size
    cut = {"forget": (0, num_forget), "retain": (num_forget, train_size),
           "validation": (train_size, train_size + heldout // 2), "test": (train_size + heldout // 2, len(rows))}
    return {name: (pixels[a:b], labels[a:b]) for name, (a, b) in cut.items()}  # fmt: skip


def audit(model, reference, data, heldout: str, augment, retrained=None, seed: int = 0) -> dict:
    model.eval()

    def embed(encoder):
        return None if encoder is None else (lambda x: image_embeddings(encoder.eval(), x))

    retain = data["retain"][0][:200]  # members for EMIA's threshold and the probe's training set
    with torch.no_grad():
        return audit_encoder(
            embed(model), data["forget"][0], data[heldout][0], reference_embed_fn=embed(reference),
            retrained_embed_fn=embed(retrained), augment=augment, num_views=10, retain_examples=retain,
            labels={"forget": data["forget"][1], "heldout": data[heldout][1], "retain": data["retain"][1][:200]},
            feature_fn=lambda x: model.eval()(pixel_values=x).features, num_bootstrap=500, seed=seed,
        )  # fmt: skip


def run_ac(original, data, augment, alpha, beta, epochs, learning_rate, seed) -> tuple:
    model = copy.deepcopy(original)
    forget = [{"pixel_values": x} for x in data["forget"][0]]
    retain = [{"pixel_values": x} for x in data["retain"][0]]
    with tempfile.TemporaryDirectory() as scratch:
        config = AlignmentCalibrationConfig(
            output_dir=scratch, alpha=alpha, beta=beta, num_train_epochs=epochs, learning_rate=learning_rate,
            per_device_train_batch_size=8, retain_per_forget=8, augmentation="digits", report_to="none",
            save_strategy="no", disable_tqdm=True, use_cpu=True, logging_steps=1000, seed=seed,
        )  # fmt: skip
        trainer = AlignmentCalibrationTrainer(model=model, args=config, forget_dataset=forget, retain_dataset=retain,
                                              augmentation=augment)  # fmt: skip
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    return model, seconds


def run_baseline(name, original, data, augment, epochs, learning_rate, seed) -> tuple:
    model = copy.deepcopy(original)
    empty = data["retain"][0][:0]
    if name == "fine-tune":
        seconds = train_contrastive(model, data["retain"][0], augment, epochs, 100, learning_rate, seed=seed)
    elif name == "gradient ascent":
        seconds = train_contrastive(model, empty, augment, epochs, 100, learning_rate, seed=seed,
                                    forget_pixel_values=data["forget"][0], forget_weight=1.0)  # fmt: skip
    else:  # NegGrad
        seconds = train_contrastive(model, data["retain"][0], augment, epochs, 100, learning_rate, seed=seed,
                                    forget_pixel_values=data["forget"][0], forget_weight=1.0)  # fmt: skip
    return model, seconds


def distance(result: dict, target: dict) -> float:
    """How far a model's validation audit is from the retrained model's (FS, EMIA/100), +10 if TA drops > 2 points."""
    fs = result["forgetting_score"] if result["forgetting_score"] is not None else 10.0
    gap = abs(fs - target["forgetting_score"]) + abs(result["emia"] - target["emia"]) / 100
    return gap + (10.0 if result["test_accuracy"] < target["test_accuracy"] - 2 else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-size", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=200, help="SimCLR epochs of the original and the retrained.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="Write the table to docs/results.md, heatmaps to docs/.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = splits(args.train_size, 0.1, args.seed)
    augment = image_augmentation("digits", 8)
    print(f"digits: {len(data['forget'][0])} forget, {len(data['retain'][0])} retain, "
          f"{len(data['validation'][0])} validation, {len(data['test'][0])} test")  # fmt: skip

    def fresh():
        return build_tiny_contrastive_encoder(backbone="resnet", seed=args.seed)

    original = fresh()
    train = torch.cat([data["forget"][0], data["retain"][0]])
    times = {"original": train_contrastive(original, train, augment, args.epochs, 100, 3e-3, seed=args.seed)}
    retrained = fresh()
    times["retrain"] = train_contrastive(retrained, data["retain"][0], augment, args.epochs, 100, 3e-3, seed=args.seed)
    print(f"original {times['original']:.1f} s, retrained {times['retrain']:.1f} s")
    target = audit(retrained, original, data, "validation", augment)
    print(f"retrained on validation: FS {target['forgetting_score']:.3f} EMIA {target['emia']:.1f} "
          f"TA {target['test_accuracy']:.1f}")  # fmt: skip

    budget = max(1, args.epochs // 10)  # the baselines' epochs on their data, a tenth of retraining's at most
    grids = {
        "fine-tune": [(budget // 2, 3e-3), (budget, 3e-3)],
        "gradient ascent": [(budget, 1e-4), (budget, 3e-4), (budget, 1e-3)],
        "NegGrad": [(budget // 2, 3e-4), (budget // 2, 1e-3), (budget, 1e-3)],
        # AC keeps the paper scripts' 10 epochs at lr 0.006 (within a fifth of retraining's time); α and β vary
        "AC": [(a, b, 10, 0.006) for a in (0.5, 1.0) for b in (5.0, 10.0, 20.0)],
    }
    chosen, models = {}, {"original": original, "retrain": retrained}
    for name, grid in grids.items():
        best = None
        for setting in grid:
            if name == "AC":
                model, seconds = run_ac(original, data, augment, *setting, seed=args.seed)
            else:
                model, seconds = run_baseline(name, original, data, augment, *setting, seed=args.seed)
            result = audit(model, original, data, "validation", augment)
            score = distance(result, target)
            print(f"  {name} {setting}: FS {result['forgetting_score']:.3f} EMIA {result['emia']:.1f} "
                  f"TA {result['test_accuracy']:.1f} -> distance {score:.3f} ({seconds:.1f} s)")  # fmt: skip
            if best is None or score < best[0]:
                best = (score, setting, model, seconds)
        chosen[name], models[name], times[name] = best[1], best[2], best[3]

    results = {name: audit(model, original, data, "test", augment, retrained=retrained if name == "AC" else None)
               for name, model in models.items()}  # fmt: skip
    table = render(results, times, chosen, args)
    print(table)
    goal = results["retrain"]
    ac = results["AC"]
    baselines = ["fine-tune", "gradient ascent", "NegGrad"]
    checks = {
        "AC closer to retraining than every baseline on Forgetting Score": all(
            abs(ac["forgetting_score"] - goal["forgetting_score"])
            < abs(results[b]["forgetting_score"] - goal["forgetting_score"]) for b in baselines),
        "AC closer to retraining than every baseline on EMIA": all(
            abs(ac["emia"] - goal["emia"]) < abs(results[b]["emia"] - goal["emia"]) for b in baselines),
        "AC test accuracy within 2 points of retraining":
            round(abs(ac["test_accuracy"] - goal["test_accuracy"]), 9) <= 2,
        "AC wall time at most 1/5 of retraining": times["AC"] <= times["retrain"] / 5,
    }  # fmt: skip
    lines = [f"- {'met' if ok else 'NOT met'}: {what}" for what, ok in checks.items()]
    lines.append(f"- AC took {times['AC'] / times['retrain']:.2f} of retraining's wall time.")
    if len({round(r["cmia"], 6) for r in results.values()}) == 1:
        lines.append(f"- CMIA is {ac['cmia']:.1f}% for every model, the original included: at this scale the SVC on "
                     "the probe's true-class confidence does not separate members from held-out digits: it ranks "
                     "nothing.")  # fmt: skip
    print("\n".join(lines))
    if args.write:
        write(table + "\nTargets (test split):\n\n" + "\n".join(lines) + "\n", results)


def render(results, times, chosen, args) -> str:
    names = {"original": "original", "retrain": "retrained on retain (target)", "fine-tune": "fine-tune on retain",
             "gradient ascent": "gradient ascent", "NegGrad": "NegGrad", "AC": "Alignment Calibration"}  # fmt: skip
    lines = [f"Command: `{COMMAND}` (train size {args.train_size}, {args.epochs} SimCLR epochs, seed {args.seed}; "
             f"tiny ResNet ContrastiveEncoder, 10% forget; CPU, one thread).", "",
             "| model | Forgetting Score [95% CI] | EMIA % | CMIA % | RA % | TA % | UA % | wall time s | setting |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for key, name in names.items():
        r = results[key]
        fs = r["forgetting_score"]
        low, high = r["forgetting_score_ci"] or (math.nan, math.nan)
        setting = chosen.get(key, "")
        lines.append(f"| {name} | {fs:.3f} [{low:.3f}, {high:.3f}] | {r['emia']:.1f} | {r['cmia']:.1f} | "
                     f"{r['retain_accuracy']:.1f} | {r['test_accuracy']:.1f} | {r['forget_accuracy']:.1f} | "
                     f"{times[key]:.1f} | {setting} |")  # fmt: skip
    lines += ["", "Settings: fine-tune / gradient ascent / NegGrad (epochs, lr); AC (alpha, beta, epochs, lr), chosen "
              "on the validation split. Forgetting Score: 0 = as the original, 1 = forget images aligned like "
              "never-seen ones. EMIA / CMIA: % of forget images judged non-members (closer to the retrained model is "
              "better). RA / TA / UA: linear-probe accuracy on retain / test / forget."]  # fmt: skip
    return "\n".join(lines) + "\n"


def write(table: str, results: dict) -> None:
    docs = ROOT / "docs"
    target = docs / "ac_digits"
    if target.exists():
        shutil.rmtree(target)
    for name in ("original", "retrain", "AC"):
        save_heatmaps(results[name], target / name.lower())
    figures = ("\n![Alignment matrix, original](ac_digits/original/alignment_matrix.png)"
               " ![Alignment gap matrix, retrained](ac_digits/ac/retrained_alignment_gap_matrix.png)"
               " ![Alignment gap matrix, AC](ac_digits/ac/alignment_gap_matrix.png)\n")  # fmt: skip
    results_md = docs / "results.md"
    write_section(results_md, "ac_digits", "Alignment Calibration on a SimCLR digits encoder",
                  (table + figures).rstrip("\n"))
    print(f"written to {results_md} and {target}/")


if __name__ == "__main__":
    main()
