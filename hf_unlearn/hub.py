"""The unlearned model's card: metadata (`ModelCardData`, model-index results) and a body rendered from the Jinja
template in `hf_unlearn/model_cards/`. Rendering is pure: it takes a manifest dict and never reads the forget set."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .evaluation.report import TOFU_ROWS

TEMPLATE = Path(__file__).parent / "model_cards" / "unlearned_model_card.md"
MODEL_INDEX_METRICS = ("forget_quality", "model_utility", "forget_truth_ratio", "mia_min_k_auc", "privleak")


def _number(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def model_name(manifest: dict[str, Any]) -> str:
    return manifest.get("model_name") or f"{manifest.get('base_model') or 'model'}-{manifest['method']}".split("/")[-1]


def card_data(manifest: dict[str, Any], language=None, license=None, tags=None) -> ModelCardData:
    """Front matter: base model, library, pipeline tag, tags (hf-unlearn, unlearning, the method,
    generated_from_trainer), public datasets, and the unlearned model's metrics as model-index results."""
    method = manifest["method"]
    all_tags = ["hf-unlearn", "unlearning", method, "generated_from_trainer"]
    for tag in [tags] if isinstance(tags, str) else (tags or []):
        if tag not in all_tags:
            all_tags.append(tag)
    metrics = (manifest.get("metrics") or {}).get("unlearned", {})
    dataset = manifest.get("dataset") or {}
    results = [
        EvalResult(task_type="text-generation", dataset_type=dataset.get("id", "forget-set"),
                   dataset_name=dataset.get("name", "forget set"), dataset_split=dataset.get("split"),
                   metric_type=name, metric_name=name, metric_value=float(metrics[name]))
        for name in MODEL_INDEX_METRICS if name in metrics
    ]  # fmt: skip
    return ModelCardData(
        base_model=manifest.get("base_model"), library_name="transformers", pipeline_tag="text-generation",
        tags=all_tags, datasets=[dataset["id"]] if dataset.get("public") else None, language=language,
        license=license, model_name=model_name(manifest), eval_results=results or None,
    )  # fmt: skip


def render_model_card(manifest: dict[str, Any], language=None, license=None, tags=None) -> ModelCard:
    """The card for a manifest (`method`, `fingerprint`, `settings`, optional `base_model`, `description`,
    `metrics` {original, gold, unlearned}, `compute`, `paper`, `versions`). Missing pieces are said, not left empty."""
    metrics = manifest.get("metrics") or {}
    columns = [name for name in ("original", "gold", "unlearned") if metrics.get(name)]
    rows = [
        {"name": key, "values": [_number(metrics[c].get(key)) for c in columns], "goal": goal}
        for key, goal in TOFU_ROWS if any(key in metrics[c] for c in columns)
    ]  # fmt: skip
    return ModelCard.from_template(
        card_data(manifest, language, license, tags),
        template_path=str(TEMPLATE),
        model_name=model_name(manifest),
        base_model=manifest.get("base_model"),
        method_name=manifest.get("method_name", manifest["method"]),
        paper=manifest.get("paper"),
        description=manifest.get("description"),
        fingerprint=manifest["fingerprint"],
        settings=manifest.get("settings") or {},
        metrics=bool(rows),
        metric_columns=columns,
        metric_rows=rows,
        compute={"steps": None, "wall_time_seconds": None, "hardware": None, **(manifest.get("compute") or {})},
        versions=manifest.get("versions") or {},
    )
