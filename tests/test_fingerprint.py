"""Forget-set fingerprints: verify with the salt, change with one character, reveal nothing without the salt."""

import json

import pytest
import torch

from hf_unlearn.fingerprint import dataset_fingerprint, example_hash, new_salt, verify_fingerprint

ROWS = [{"question": "Where was Ada Quill born?", "answer": "In Corvale Bay."},
        {"question": "What does Ada Quill do?", "answer": "She keeps bees."}]  # fmt: skip


def test_verifies_with_the_salt_in_any_order():
    salt = new_salt()
    fingerprint = dataset_fingerprint(ROWS, salt)
    assert fingerprint["num_examples"] == 2 and len(fingerprint["hmac_sha256"]) == 64
    assert verify_fingerprint(list(reversed(ROWS)), salt, fingerprint)
    assert not verify_fingerprint(ROWS, new_salt(), fingerprint)  # another salt: no match
    assert not verify_fingerprint(ROWS[:1], salt, fingerprint)


def test_one_character_changes_the_fingerprint():
    salt = new_salt()
    changed = [ROWS[0], {**ROWS[1], "answer": "She keeps bees!"}]
    assert dataset_fingerprint(changed, salt)["hmac_sha256"] != dataset_fingerprint(ROWS, salt)["hmac_sha256"]
    assert not verify_fingerprint(changed, salt, dataset_fingerprint(ROWS, salt))


def test_the_fingerprint_holds_no_text_and_tensors_hash_by_content():
    fingerprint = dataset_fingerprint(ROWS, new_salt())
    text = json.dumps(fingerprint)
    assert not any(word in text for word in ("Ada", "Quill", "Corvale", "bees"))
    assert example_hash({"input_ids": torch.tensor([1, 2, 3])}) == example_hash({"input_ids": [1, 2, 3]})
    assert example_hash({"a": 1, "b": 2}) == example_hash({"b": 2, "a": 1})


def test_errors():
    with pytest.raises(ValueError, match="salt is empty"):
        dataset_fingerprint(ROWS, "")
    with pytest.raises(ValueError, match="Cannot fingerprint an empty forget set"):
        dataset_fingerprint([], new_salt())
