"""The Hub side of an unlearned model: its card (metadata with `ModelCardData`, body from the Jinja template in
`model_cards/`), the files written next to the weights, the push, and the requester's verification.

Everything is rendered from the manifest (`hf_unlearn.manifest`); nothing here reads the forget set, except `verify`,
which reads the requester's own copy of it to recompute the fingerprint.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .evaluation.report import MUSE_ROWS, TOFU_ROWS
from .manifest import MANIFEST_NAME, NEVER_UPLOAD, SALT_NAME, find_request, is_hub_id, read_manifest, write_manifest
from .model_cards import UNLEARNED, template_path

TEMPLATE = template_path(UNLEARNED)
# the leaderboards' headline numbers: TOFU's, then MUSE's (VerbMem, KnowMem on forget and retain)
MODEL_INDEX_METRICS = ("forget_quality", "model_utility", "forget_truth_ratio", "mia_min_k_auc", "privleak",
                       "verbmem_f", "knowmem_f", "knowmem_r")  # fmt: skip
# the card's metric table: TOFU's rows, then MUSE's own, each with what good looks like
SUITE_ROWS = TOFU_ROWS + [(key, goal) for key, goal in MUSE_ROWS if key not in dict(TOFU_ROWS)]
PLOTS = {"loss_curves": "plots/loss_curves.png", "mia_roc": "plots/mia_roc.png"}


class PushError(RuntimeError):
    """A push was refused or failed; the local folder is untouched and the message says what to re-run."""


def _non_finite(value) -> bool:
    """NaN or ±inf: a metric that no YAML, leaderboard or table may show as a result."""
    return isinstance(value, numbers.Real) and not math.isfinite(value)


def _number(value) -> str:
    if value is None or _non_finite(value):
        return "n/a"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _reported(metrics: dict[str, Any]) -> list[str]:
    """The model-index metrics in `metrics` that have a finite value; the others are listed as missing."""
    return [name for name in MODEL_INDEX_METRICS if name in metrics and not _non_finite(metrics[name])]


def model_name(manifest: dict[str, Any]) -> str:
    current = manifest["requests"][0]
    base = (manifest.get("base_model") or {}).get("id") or "model"
    return manifest.get("model_name") or f"{base}-{current['method']}".split("/")[-1]


def card_data(manifest: dict[str, Any]) -> ModelCardData:
    """Front matter: base model, library, pipeline tag, tags (hf-unlearn, unlearning, the methods,
    generated_from_trainer, the user's), public datasets, and the latest metrics as model-index results."""
    current, card = manifest["requests"][0], manifest.get("card") or {}
    tags = list(manifest.get("tags") or ["hf-unlearn", "unlearning"])  # the trainer's `_tag_names`
    for tag in [r["method"] for r in manifest["requests"]] + ["generated_from_trainer"] + list(card.get("tags") or []):
        if tag not in tags:
            tags.append(tag)
    datasets = []
    for request in manifest["requests"]:
        dataset = request.get("dataset") or {}
        if dataset.get("public") and dataset.get("id") not in datasets:
            datasets.append(dataset["id"])
    pipeline_tag = manifest.get("pipeline_tag", "text-generation")
    metrics = (current.get("metrics") or {}).get("unlearned", {})
    dataset = current.get("dataset") or {}
    results = [
        EvalResult(task_type=pipeline_tag, dataset_type=dataset.get("id", "forget-set"),
                   dataset_name=dataset.get("name", "forget set"), dataset_split=dataset.get("split"),
                   metric_type=name, metric_name=name, metric_value=round(float(metrics[name]), 4))
        for name in _reported(metrics)
    ]  # fmt: skip
    base = manifest.get("base_model") or {}
    base_id = base.get("id") if is_hub_id(base.get("id")) else None
    extra = {"base_model_revision": base["revision"]} if base_id and base.get("revision") else {}
    return ModelCardData(
        base_model=base_id, library_name=manifest.get("library_name", "transformers"), pipeline_tag=pipeline_tag,
        tags=tags, datasets=datasets or None, language=card.get("language"), license=card.get("license"),
        model_name=model_name(manifest), eval_results=results or None, **extra,
    )  # fmt: skip


def _metric_table(metrics: dict[str, dict]) -> tuple[list[str], list[dict]]:
    columns = [name for name in ("original", "gold", "unlearned") if metrics.get(name)]
    rows = [
        {"name": key, "values": [_number(metrics[c].get(key)) for c in columns], "goal": goal}
        for key, goal in SUITE_ROWS if any(key in metrics[c] for c in columns)
    ]  # fmt: skip
    known = {key for key, _ in SUITE_ROWS}
    for key in sorted({k for c in columns for k in metrics[c]} - known):  # other suites' metrics, e.g. classifier
        rows.append({"name": key, "values": [_number(metrics[c].get(key)) for c in columns], "goal": ""})
    return columns, rows


def _bibtex(paper: dict[str, str] | None) -> str | None:
    if not paper:
        return None
    if paper.get("bibtex"):
        return paper["bibtex"]
    key = "arxiv" + paper["id"].replace(".", "_")
    return (f"@misc{{{key},\n  title         = {{{paper['title']}}},\n  eprint        = {{{paper['id']}}},\n"
            f"  archivePrefix = {{arXiv}},\n  url           = {{https://arxiv.org/abs/{paper['id']}}}\n}}")  # fmt: skip


def _grouped(reasons: list[tuple[str, str, str]]) -> list[dict[str, str]]:
    """One line per reason and set of models: `(model, metric, why)` triples that share `why` and the models it holds
    for are said once, naming every such metric (a reason repeated for three models is one line)."""
    models_of: dict[tuple[str, str], dict[str, None]] = {}
    for model, metric, why in reasons:
        models_of.setdefault((why, metric), {})[model] = None
    lines: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (why, metric), models in models_of.items():
        lines.setdefault((why, tuple(models)), []).append(metric)
    return [{"metrics": ", ".join(f"`{m}`" for m in metrics), "why": why,
             "models": " and ".join([", ".join(models[:-1]), models[-1]] if len(models) > 2 else models),
             "plural": len(models) > 1} for (why, models), metrics in lines.items()]  # fmt: skip


def render_model_card(manifest: dict[str, Any], plots: dict[str, str] | None = None) -> ModelCard:
    """The card of a manifest: the newest request in full, the lineage as a table, `plots` ({name: relative path})
    embedded when given. Missing pieces (no evaluation, no plots, no paper) are said, not left empty."""
    current = manifest["requests"][0]
    columns, rows = _metric_table(current.get("metrics") or {})
    lineage = [
        {"request": r["request"], "date": r.get("date", "")[:10], "method": r.get("method_name", r["method"]),
         "examples": r["fingerprint"]["num_examples"], "fingerprint": r["fingerprint"]["hmac_sha256"][:16],
         "forget_quality": _number(((r.get("metrics") or {}).get("unlearned") or {}).get("forget_quality")),
         "model_utility": _number(((r.get("metrics") or {}).get("unlearned") or {}).get("model_utility"))}
        for r in manifest["requests"]
    ]  # fmt: skip
    # a learning-time preparation (Ready2Unlearn) is in the lineage but removed nothing
    deletions = sum(1 for r in manifest["requests"] if r.get("kind") != "preparation")
    reasons = [(model, metric, why) for model, whys in (current.get("metrics_missing") or {}).items()
               for metric, why in whys.items()]  # fmt: skip
    # NaN or inf is no result: the table shows n/a, the model-index leaves it out, and here it says why
    reasons += [(model, metric, f"not a finite number ({value})")
                for model, values in (current.get("metrics") or {}).items() if isinstance(values, dict)
                for metric, value in values.items() if _non_finite(value)]  # fmt: skip
    missing = _grouped(reasons)
    dataset = current.get("dataset") or {}
    return ModelCard.from_template(
        card_data(manifest),
        template_path=str(TEMPLATE),
        model_name=model_name(manifest),
        base_model=manifest.get("base_model") or {},
        base_is_hub=is_hub_id((manifest.get("base_model") or {}).get("id")),
        request=current,
        method_name=current.get("method_name", current["method"]),
        paper=current.get("paper"),
        bibtex=_bibtex(current.get("paper")),
        description=current.get("description"),
        fingerprint=current["fingerprint"],
        settings=current.get("settings") or {},
        metrics=bool(rows),
        metric_columns=columns,
        metric_rows=rows,
        missing=missing,
        tofu=dataset.get("id") == "locuslab/TOFU",
        dataset=dataset,
        plots=plots or {},
        lineage=lineage,
        deletions=deletions,
        prepared=deletions < len(lineage),
        compute={"steps": None, "wall_time_seconds": None, "hardware": None, **(current.get("compute") or {})},
        versions=current.get("versions") or {},
    )


def eval_result_entries(manifest: dict[str, Any]) -> list:
    """`.eval_results/` entries of the newest request's metrics, for a public benchmark dataset only (the Hub links
    them to the dataset's leaderboard); [] for a private dataset, or a huggingface_hub that predates them."""
    try:
        from huggingface_hub import EvalResultEntry
    except ImportError:
        return []
    current = manifest["requests"][0]
    dataset, metrics = current.get("dataset") or {}, (current.get("metrics") or {}).get("unlearned") or {}
    if not dataset.get("public"):
        return []
    return [
        EvalResultEntry(dataset_id=dataset["id"], task_id=f"{dataset.get('split') or 'default'}_{name}",
                        value=round(float(metrics[name]), 6), date=current.get("date"),
                        notes=f"{name} after {current['method']} unlearning (hf-unlearn)")
        for name in _reported(metrics)
    ]  # fmt: skip


def write_card_files(folder: str | Path, manifest: dict[str, Any]) -> ModelCard:
    """Write the manifest, the plots, `.eval_results/` and README.md (the card) into `folder`; return the card."""
    import yaml

    from .plots import plot_loss_curves, plot_mia_roc

    folder = Path(folder)
    current = manifest["requests"][0]
    write_manifest(folder, manifest)
    plots = {}
    drawn_plots = {"loss_curves": plot_loss_curves(current.get("curves") or {}, folder / PLOTS["loss_curves"]),
                   "mia_roc": plot_mia_roc(current.get("mia_roc") or {}, folder / PLOTS["mia_roc"])}  # fmt: skip
    for name, drawn in drawn_plots.items():
        if drawn is not None:
            plots[name] = PLOTS[name]
        elif (folder / PLOTS[name]).exists():
            (folder / PLOTS[name]).unlink()  # a stale plot from an earlier render must not describe this request
    for name, path in (current.get("audit_plots") or {}).items():  # a method's own figures, e.g. AC's audit heatmaps
        if (folder / path).is_file():
            plots[name] = path
    entries, target = eval_result_entries(manifest), folder / ".eval_results" / "hf-unlearn.yaml"
    if entries:
        from huggingface_hub import eval_result_entries_to_yaml

        target.parent.mkdir(exist_ok=True)
        target.write_text(yaml.safe_dump(eval_result_entries_to_yaml(entries), sort_keys=False))
    elif target.exists():
        target.unlink()
    card = render_model_card(manifest, plots)
    card.save(folder / "README.md")
    return card


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    overwrite: bool = False,
    commit_message: str | None = None,
    run_as_future: bool = False,
    endpoint: str | None = None,
):
    """Upload an unlearned model's folder to `repo_id`, never its salt or checkpoints.

    Refuses (PushError) to write into an existing repo whose card names a different base model unless `overwrite`.
    A failed push (an HTTP error or a network failure) raises PushError saying what to re-run, from the call or from
    the returned Future's `result()` with `run_as_future`; the local folder is left as it was, and a repo this push
    created is deleted again.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RemoteEntryNotFoundError

    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        raise PushError(f"{folder} has no {MANIFEST_NAME}: it is not an hf-unlearn output folder. Save the "
                        "unlearned model with an UnlearningTrainer's save_model() first.")  # fmt: skip
    rerun = f"hf-unlearn push {folder} {repo_id}" + (f" --revision {revision}" if revision else "")
    api, errors, created = HfApi(endpoint=endpoint, token=token), _network_errors(), False

    def failed(step: str, error: Exception) -> PushError:
        """The one error of a failed push, raised once a repo this push created is deleted again."""
        undone = ""
        if created:
            try:
                api.delete_repo(repo_id, missing_ok=True)
                undone = f" {repo_id}, which this push created, was deleted again."
            except errors as cleanup:
                undone = (f" {repo_id}, which this push created, could not be deleted ({_reason(cleanup, token)}): "
                          "delete it on the Hub, or let the re-run fill it.")  # fmt: skip
        return PushError(f"Pushing {folder} to {repo_id} failed while {step} ({_reason(error, token)}). The local "
                         f"folder {folder} is intact; re-run `{rerun}`.{undone}")  # fmt: skip

    try:
        created = _create_repo(api, repo_id, private)
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        try:
            existing = None if created else api.hf_hub_download(repo_id, "README.md", revision=revision)
        except RemoteEntryNotFoundError:  # not EntryNotFoundError: its LocalEntryNotFoundError is a network failure
            existing = None
    except errors as error:
        raise failed("preparing the repo", error) from None
    ours = card_data(manifest).base_model
    if existing is not None and not overwrite:
        theirs = ModelCard(Path(existing).read_text(encoding="utf-8")).data.base_model
        if theirs != ours:
            raise PushError(
                f"{repo_id} already holds a model card for base model {theirs!r}, but {folder} was unlearned from "
                f"{ours!r}. Refusing to overwrite it: push to another repo, or re-run with --overwrite "
                f"(overwrite=True) if replacing it is intended."
            )

    def upload():
        try:
            return api.upload_folder(
                repo_id=repo_id, folder_path=str(folder), revision=revision, ignore_patterns=NEVER_UPLOAD,
                commit_message=commit_message or f"Unlearned with hf-unlearn ({manifest['requests'][0]['method']})",
            )  # fmt: skip
        except errors as error:
            raise failed("uploading", error) from None

    # in the background, on the client's own queue (api.run_as_future), so a failure there cleans up the same way
    return api.run_as_future(upload) if run_as_future else upload()


def _network_errors() -> tuple[type[Exception], ...]:
    """What a Hub call raises on an HTTP error answer (HfHubHTTPError) or a failed connection (refused, reset,
    dropped, timed out): the HTTP layer's base error (httpx2 under huggingface_hub 2, httpx under 1.x) and OSError."""
    try:
        import httpx2 as httpx
    except ImportError:
        import httpx
    return httpx.HTTPError, OSError


def _create_repo(api, repo_id: str, private: bool | None) -> bool:
    """Create `repo_id`: True when this call created it, False when it existed already (a failed push keeps it)."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        api.create_repo(repo_id, private=private)
        return True
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status in (401, 402, 403):  # a token may write to a repo without creating repos there: the client then
            api.create_repo(repo_id, private=private, exist_ok=True)  # checks that the repo exists, or raises
        elif status != 409:
            raise
        return False


def _reason(error: Exception, token: str | None = None) -> str:
    """The error's first line, without a token: headers are never included, and a token in the text anyway (the one
    given, or anything shaped like a Hub token) is masked."""
    text = str(error).strip()
    reason = text.splitlines()[0][:300] if text else type(error).__name__
    reason = reason.replace(token, "hf_***") if token else reason
    return re.sub(r"\bhf_[A-Za-z0-9]{30,}", "hf_***", reason)


def read_rows(path: str | Path) -> list[dict]:
    """Rows of a JSON Lines, JSON (a list of objects), CSV or Parquet file: the requester's copy of the forget set."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: pass the file holding the forget set's rows.")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        from .data import read_jsonl

        return read_jsonl(path)
    if suffix == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(rows, list):
            raise ValueError(f"{path} holds a JSON {type(rows).__name__}: it must be a list of rows (objects).")
        return rows
    if suffix in (".csv", ".parquet"):
        from datasets import load_dataset

        return list(load_dataset(suffix[1:], data_files=str(path), split="train"))
    raise ValueError(f"{path}: unknown file type {suffix!r}; use .jsonl, .json, .csv or .parquet.")


def verify(source: str | Path, forget_file: str | Path, salt_file: str | Path, revision: str | None = None):
    """`(manifest, request)`: the request in `source`'s lineage (a local model folder or a Hub repo) whose fingerprint
    the forget rows and the salt reproduce; `request` is None when none does."""
    salt_path = Path(salt_file)
    if not salt_path.is_file():
        raise FileNotFoundError(f"{salt_path} does not exist: pass the {SALT_NAME} the unlearning run wrote.")
    manifest = read_manifest(source, revision=revision)
    if manifest is None:
        raise ValueError(f"{source} has no {MANIFEST_NAME}: it was not unlearned with hf-unlearn, or is not reachable.")
    return manifest, find_request(manifest, read_rows(forget_file), salt_path.read_text().strip())
