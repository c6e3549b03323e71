"""Plots for the card: forget/retain loss curves, the membership-inference ROC and the encoder audit's alignment
heatmaps. Numbers in, PNG out; no text from any dataset ever reaches a figure."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def loss_curves(log_history: list[dict]) -> dict[str, list[list[float]]]:
    """`{"loss/forget": [[step, value], ...], ...}` from `trainer.state.log_history` (training logs only)."""
    curves: dict[str, list[list[float]]] = {}
    for entry in log_history:
        for key, value in entry.items():
            if key.startswith("loss/") and isinstance(value, (int, float)):
                curves.setdefault(key, []).append([entry.get("step", 0), float(value)])
    return curves


def plot_loss_curves(curves: dict[str, list[list[float]]], path: str | Path) -> Path | None:
    """One line per loss term against the optimizer step; None (nothing written) when there is nothing to plot."""
    if not any(curves.values()):
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 3.5))
    for name, points in sorted(curves.items()):
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=2, label=name)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("weighted loss term")
    axis.set_title("Unlearning loss terms")
    axis.legend()
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def plot_mia_roc(curves: dict[str, dict], path: str | Path) -> Path | None:
    """ROC curves of membership-inference attacks (forget = members vs held-out), one panel per model:
    `{model: {attack: {"fpr", "tpr", "auc"}}}` (e.g. original, gold, unlearned: the unlearned panel should look like
    the gold one), or one model's `{attack: {...}}`. None (nothing written) when there is no curve."""
    if curves and all(isinstance(curve, dict) and "fpr" in curve for curve in curves.values()):
        curves = {"unlearned": curves}
    curves = {model: attacks for model, attacks in curves.items() if attacks}
    if not curves:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 4.2), squeeze=False)
    for axis, (model, attacks) in zip(axes[0], curves.items(), strict=True):
        for attack, curve in sorted(attacks.items()):
            axis.plot(curve["fpr"], curve["tpr"], label=f"{attack} (AUC {curve['auc']:.3f})")
        axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance (never trained)")
        axis.set_xlabel("false positive rate (held-out flagged)")
        axis.set_title(model)
        axis.legend(fontsize=7)
    axes[0][0].set_ylabel("true positive rate (forget flagged)")
    figure.suptitle("Membership inference on the forget set")
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


# The encoder audit's matrices drawn as heatmaps (`hf_unlearn.evaluation.audit.audit_encoder`'s keys), in card order.
HEATMAPS = ("alignment_matrix", "alignment_gap_matrix", "retrained_alignment_gap_matrix")


def save_heatmaps(audit: dict, folder: str | Path, max_examples: int = 64) -> dict[str, str]:
    """Heatmaps (PNG) of an `audit_encoder` result's matrices (the first `max_examples` forget examples):
    `alignment_matrix.png` and, where computed, `alignment_gap_matrix.png` and `retrained_alignment_gap_matrix.png`.
    Returns `{name: path}`."""
    import numpy as np

    titles = {"alignment_matrix": "Alignment Matrix (audited encoder)",
              "alignment_gap_matrix": "Alignment Gap Matrix: original − audited",
              "retrained_alignment_gap_matrix": "Alignment Gap Matrix: original − retrained"}  # fmt: skip
    plt = _pyplot()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    gaps = [np.asarray(audit[n]) for n in HEATMAPS[1:] if audit.get(n) is not None]
    limit = max([float(np.abs(g).max()) for g in gaps] + [1e-6])  # one colour scale for the gap matrices
    paths = {}
    for name in HEATMAPS:
        if audit.get(name) is None:
            continue
        matrix = np.asarray(audit[name])[:max_examples, :max_examples]
        figure, axis = plt.subplots(figsize=(4.2, 3.6))
        if name == "alignment_matrix":
            image = axis.imshow(matrix, cmap="viridis", vmin=-1, vmax=1)
        else:
            image = axis.imshow(matrix, cmap="RdBu_r", vmin=-limit, vmax=limit)
        figure.colorbar(image, ax=axis)
        axis.set_title(titles[name], fontsize=9)
        axis.set_xlabel("forget example j")
        axis.set_ylabel("forget example i")
        figure.tight_layout()
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=80)
        plt.close(figure)
        paths[name] = str(path)
    return paths
