"""Where a model or data set comes from: a local path, or a Hub id; checked before anything is loaded, so that a typo or
an offline machine is one clear error at once instead of a minute of retries and a library traceback."""

from __future__ import annotations

from pathlib import Path


def hub_offline() -> bool:
    """Whether the Hub may not be reached (`HF_HUB_OFFLINE=1`, read as huggingface_hub reads it)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def check_model_source(name, what: str = "model") -> None:
    """A model given by name must be a local folder holding a `config.json`, or a Hub id while the Hub is reachable.

    Raises `FileNotFoundError` for a local path that is missing or is not a model folder, and `ValueError` for a Hub
    id offline, each naming the value and the fix."""
    from .manifest import is_hub_id

    text = str(name)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise FileNotFoundError(f"{what}={text!r} is not a model folder (no config.json in it): pass the folder "
                                    "that save_pretrained() wrote, or a Hub id.")  # fmt: skip
        return
    if not is_hub_id(text):
        raise FileNotFoundError(f"{what}={text!r} does not exist: pass an existing model folder or a Hub id "
                                "(owner/name).")  # fmt: skip
    if hub_offline():
        raise ValueError(f"{what}={text!r} is a Hub id, not available offline (HF_HUB_OFFLINE=1): pass a local path "
                         "(a folder with config.json, e.g. saved with save_pretrained), or unset HF_HUB_OFFLINE.")
