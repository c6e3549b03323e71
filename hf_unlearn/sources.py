"""Where a model or data set comes from: a local path, or a Hub id; checked before anything is loaded, so that a typo or
an offline machine is one clear error at once instead of a minute of retries and a library traceback."""

from __future__ import annotations

import functools
import socket
from pathlib import Path
from urllib.parse import urlsplit


def hub_offline() -> bool:
    """Whether the Hub may not be reached (`HF_HUB_OFFLINE=1`, read as huggingface_hub reads it)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


@functools.lru_cache(maxsize=4)
def _unreachable(endpoint: str, timeout: float = 3.0) -> str | None:
    """Why the Hub endpoint cannot be reached (a failed name lookup or connection, in at most `timeout` seconds), or
    None when a connection opens. Without this check, a machine with no network retries each file for ~30 s."""
    url = urlsplit(endpoint)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return None
    except OSError as error:
        return f"{url.hostname}: {error.strerror or type(error).__name__}"


MODEL_FOLDER = "a local path (a folder with config.json, e.g. written by save_pretrained)"


def check_hub_reachable(name: str, what: str, local: str = MODEL_FOLDER) -> None:
    """Fail at once, naming the `local` alternative, when `name` (a Hub id) cannot be fetched: offline mode is on, or
    the Hub's address cannot be reached."""
    from huggingface_hub import constants

    if hub_offline():
        raise ValueError(f"{what}={name!r} is a Hub id, not available offline (HF_HUB_OFFLINE=1): pass {local}, or "
                         "unset HF_HUB_OFFLINE.")
    reason = _unreachable(constants.ENDPOINT)
    if reason:
        raise ValueError(f"{what}={name!r} is a Hub id, but the Hub cannot be reached from this machine ({reason}): "
                         f"pass {local}, or set HF_HUB_OFFLINE=1 to work offline.")


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
    check_hub_reachable(text, what)
