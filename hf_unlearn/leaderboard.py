"""`hf-unlearn leaderboard`: the `eval_results.json` of several runs as one ranked table (markdown and CSV)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from .manifest import MANIFEST_NAME, RUN_ENVIRONMENT

COLUMNS = ["forget_quality", "model_utility", "forget_truth_ratio", "forget_probability", "mia_min_k_auc",
           "privleak", "extraction_strength"]  # fmt: skip
MUSE_COLUMNS = ["verbmem_f", "knowmem_f", "knowmem_r"]  # shown when a run has MUSE numbers


def load_run(run_dir: str | Path) -> dict:
    """One row: the run's metrics (`eval_results.json`) with its method, wall time and steps (`summary.json`, written
    by `hf-unlearn run`, when present) and its settings: those that differ from the method's defaults, as the card
    lists them (the newest request of `unlearning_manifest.json`; else the summary's, without run-environment fields
    such as paths, logging and the description)."""
    run_dir = Path(run_dir)
    results_file = run_dir / "eval_results.json"
    if not results_file.is_file():
        raise FileNotFoundError(f"{results_file} does not exist: run `hf-unlearn eval --model {run_dir} --output "
                                f"{results_file}` first.")  # fmt: skip
    row = {"run": run_dir.name, **json.loads(results_file.read_text())}
    summary_file = run_dir / "summary.json"
    settings = None
    if summary_file.is_file():
        summary = json.loads(summary_file.read_text())
        settings = {k: v for k, v in summary.get("unlearn_config", {}).items() if not RUN_ENVIRONMENT.match(k)}
        row |= {"method": summary.get("method"), "wall_time_s": (summary.get("wall_time_seconds") or {}).get("unlearn"),
                "steps": summary.get("global_steps")}  # fmt: skip
    manifest_file = run_dir / MANIFEST_NAME
    if manifest_file.is_file():
        settings = json.loads(manifest_file.read_text())["requests"][0].get("settings") or {}
    if settings is not None:
        row["settings"] = ", ".join(f"{k}={v}" for k, v in settings.items()) or "defaults"
    return row


def rank(rows: list[dict]) -> list[dict]:
    """Forget quality first (higher is better), then model utility; runs without forget quality come last."""
    def key(row):
        quality = row.get("forget_quality")
        return (quality is None, -(quality or 0.0), -(row.get("model_utility") or 0.0))

    return sorted(rows, key=key)


def _cell(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def leaderboard(run_dirs: list[str | Path]) -> tuple[str, str]:
    """The ranked table as (markdown, CSV)."""
    if not run_dirs:
        raise ValueError("leaderboard needs at least one run folder.")
    rows = rank([load_run(d) for d in run_dirs])
    muse = [name for name in MUSE_COLUMNS if any(name in row for row in rows)]
    header = ["rank", "run", "method", "settings", *COLUMNS, *muse, "wall_time_s", "steps"]
    table = [[str(i + 1), *(_cell(row.get(name)) for name in header[1:])] for i, row in enumerate(rows)]
    widths = [max(len(cells[i]) for cells in [header, *table]) for i in range(len(header))]

    def line(cells):  # padded, so the markdown reads as a table in a terminal too
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) + " |"

    markdown = "\n".join([line(header), line(["-" * width for width in widths]), *map(line, table)])
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(table)
    return markdown + "\n", buffer.getvalue()
