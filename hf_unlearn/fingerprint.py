"""Fingerprints of a forget set: prove which deletion request a model served without revealing the data.

The fingerprint is the number of examples plus an HMAC-SHA256, keyed by a random salt, over the sorted SHA-256 hashes
of the examples. The salt stays with the requester (it is written apart from the model and never uploaded), so the
requester, who holds the data and the salt, can verify the card, and nobody else can test guesses against it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

ALGORITHM = "hmac-sha256(salt, sorted sha256(canonical json of each example))"


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda item: str(item[0]))}
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": base64.b64encode(bytes(value)).decode()}
    if hasattr(value, "tolist"):  # torch tensors and numpy arrays
        return _canonical(value.tolist())
    if hasattr(value, "tobytes") and hasattr(value, "mode") and hasattr(value, "size"):  # PIL images
        return {"image": [value.mode, list(value.size)], "bytes": base64.b64encode(value.tobytes()).decode()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def example_hash(example: Mapping) -> str:
    """SHA-256 of one example's canonical JSON (keys sorted; tensors, arrays, bytes and images as their content)."""
    text = json.dumps(_canonical(example), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def new_salt() -> str:
    """A random 256-bit salt, as hex."""
    return secrets.token_hex(32)


def dataset_fingerprint(examples: Iterable[Mapping], salt: str) -> dict[str, Any]:
    """`{"num_examples", "hmac_sha256", "algorithm"}` of a forget set; any order of the same set gives the same."""
    if not salt:
        raise ValueError("salt is empty: create one with hf_unlearn.fingerprint.new_salt() and keep it private.")
    hashes = sorted(example_hash(example) for example in examples)
    if not hashes:
        raise ValueError("Cannot fingerprint an empty forget set: pass at least one example.")
    digest = hmac.new(salt.encode("utf-8"), "\n".join(hashes).encode("ascii"), hashlib.sha256).hexdigest()
    return {"num_examples": len(hashes), "hmac_sha256": digest, "algorithm": ALGORITHM}


def verify_fingerprint(examples: Iterable[Mapping], salt: str, fingerprint: Mapping[str, Any]) -> bool:
    """Whether `examples` with `salt` give exactly `fingerprint` (compared in constant time)."""
    mine = dataset_fingerprint(examples, salt)
    return mine["num_examples"] == fingerprint.get("num_examples") and hmac.compare_digest(
        mine["hmac_sha256"], str(fingerprint.get("hmac_sha256", ""))
    )
