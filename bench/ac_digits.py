"""Alignment Calibration vs the usual baselines on a SimCLR encoder of scikit-learn's digits (real 8×8 scans).

    python bench/ac_digits.py --train-size 400 --forget-fraction 0.3 --epochs 300 --seeds 0 1 2 3 4 5 6 7 \
        --emia-threshold logistic --section ac_digits_logistic --output     # ~18 min on one core

Per seed: a split, a tiny ResNet encoder pre-trained with SimCLR (the original), a `--forget-fraction` forgotten, two
models retrained from scratch on the rest (the target; the noise floor). Fine-tune, gradient ascent, NegGrad and AC
each choose a setting on validation (closest to the retrained model on Forgetting Score and EMIA; AC within 1/5 of
retraining's time); the table reports the test split over the seeds, with paired bootstrap intervals of AC's distance to
retraining minus each baseline's. --output also puts the first seed's heatmaps in <section>/ beside the file.
"""

import copy
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (before torch: it sets OMP_WAIT_POLICY, read when torch loads OpenMP)
import numpy as np
import torch
from common import choose, log, parser, publish, setup

from hf_unlearn import AlignmentCalibrationConfig, AlignmentCalibrationTrainer
from hf_unlearn.augmentations import image_augmentation
from hf_unlearn.data import load_digits_rows
from hf_unlearn.encoders import build_tiny_contrastive_encoder, image_embeddings, train_contrastive
from hf_unlearn.evaluation.audit import EMIA_THRESHOLDS, audit_encoder, embed_views, emia, positive_alignment
from hf_unlearn.plots import save_heatmaps

TIME_LIMIT = 0.2  # AC settings whose mean wall time is over this share of retraining's are inadmissible
NOISE_SEED_OFFSET = 1000  # the second retrained model of seed s: init, batch order and views from seed s + 1000
BASELINES = ["fine-tune", "gradient ascent", "NegGrad"]
GRIDS = {  # (epochs, lr), six settings per baseline, at most a tenth of retraining's epochs (b) on its data
    "fine-tune": lambda b: [(e, lr) for e in (b // 4, b // 2, b) for lr in (1e-3, 3e-3)],
    "gradient ascent": lambda b: [(e, lr) for e in (b // 2, b) for lr in (1e-4, 3e-4, 1e-3)],
    "NegGrad": lambda b: [(e, lr) for e in (b // 2, b) for lr in (1e-4, 3e-4, 1e-3)],
}
AC_GRIDS = {  # (alpha, beta, epochs, lr); the paper scripts' (1, 3, 10, 0.006) stays to show the time rule
    "default": [(1.0, 3.0, 10, 0.006), *((a, b, 5, 0.012) for a in (1.0, 2.0) for b in (2.0, 3.0, 4.0)),
                (2.0, 3.0, 5, 0.009)],
    "strong-beta": [(a, b, 5, 0.009) for a in (1.0, 2.0) for b in (3.0, 4.0, 5.0, 6.0)],
}  # fmt: skip


def splits(train_size: int, forget_fraction: float, seed: int) -> dict:
    """{"forget", "retain", "validation", "test"} → (pixels, labels); validation and test halve the held-out digits."""
    rows = load_digits_rows()
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
    pixels = torch.stack([rows[i]["pixel_values"] for i in order])
    labels = torch.tensor([rows[i]["labels"] for i in order])
    forget, half = round(forget_fraction * train_size), train_size + (len(rows) - train_size) // 2
    cut = {"forget": (0, forget), "retain": (forget, train_size), "validation": (train_size, half),
           "test": (half, None)}  # fmt: skip
    return {name: (pixels[a:b], labels[a:b]) for name, (a, b) in cut.items()}  # fmt: skip


def audit(model, reference, data, heldout: str, augment, rule: str, retrained=None) -> dict:
    def embed(encoder):
        return None if encoder is None else (lambda x: image_embeddings(encoder.eval(), x))

    retain = data["retain"][0][:200]  # members for EMIA's threshold and the probe's training set
    with torch.no_grad():
        result = audit_encoder(
            embed(model), data["forget"][0], data[heldout][0], reference_embed_fn=embed(reference),
            retrained_embed_fn=embed(retrained), augment=augment, num_views=10, retain_examples=retain,
            labels={"forget": data["forget"][1], "heldout": data[heldout][1], "retain": data["retain"][1][:200]},
            feature_fn=lambda x: model.eval()(pixel_values=x).features, num_bootstrap=500, seed=0,
            emia_threshold=rule,
        )  # fmt: skip
    result["emia"] = math.nan if result["emia"] is None else result["emia"]  # no member signal (logistic rule)
    return result


def unlearn(name: str, original, data, augment, setting: tuple, seed: int) -> tuple:
    """A copy of `original` unlearned by `name` with `setting`, and the wall time of the unlearning."""
    model, forget, retain = copy.deepcopy(original), data["forget"][0], data["retain"][0]
    if name != "AC":  # fine-tune: the retain InfoNCE; gradient ascent: − the forget InfoNCE; NegGrad: both
        ascent = {} if name == "fine-tune" else {"forget_pixel_values": forget, "forget_weight": 1.0}
        images = retain[:0] if name == "gradient ascent" else retain
        return model, train_contrastive(model, images, augment, setting[0], 100, setting[1], seed=seed, **ascent)
    alpha, beta, epochs, learning_rate = setting
    with tempfile.TemporaryDirectory() as scratch:
        config = AlignmentCalibrationConfig(
            output_dir=scratch, alpha=alpha, beta=beta, num_train_epochs=epochs, learning_rate=learning_rate,
            per_device_train_batch_size=8, retain_per_forget=8, augmentation="digits", report_to="none",
            save_strategy="no", disable_tqdm=True, use_cpu=True, logging_steps=1000, seed=seed,
        )  # fmt: skip
        rows = {key: [{"pixel_values": x} for x in images] for key, images in (("forget", forget), ("retain", retain))}
        trainer = AlignmentCalibrationTrainer(model=model, args=config, forget_dataset=rows["forget"],
                                              retain_dataset=rows["retain"], augmentation=augment)  # fmt: skip
        start = time.perf_counter()
        trainer.train()
        return model, time.perf_counter() - start


def distance(result: dict, target: dict) -> float:
    """How far a validation audit is from the retrained model's: |ΔFS| + |ΔEMIA|/100, +10 if TA drops > 2 points."""
    fs = result["forgetting_score"]
    fs = fs if fs is not None and math.isfinite(fs) else 10.0  # no score (the original's gap is not positive)
    emia_gap = abs(result["emia"] - target["emia"]) / 100
    gap = abs(fs - target["forgetting_score"]) + (1.0 if math.isnan(emia_gap) else emia_gap)  # no EMIA: the largest
    return gap + (10.0 if result["test_accuracy"] < target["test_accuracy"] - 2 else 0.0)


def forget_alignment(model, data, augment) -> dict:
    """Per-example positive alignment of the forget, test ("heldout") and member (first 200 retain) images on the
    views `audit` draws (same seed): the Forgetting Score and EMIA computed from these equal the audit's."""
    sets = {"forget": data["forget"][0], "heldout": data["test"][0], "members": data["retain"][0][:200]}
    with torch.no_grad():
        embed = lambda x: image_embeddings(model.eval(), x)  # noqa: E731
        return {key: positive_alignment(embed_views(embed, images, augment, 10, 256, 0)).numpy()
                for key, images in sets.items()}  # fmt: skip


def metric_value(pa: dict, name: str, metric: str, f, h, m, rule: str) -> float:
    """Model `name`'s Forgetting Score or EMIA from one seed's per-example positive alignments `pa`, on forget images
    f, held-out images h and members m (index arrays)."""
    if metric == "emia":
        try:
            return emia(pa[name]["forget"][f], pa[name]["members"][m], pa[name]["heldout"][h], rule)
        except ValueError:  # the logistic rule finds no member signal in this (resampled) set: no EMIA
            return math.nan
    reference = pa["original"]["forget"][f].mean()
    return float((reference - pa[name]["forget"][f].mean()) / (reference - pa["original"]["heldout"][h].mean()))


def gap(pa: dict, name: str, metric: str, rule: str, index=None) -> float:
    """|m(name) − m(retrained)| on one seed's images `index` (forget, held-out, member index arrays; default all)."""
    index = index or [np.arange(len(pa["original"][key])) for key in ("forget", "heldout", "members")]
    return abs(metric_value(pa, name, metric, *index, rule) - metric_value(pa, "retrain", metric, *index, rule))


def closeness_interval(alignments: list[dict], method: str, baseline: str, metric: str, rule: str,
                       num_samples: int = 1000, seed: int = 0) -> tuple[float, float, float]:  # fmt: skip
    """The mean over seeds of |m(method) − m(retrained)| − |m(baseline) − m(retrained)| for the metric m (the Forgetting
    Score or EMIA) and its paired percentile bootstrap 95% interval (each seed's forget, held-out and member images
    resampled, the same draw for every model): below 0 means `method` is closer to retraining than `baseline`."""
    rng = np.random.default_rng(seed)

    def difference(indices):
        return float(np.mean([gap(pa, method, metric, rule, index) - gap(pa, baseline, metric, rule, index)
                              for pa, index in zip(alignments, indices, strict=True)]))  # fmt: skip

    sizes = [[len(pa["original"][key]) for key in ("forget", "heldout", "members")] for pa in alignments]
    draws = [difference([[rng.integers(0, n, n) for n in size] for size in sizes]) for _ in range(num_samples)]
    full = difference([[np.arange(n) for n in size] for size in sizes])
    return full, float(np.nanpercentile(draws, 2.5)), float(np.nanpercentile(draws, 97.5))  # nan: no EMIA (above)


def run_seed(seed: int, args, grids: dict, augment) -> dict:
    """One seed's split, original, two retrained models and every candidate's (model, seconds, validation distance)."""

    def trained(model_seed, images):
        model = build_tiny_contrastive_encoder(backbone="resnet", seed=model_seed, hidden_size=32, projection_dim=32)
        return model, train_contrastive(model, images, augment, args.epochs, 100, 3e-3, seed=model_seed)

    torch.manual_seed(seed)  # the augmentations draw from torch's global generator
    data, models, times = splits(args.train_size, args.forget_fraction, seed), {}, {}
    models["original"], times["original"] = trained(seed, torch.cat([data["forget"][0], data["retain"][0]]))
    models["retrain"], times["retrain"] = trained(seed, data["retain"][0])
    torch.manual_seed(seed + NOISE_SEED_OFFSET)  # the noise floor: another init, batch order and views
    models["retrain again"], times["retrain again"] = trained(seed + NOISE_SEED_OFFSET, data["retain"][0])
    target = audit(models["retrain"], models["original"], data, "validation", augment, args.emia_threshold)
    candidates = {}
    for name, grid in grids.items():
        for setting in grid:
            torch.manual_seed(seed)  # each candidate draws the same views whatever ran before it
            model, seconds = unlearn(name, models["original"], data, augment, setting, seed)
            result = audit(model, models["original"], data, "validation", augment, args.emia_threshold)
            candidates[name, setting] = (model, seconds, distance(result, target))
            log(f"seed {seed}: {name} {setting}: distance {candidates[name, setting][2]:.3f} ({seconds:.1f} s)")
    return {"data": data, "models": models, "times": times, "candidates": candidates}


def main() -> None:
    p = parser(__doc__, "ac_digits", seed=None, threads=True)
    p.add_argument("--train-size", type=int, default=600)
    p.add_argument("--epochs", type=int, default=200, help="SimCLR epochs of the original and the retrained.")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="One split, original and grid per seed.")
    p.add_argument("--forget-fraction", type=float, default=0.1, help="Share of the training images forgotten.")
    p.add_argument("--emia-threshold", choices=EMIA_THRESHOLDS, default="logistic", help="fit_threshold's rule.")
    p.add_argument("--ac-grid", choices=sorted(AC_GRIDS), default="default", help="AC's candidate settings.")
    p.set_defaults(threads=1)
    args = p.parse_args()
    setup(args)
    augment, rule = image_augmentation("digits", 8), args.emia_threshold
    grids = {**{name: grid(max(1, args.epochs // 10)) for name, grid in GRIDS.items()}, "AC": AC_GRIDS[args.ac_grid]}
    runs = [run_seed(seed, args, grids, augment) for seed in args.seeds]

    # one setting per method: the smallest validation distance averaged over the seeds; AC's only among the settings
    # whose mean wall time is within TIME_LIMIT × retraining's mean wall time
    chosen, pools = {}, {}
    limit = TIME_LIMIT * float(np.mean([run["times"]["retrain"] for run in runs]))
    for name, grid in grids.items():
        distances, seconds = ({s: float(np.mean([run["candidates"][name, s][i] for run in runs])) for s in grid}
                              for i in (2, 1))  # fmt: skip
        fast = (lambda s, seconds=seconds: seconds[s] <= limit) if name == "AC" else None
        chosen[name], pools[name] = choose(grid, distances.get, fast)
        chosen[name] = chosen[name] or min(grid, key=distances.get)  # no AC setting fast enough: the closest, flagged
        log(f"{name}: chosen {chosen[name]}; every setting's distance / seconds: "
            + ", ".join(f"{s} {distances[s]:.3f} / {seconds[s]:.1f}" for s in grid))  # fmt: skip
        for run in runs:
            run["models"][name], run["times"][name], _ = run["candidates"][name, chosen[name]]

    results, alignments = [], []  # per seed, on the test split
    for run in runs:
        models, data = run["models"], run["data"]
        results.append({name: audit(model, models["original"], data, "test", augment, rule,
                                    retrained=models["retrain"] if name == "AC" else None)
                        for name, model in models.items()})  # fmt: skip
        alignments.append({name: forget_alignment(model, data, augment) for name, model in models.items()})
    times, admissible = [run["times"] for run in runs], f"{len(pools['AC'])} of {len(grids['AC'])} settings admissible"
    body = (render(results, times, chosen, args, admissible) + "\nTargets (test split, over the seeds):\n\n"
            + "\n".join(judge(results, times, alignments, args.seeds, rule)) + "\n")  # fmt: skip
    if args.output:  # heatmaps of the first seed, in <section>/ next to the output file
        folder, s = Path(args.output).parent / args.section, args.section
        shutil.rmtree(folder, ignore_errors=True)
        for name in ("original", "retrain", "AC"):
            save_heatmaps(results[0][name], folder / name.lower())
        body += (f"\nHeatmaps (seed {args.seeds[0]}, the first 64 forget images): ![Alignment matrix, original]"
                 f"({s}/original/alignment_matrix.png) ![Alignment gap matrix, retrained]({s}/ac/retrained_alignment_"
                 f"gap_matrix.png) ![Alignment gap matrix, AC]({s}/ac/alignment_gap_matrix.png)\n")  # fmt: skip
    publish(args, f"Alignment Calibration on a SimCLR digits encoder ({args.section})", body.rstrip("\n"))


def mean(results: list[dict], name: str, key: str) -> float:
    return float(np.mean([r[name][key] for r in results]))


def judge(results: list[dict], times: list[dict], alignments: list[dict], seeds: list[int], rule: str) -> list[str]:
    """The targets on the means over seeds (AC's mean distance to the retrained model below every baseline's on the
    Forgetting Score and on EMIA, its TA within 2 points of the retrained model's, its time at most a fifth of
    retraining's), then the statistics that weigh them."""
    fs, em = ({name: float(np.mean([abs(r[name][key] - r["retrain"][key]) for r in results]))
               for name in ["AC", *BASELINES, "retrain again"]} for key in ("forgetting_score", "emia"))  # fmt: skip
    ac_time, retrain_time = (float(np.mean([t[k] for t in times])) for k in ("AC", "retrain"))
    accuracy_gap = round(abs(mean(results, "AC", "test_accuracy") - mean(results, "retrain", "test_accuracy")), 9)
    checks = {"Forgetting Score": all(fs["AC"] < fs[b] for b in BASELINES),
              "EMIA": all(em["AC"] < em[b] for b in BASELINES)}  # fmt: skip
    lines = [f"- {'met' if ok else 'NOT met'}: AC closer to retraining than every baseline on {what}"
             for what, ok in checks.items()]  # fmt: skip
    lines += [f"- {'met' if accuracy_gap <= 2 else 'NOT met'}: AC test accuracy within 2 points of retraining",
              f"- {'met' if ac_time <= retrain_time / 5 else 'NOT met'}: AC wall time at most 1/5 of retraining",
              "- Mean distance to the retrained model over the seeds (|model − retrained| per seed), Forgetting "
              "Score / EMIA points: " + "; ".join(f"{name} {fs[name]:.3f} / {em[name]:.1f}" for name in fs) + "."]
    floor, num_forget = em["retrain again"], results[0]["AC"]["num_forget"]
    per_seed = " / ".join(f"{abs(r['retrain again']['emia'] - r['retrain']['emia']):.1f}" for r in results)
    baselines = "within a factor 1.5 of it" if all(em[b] <= 1.5 * floor for b in BASELINES) else "; ".join(
        f"{b} {em[b] / floor:.1f}×" if floor else f"{b} {em[b]:.1f} points above" for b in BASELINES
    ) + " it"  # fmt: skip
    lines.append(f"- EMIA noise floor: a second model retrained from scratch on the same retain images (another init, "
                 f"batch order and views) is {floor:.1f} EMIA points from the first on average (per seed {per_seed}; "
                 f"one forget image is {100 / num_forget:.2f} points); AC's {em['AC']:.1f} is "
                 f"{'below' if em['AC'] < floor else 'above'} it, and every baseline's is {baselines}.")  # fmt: skip
    by_rule = [f"{other}: " + ", ".join(f"{name} {np.mean([gap(pa, name, 'emia', other) for pa in alignments]):.1f}"
                                        for name in ["original", "retrain again", *BASELINES, "AC"])
               for other in EMIA_THRESHOLDS]  # fmt: skip
    lines.append("- EMIA by threshold rule, on these same models (mean over seeds of |model − retrained|; the "
                 "original's distance is the signal, the second retrained model's the noise floor): "
                 f"{'; '.join(by_rule)}.")  # fmt: skip
    for metric, label in (("forgetting_score", "Forgetting Score"), ("emia", "EMIA")):
        for baseline in [*BASELINES, "retrain again"]:
            value, low, high = closeness_interval(alignments, "AC", baseline, metric, rule)
            verdict = "AC closer" if high < 0 else f"{baseline} closer" if low > 0 else "not separated"
            lines.append(f"- {label}, AC's minus {baseline}'s distance to retraining (mean over seeds, paired "
                         f"bootstrap 95% interval over the images): {value:+.3f} [{low:+.3f}, {high:+.3f}]: {verdict}.")
    lines.append(f"- AC took {ac_time / retrain_time:.2f} of retraining's wall time (means over the seeds).")
    signal = []  # FS(retrained) = 1 − (level + own gap) / gap exactly
    for seed, r in zip(seeds, results, strict=True):
        reference, retrained = (r["retrain"]["positive_alignment"][k] for k in ("reference", "audited"))
        gap_, own = reference["forget"] - reference["heldout"], retrained["forget"] - retrained["heldout"]
        signal.append(f"seed {seed}: gap {gap_:.4f}, own gap {own:+.4f} (gap/|own gap| {gap_ / abs(own):.1f}), "
                      f"level {retrained['heldout'] - reference['heldout']:+.4f}")  # fmt: skip
    lines.append("- Signal against noise (mean positive alignment, cosine; test split): gap = how much more the "
                 "original aligns its forget images than held-out ones (the Forgetting Score's denominator); own gap = "
                 f"the same for the retrained model, which never saw them, so it is the sampling noise of {num_forget} "
                 "forget images; level = the retrained model's held-out alignment minus the original's, a run-to-run "
                 f"shift that moves the retrained model's score from 1 by −(level + own gap)/gap: {'; '.join(signal)}.")
    if len({round(r[name]["cmia"], 6) for r in results for name in r}) == 1:
        lines.append(f"- CMIA is {results[0]['AC']['cmia']:.1f}% for every model and seed, the original included: at "
                     "this scale the SVC on the probe's true-class confidence does not separate members from held-out "
                     "digits: it ranks nothing.")  # fmt: skip
    return lines


NAMES = {"original": "original", "retrain": "retrained on retain (target)", "retrain again": "retrained again (noise "
         "floor)", "fine-tune": "fine-tune on retain", "gradient ascent": "gradient ascent", "NegGrad": "NegGrad",
         "AC": "Alignment Calibration"}  # fmt: skip
SETTINGS = (
    "Settings: fine-tune / gradient ascent / NegGrad (epochs, lr; {fine-tune} / {gradient ascent} / {NegGrad} "
    "candidates); AC (alpha, beta, epochs, lr; {AC} candidates, grid '{grid}'). One setting per method chosen on the "
    "validation split by the smallest distance to the retrained model (|ΔFS| + |ΔEMIA|/100, +10 where validation TA "
    "drops more than 2 points below the retrained model's) averaged over the seeds; for AC only among the settings "
    "whose mean wall time is at most {limit:g} of retraining's (over the budget: inadmissible; {rule}). The "
    "retrained-again model is a second model retrained from scratch on the same retain images (another init, batch "
    "order and views): its distance to the first is the noise floor of a distance to retraining. The validation and "
    "test splits share the forget images, so a model's test Forgetting Score is its validation score times one factor "
    "per seed (the ratio of the original's gaps): on that score the test split checks nothing the validation split did "
    "not. Forgetting Score: 0 = as the original, 1 = forget images aligned like never-seen ones; its bootstrap 95% "
    "intervals over the forget images of one seed: {intervals}. EMIA / CMIA: % of forget images judged non-members "
    "(closer to the retrained model is better). RA / TA / UA: linear-probe accuracy on retain / test / forget."
)


def render(results: list[dict], times: list[dict], chosen: dict, args, admissible: str) -> str:
    def interval(r, key):
        low, high = r[key]["forgetting_score_ci"] or (math.nan, math.nan)
        return f"[{low:.2f}, {high:.2f}]"

    threads = "one thread" if args.threads == 1 else f"{args.threads} threads"
    lines = [f"Command: `{' '.join(['python bench/ac_digits.py', *sys.argv[1:]])}` (train size {args.train_size}, "
             f"{args.forget_fraction:.0%} forget, {args.epochs} SimCLR epochs, seeds {', '.join(map(str, args.seeds))}"
             ": one split, original, retrained model and grid per seed; tiny ResNet ContrastiveEncoder; 'digits' "
             f"views; EMIA threshold: {args.emia_threshold}; CPU, {threads}). Every number is the mean over the seeds, "
             "on the test split.", "",
             "| model | Forgetting Score (per seed) | EMIA % | CMIA % | RA % | TA % | UA % | wall time s | setting |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for key, name in NAMES.items():
        per_seed = " / ".join(f"{r[key]['forgetting_score']:.2f}" for r in results)
        columns = " | ".join(f"{mean(results, key, k):.1f}"
                             for k in ("emia", "cmia", "retain_accuracy", "test_accuracy", "forget_accuracy"))
        lines.append(f"| {name} | {mean(results, key, 'forgetting_score'):.3f} ({per_seed}) | {columns} | "
                     f"{np.mean([t[key] for t in times]):.1f} | {chosen.get(key, '')} |")  # fmt: skip
    intervals = "; ".join(f"seed {seed}: retrained {interval(r, 'retrain')}, AC {interval(r, 'AC')}"
                          for seed, r in zip(args.seeds, results, strict=True))  # fmt: skip
    sizes = {name: len(grid(max(1, args.epochs // 10))) for name, grid in GRIDS.items()}
    settings = SETTINGS.format_map({**sizes, "AC": len(AC_GRIDS[args.ac_grid]), "grid": args.ac_grid,
                                    "limit": TIME_LIMIT, "rule": admissible, "intervals": intervals})  # fmt: skip
    return "\n".join([*lines, "", settings]) + "\n"


if __name__ == "__main__":
    main()
