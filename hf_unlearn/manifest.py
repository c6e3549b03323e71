"""The unlearning manifest: what was removed from a model, request by request, by fingerprint, never by content.

`unlearning_manifest.json` sits next to the weights and holds the whole lineage, newest request first:

    {"format": 1, "model_name": ..., "base_model": {"id": ..., "revision": ...} or null,
     "card": {"language": ..., "license": ..., "tags": [...]},
     "requests": [{"request": 2, "date": ..., "method": ..., "method_name": ..., "paper": {...},
                   "description": ..., "fingerprint": {...}, "dataset": {...} or null, "settings": {...},
                   "metrics": {"original": {...}, "gold": {...}, "unlearned": {...}}, "compute": {...},
                   "curves": {"loss/forget": [[step, value], ...]}, "mia_roc": {...}, "versions": {...}},
                  {"request": 1, ...}]}

The card (README.md) is rendered from the manifest alone, so `hf-unlearn card` can re-render it at any time. The salt
that keys the fingerprints is written to `_unlearning_salt.txt`, which no upload ever sends.
"""

from __future__ import annotations

import json
import os
import platform
import re
from pathlib import Path
from typing import Any

MANIFEST_NAME = "unlearning_manifest.json"
# `_`-prefixed, so that no upload sends it, Transformers' own (checkpoint pushes skip `_*`) included; folders saved
# before kept `unlearning_salt.txt`, which `read_salt` still reads and no upload of this package sends either.
SALT_NAME = "_unlearning_salt.txt"
LEGACY_SALT_NAME = "unlearning_salt.txt"
FORMAT_VERSION = 1
# Never uploaded by `push_folder`, `UnlearningTrainer.push_to_hub` or `hf-unlearn push`.
NEVER_UPLOAD = [SALT_NAME, LEGACY_SALT_NAME, "checkpoint-*", "checkpoint-*/**", "_*"]
# Where `save_model` stages a whole save (weights, card, manifest, plots, salt) before it appears in the folder at once;
# `_`-prefixed, so no upload (ours or Transformers') sends it.
STAGING_NAME = "_hf_unlearn_saving"
_COMMIT_NAME = "_COMMIT.json"

# Fields that describe where and how a run was launched, not what the method did: left out of a card's settings.
RUN_ENVIRONMENT = re.compile(
    r"^(output_dir|logging_dir|run_name|resume_from_checkpoint|hub_.*|.*_token|push_to_hub.*|report_to|"
    r"logging_.*|save_.*|disable_tqdm|dataloader_.*|ddp_.*|local_rank|deepspeed|fsdp.*|accelerator_config|"
    r"use_cpu|trackio_.*|project|overwrite_output_dir|forget_description)$"
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def non_default_settings(args) -> dict[str, Any]:
    """The config values that differ from the method's defaults, without run-environment fields (paths, hub, logging,
    launch) or tokens: what a reader needs to reproduce the unlearning."""
    from accelerate.state import AcceleratorState, PartialState

    # A fresh TrainingArguments resets accelerate's shared process state (on rank 0 of a multi-process run,
    # world_size became 1): keep it as it was.
    saved = dict(PartialState._shared_state), dict(AcceleratorState._shared_state)
    try:
        defaults = type(args)(output_dir=args.output_dir).to_dict()
    finally:
        for state, values in zip((PartialState._shared_state, AcceleratorState._shared_state), saved, strict=True):
            state.clear()
            state.update(values)
    settings = {}
    for key, value in args.to_dict().items():
        if RUN_ENVIRONMENT.match(key) or value == defaults.get(key):
            continue
        settings[key] = value
    return dict(sorted(settings.items()))


def hardware() -> str:
    """The accelerator (or CPU) the run used, in words."""
    import torch

    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        return f"{count}x {torch.cuda.get_device_name(0)}"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "Apple MPS"
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def versions() -> dict[str, str]:
    import huggingface_hub
    import torch
    import transformers

    from . import __version__

    found = {"hf-unlearn": __version__, "transformers": transformers.__version__, "torch": torch.__version__,
             "huggingface_hub": huggingface_hub.__version__}  # fmt: skip
    for name in ("peft", "trl", "accelerate", "datasets"):
        try:
            found[name] = __import__(name).__version__
        except ImportError:
            pass
    return found


def is_hub_id(name: str | None) -> bool:
    """Whether `name` names a Hub repo (not a local folder that exists, not a path)."""
    return bool(name) and bool(_HUB_ID.match(name)) and not os.path.exists(name)


def read_manifest(source: str | os.PathLike, revision: str | None = None, token: str | bool | None = None):
    """The manifest of a local model folder or of a Hub repo; None when it has none."""
    path = Path(source) / MANIFEST_NAME
    if Path(source).is_dir():
        recover_folder(source)
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} is not valid JSON ({error}): the manifest is damaged; restore it from the Hub "
                             "repo or a backup of the folder (it is rewritten only by save_model).") from None
    if Path(source).exists() or not is_hub_id(str(source)):
        return None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return json.loads(Path(hf_hub_download(str(source), MANIFEST_NAME, revision=revision, token=token)).read_text())
    except (OSError, ValueError, HfHubHTTPError):  # not an hf-unlearn model, offline, or not reachable
        return None


def write_manifest(folder: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    path = Path(folder) / MANIFEST_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path


# Files whose presence at the top of a folder means it holds a saved model (weights, or an unlearned model's manifest).
MODEL_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
               "adapter_model.safetensors", "adapter_model.bin", MANIFEST_NAME)  # fmt: skip


def holds_model(folder: str | os.PathLike) -> bool:
    """Whether `folder` already holds a saved model (weights or an unlearning manifest at its top level): a run that
    saves into it would replace that model. Checkpoints (`checkpoint-*`) alone do not count: they are for resuming."""
    return any((Path(folder) / name).is_file() for name in MODEL_FILES)


def begin_staging(folder: str | os.PathLike) -> Path:
    """An empty staging folder inside `folder` for the next save (any earlier interrupted save is settled first)."""
    import shutil

    recover_folder(folder)
    staging = Path(folder) / STAGING_NAME
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def commit_staging(folder: str | os.PathLike, remove: list[str] = ()) -> None:
    """Make the staged files appear in `folder`, replacing older ones, and delete `remove` (paths relative to
    `folder`: files of the older save that the new one does not have, e.g. a plot no longer drawn).

    The staged files are flushed, then a commit record listing them is written atomically; from that moment the save
    counts as done, and `recover_folder` finishes it if the process dies while the files are being moved. A process
    killed before that moment leaves the older save as it was (its staging folder is discarded later). So a crash at
    any point leaves the old complete save or, once settled, the new complete save — never new weights under an old
    card."""
    staging = Path(folder) / STAGING_NAME
    files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    for name in files:
        with open(staging / name, "rb") as handle:
            os.fsync(handle.fileno())
    record = staging / (_COMMIT_NAME + ".tmp")
    with open(record, "w") as handle:
        json.dump({"files": files, "remove": [r for r in remove if r not in files]}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(record, staging / _COMMIT_NAME)
    _apply_staging(Path(folder))


def _apply_staging(folder: Path) -> None:
    import shutil

    staging = folder / STAGING_NAME
    record = json.loads((staging / _COMMIT_NAME).read_text())
    for name in record["files"]:  # idempotent: a file already moved by an interrupted run is not in staging
        if (staging / name).is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, folder / name)
    for name in record["remove"]:
        if (folder / name).is_file():
            (folder / name).unlink()
    shutil.rmtree(staging, ignore_errors=True)


def recover_folder(folder: str | os.PathLike) -> None:
    """Settle a save that a crash interrupted: finish it when its commit record was written, else discard it."""
    import shutil

    staging = Path(folder) / STAGING_NAME
    if not staging.is_dir():
        return
    if (staging / _COMMIT_NAME).is_file():
        _apply_staging(Path(folder))
    else:
        shutil.rmtree(staging, ignore_errors=True)


def read_salt(folder: str | os.PathLike) -> str | None:
    """The salt of the newest request saved in `folder` (`_unlearning_salt.txt`, or an older folder's name for it)."""
    for name in (SALT_NAME, LEGACY_SALT_NAME):
        if (Path(folder) / name).is_file():
            return (Path(folder) / name).read_text().strip()
    return None


def write_salt(folder: str | os.PathLike, salt: str) -> Path:
    """Write the salt (owner-only permissions where the OS has them); it is for the requester, never for the Hub."""
    path = Path(folder) / SALT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(salt + "\n")
    try:
        path.chmod(0o600)
    except OSError:  # pragma: no cover - filesystems without POSIX modes
        pass
    return path


def pipeline_tag(model) -> str:
    """The Hub pipeline tag of a model (a PEFT model's by its base): what it does, from its class and architectures."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = " ".join([type(base).__name__, *(getattr(getattr(base, "config", None), "architectures", None) or [])])
    for pattern, tag in (("CLIP", "zero-shot-image-classification"), ("ImageClassification", "image-classification"),
                         ("SequenceClassification", "text-classification"), ("Llava", "image-text-to-text"),
                         ("ContrastiveEncoder", "image-feature-extraction")):  # fmt: skip
        if pattern in names:
            return tag
    return "text-generation"


def build_request(*, method: str, method_name: str, paper, description, fingerprint, settings, log_history: list,
                  steps: int, kind: str | None = None, **fields) -> dict[str, Any]:  # fmt: skip
    """One request of a lineage, from plain values: what was served (method, paper, the rows' fingerprint, the
    settings), when, on what compute, with the loss curves of `log_history` and the library versions. `fields` add or
    fill the rest (dataset, metrics, metrics_missing, mia_roc, weights_changed, ...)."""
    from datetime import datetime, timezone

    from .plots import loss_curves

    runtime = next((e["train_runtime"] for e in reversed(log_history) if "train_runtime" in e), None)
    request = {"kind": kind} if kind else {}
    request.update(date=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), method=method,
                   method_name=method_name, paper=paper, description=description, fingerprint=fingerprint,
                   dataset=None, settings=settings, metrics={}, metrics_missing={},
                   compute={"steps": steps, "wall_time_seconds": runtime, "hardware": hardware()})  # fmt: skip
    request.update(fields)
    request.update(curves=loss_curves(log_history), mia_roc=request.get("mia_roc") or {}, versions=versions())
    return request


def dataset_entry(card_kwargs: dict) -> dict[str, Any] | None:
    """The public forget-set dataset the card names (`dataset_tags` or `dataset`, its split from `dataset_args`)."""
    datasets = card_kwargs.get("dataset_tags") or card_kwargs.get("dataset")
    datasets = [datasets] if isinstance(datasets, str) else list(datasets or [])
    split = card_kwargs.get("dataset_args")
    split = split[0] if isinstance(split, (list, tuple)) else split
    return {"id": datasets[0], "split": split, "public": True} if datasets else None


def card_fields(card_kwargs: dict, output_dir: str, model, tags: list[str]) -> dict[str, Any]:
    """The manifest's fields about the card: the model's name (`model_name`, else output_dir's), the user's language,
    license and tags, the library, the pipeline tag (`tasks` overrides the model's own), and the trainer's tags with
    the model's own (`model.add_model_tags`, which `Trainer.push_to_hub` merges too)."""
    tasks = card_kwargs.get("tasks")
    tags = list(tags) + [tag for tag in getattr(model, "model_tags", None) or [] if tag not in tags]
    return {
        "model_name": card_kwargs.get("model_name") or os.path.basename(os.path.abspath(output_dir)),
        "card": {key: card_kwargs.get(key) for key in ("language", "license", "tags")},
        "library_name": "peft" if hasattr(model, "peft_config") else "transformers",
        "pipeline_tag": tasks if isinstance(tasks, str) else pipeline_tag(model),
        "tags": tags,
    }


def with_request(parent: dict[str, Any] | None, request: dict[str, Any], base_model: dict | None, **fields):
    """A new manifest: `request` on top of the parent model's lineage (newest first)."""
    earlier = list((parent or {}).get("requests", []))
    request = {"request": len(earlier) + 1, **request}
    return {
        "format": FORMAT_VERSION,
        **fields,
        "base_model": (parent or {}).get("base_model") or base_model,
        "requests": [request, *earlier],
    }


def find_request(manifest: dict[str, Any], examples, salt: str) -> dict[str, Any] | None:
    """The request in the lineage whose fingerprint `examples` and `salt` reproduce, or None."""
    from .fingerprint import verify_fingerprint

    for request in manifest.get("requests", []):
        if verify_fingerprint(examples, salt, request["fingerprint"]):
            return request
    return None
