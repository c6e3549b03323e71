"""Where a model or data set comes from: a local path, or a Hub id; checked before anything is loaded, so that a typo or
an offline machine is one clear error at once instead of a minute of retries and a library traceback."""

from __future__ import annotations

import functools
import json
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
    """Fail at once on a model that cannot load: a local folder must hold a readable config.json (or a PEFT adapter's
    adapter_config.json) and readable safetensors headers; a Hub id must be reachable, or cached when offline.

    Raises `FileNotFoundError` for a missing path or a folder that is not a model's, `ValueError` for a damaged file,
    a file given as the folder, or a Hub id that cannot be fetched, each naming the value and the fix."""
    from huggingface_hub import try_to_load_from_cache
    from safetensors import safe_open

    from .manifest import is_hub_id

    name = str(name)
    path = Path(name).expanduser()
    if path.is_file():
        raise ValueError(f"{what}={name!r} is a file: pass the model's folder (the one holding config.json).")
    if path.is_dir():
        configs = [path / file for file in ("config.json", "adapter_config.json") if (path / file).is_file()]
        if not configs:
            raise FileNotFoundError(f"{what}={name!r} is not a model folder (no config.json in it): pass the folder "
                                    "that save_pretrained() wrote, or a Hub id.")  # fmt: skip
        for file in configs:
            try:
                json.loads(file.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as error:
                raise ValueError(f"{file} is not valid JSON ({error}): the {what} folder {name} is damaged; save "
                                 "the model again or restore that file.") from None  # fmt: skip
        for file in sorted(path.glob("*.safetensors")):
            try:
                with safe_open(str(file), "pt"):
                    pass
            except Exception as error:
                raise ValueError(f"{file} is not a readable safetensors file ({error}): the {what} folder {name} is "
                                 "damaged or was not fully copied; save or copy the model again.") from None
        return
    if not is_hub_id(name):
        raise FileNotFoundError(f"{what}={name!r} does not exist: pass an existing model folder (holding config.json) "
                                "or a Hub id (owner/name).")  # fmt: skip
    if not (hub_offline() and isinstance(try_to_load_from_cache(name, "config.json"), str)):  # cached: loads offline
        check_hub_reachable(name, what)


def load_pretrained(cls, name: str, what: str = "model"):
    """`cls.from_pretrained(name)` after `check_model_source`; a failure is one line naming the folder (or id)."""
    check_model_source(name, what)
    try:
        return cls.from_pretrained(name)
    except Exception as error:
        detail = " ".join(str(error).split()) or type(error).__name__
        raise ValueError(f"could not load the {what} from {name} ({type(error).__name__}: {detail}).") from error
