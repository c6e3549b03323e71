"""Tables of evaluation results: which direction is good, and why a number is absent."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

# (key, what good looks like after unlearning), in the order the table prints them
TOFU_ROWS = [
    ("forget_quality", "higher (>= 0.05: like never trained)"),
    ("model_utility", "keep (original's)"),
    ("forget_probability", "lower"),
    ("forget_rouge", "lower"),
    ("forget_truth_ratio", "higher"),
    ("retain_probability", "keep"),
    ("retain_rouge", "keep"),
    ("retain_truth_ratio", "keep"),
    ("real_authors_probability", "keep"),
    ("real_authors_rouge", "keep"),
    ("real_authors_truth_ratio", "keep"),
    ("world_facts_probability", "keep"),
    ("world_facts_rouge", "keep"),
    ("world_facts_truth_ratio", "keep"),
    ("mia_loss_auc", "0.5 (1 = forget set looks familiar)"),
    ("mia_zlib_auc", "0.5"),
    ("mia_min_k_auc", "0.5"),
    ("mia_min_k_plus_plus_auc", "0.5"),
    ("mia_reference_auc", "0.5"),
    ("mia_gradnorm_auc", "0.5"),
    ("privleak", "0 (< 0: under-unlearned, > 0: over-unlearned)"),
    ("extraction_strength", "lower"),
    ("exact_memorization", "lower"),
]

# MUSE (Shi et al. 2025): the goal is the retrained model's numbers; ROUGE-L F1 in [0, 1] (the paper prints × 100)
MUSE_ROWS = [
    ("verbmem_f", "lower, toward the retrained model's"),
    ("knowmem_f", "lower, toward the retrained model's"),
    ("knowmem_r", "keep (original's)"),
    ("privleak", "0 (< 0: under-unlearned, > 0: over-unlearned)"),
    ("mia_min_k_auc", "0.5 (1 = forget set looks familiar)"),
    ("mia_min_k_plus_plus_auc", "0.5"),
    ("mia_loss_auc", "0.5"),
    ("mia_zlib_auc", "0.5"),
]

CLASSIFIER_ROWS = [
    ("forget_accuracy", "lower, toward test accuracy"),
    ("forget_macro_f1", "lower, toward test"),
    ("retain_accuracy", "keep"),
    ("retain_macro_f1", "keep"),
    ("test_accuracy", "keep"),
    ("test_macro_f1", "keep"),
    ("mia_auc", "0.5 (forget vs held-out)"),
]


def flat_numbers(results: Mapping) -> dict[str, float]:
    """The finite scalar results only (what `eval_results.json` holds); lists and reasons are left out, and so is a
    NaN or infinite number (the suites report those under `missing`, with the reason)."""
    return {k: float(v) for k, v in results.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}  # fmt: skip


def stored_numbers(folder: str | os.PathLike) -> dict[str, float]:
    """The numbers of `folder/eval_results.json` (written by `hf-unlearn eval --output`), not its settings; {} when
    there is no such file."""
    path = Path(folder) / "eval_results.json"
    return flat_numbers(json.loads(path.read_text())) if path.is_file() else {}


def format_rows(label: str, names, rows, label_width: int = 26, width: int = 12, rule: int | None = None) -> str:
    """The one table layout: a header (`label`, the column `names`, `goal`), a rule of `rule` dashes (as long as the
    header by default), then a line per `(label, values, goal)` row; each value to 4 decimals, `n/a` where None."""
    header = f"{label:<{label_width}}" + "".join(f"{name:>{width}}" for name in names) + "   goal"
    lines = [header, "-" * (rule or len(header))]
    for row_label, values, goal in rows:
        cells = "".join(f"{'n/a':>{width}}" if value is None else f"{value:>{width}.4f}" for value in values)
        lines.append(f"{row_label:<{label_width}}{cells}   {goal}")
    return "\n".join(lines)


def format_table(columns: Mapping[str, Mapping], rows=TOFU_ROWS) -> str:
    """Metrics down, models across (e.g. original / gold / unlearned), with the goal; an absent number shows as
    `n/a` and its reason is listed under the table, never as 0."""
    table, reasons = [], {}
    for key, goal in rows:
        if not any(key in col or key in col.get("missing", {}) for col in columns.values()):
            continue
        values = []
        for name, col in columns.items():
            value = col.get(key)
            finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            values.append(value if finite else None)
            if not finite and key in col.get("missing", {}):
                reasons.setdefault((key, col["missing"][key]), []).append(name)
        table.append((key, values, goal))
    # a reason shared by several models is said once: "n/a: privleak (original, unlearned): no gold model ..."
    notes = [f"n/a: {key} ({', '.join(names)}): {reason}" for (key, reason), names in reasons.items()]
    return "\n".join([format_rows("metric", list(columns), table), *notes])
