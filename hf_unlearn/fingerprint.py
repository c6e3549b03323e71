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


def content_columns(example: Mapping) -> list[str] | None:
    """The columns that are the content of a row: `question` and `answer` for question/answer rows (so a fingerprint
    does not depend on bookkeeping columns the requester may not hold), else None (every column)."""
    return ["question", "answer"] if {"question", "answer"} <= set(example) else None


def dataset_hashes(dataset) -> tuple[list[str], list[str]]:
    """The content columns of a dataset's rows (`content_columns` of its first) and the sorted hashes of its rows, as
    the user holds them: computed in memory, for the card's keyed fingerprint."""
    rows = [dataset[i] for i in range(len(dataset))]
    columns = content_columns(rows[0])
    return columns, example_hashes(rows, columns)


def example_hashes(examples: Iterable[Mapping], columns: list[str] | None = None) -> list[str]:
    """Sorted `example_hash` of each example, restricted to `columns` when given."""
    hashes = []
    for example in examples:
        if columns is not None:
            missing = [column for column in columns if column not in example]
            if missing:
                raise ValueError(f"A forget example has no {missing} column(s); the fingerprint covers {columns}.")
            example = {column: example[column] for column in columns}
        hashes.append(example_hash(example))
    return sorted(hashes)


def fingerprint_from_hashes(hashes: list[str], salt: str, columns: list[str] | None = None) -> dict[str, Any]:
    """The fingerprint of sorted example hashes (what `dataset_fingerprint` computes after hashing)."""
    if not salt:
        raise ValueError("salt is empty: create one with hf_unlearn.fingerprint.new_salt() and keep it private.")
    if not hashes:
        raise ValueError("Cannot fingerprint an empty forget set: pass at least one example.")
    digest = hmac.new(salt.encode("utf-8"), "\n".join(hashes).encode("ascii"), hashlib.sha256).hexdigest()
    return {"num_examples": len(hashes), "hmac_sha256": digest, "algorithm": ALGORITHM, "columns": columns}


def dataset_fingerprint(examples: Iterable[Mapping], salt: str, columns: list[str] | None = None) -> dict[str, Any]:
    """`{"num_examples", "hmac_sha256", "algorithm", "columns"}` of a forget set, over `columns` of each example (all
    columns when None); any order of the same set gives the same."""
    if not salt:  # before hashing anything
        raise ValueError("salt is empty: create one with hf_unlearn.fingerprint.new_salt() and keep it private.")
    return fingerprint_from_hashes(example_hashes(examples, columns), salt, columns)


def verify_fingerprint(examples: Iterable[Mapping], salt: str, fingerprint: Mapping[str, Any]) -> bool:
    """Whether `examples` with `salt` give exactly `fingerprint` (over the fingerprint's columns; constant time)."""
    mine = dataset_fingerprint(examples, salt, fingerprint.get("columns"))
    return mine["num_examples"] == fingerprint.get("num_examples") and hmac.compare_digest(
        mine["hmac_sha256"], str(fingerprint.get("hmac_sha256", ""))
    )
