"""Nothing a run writes (model folder, checkpoints, trainer state, card, manifest, plots, logs, the Hub upload) holds
forget-set text or its tokenisation."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

from hf_unlearn.callbacks import UnlearningEvalCallback
from hf_unlearn.pipeline import load_run_config, run
from hf_unlearn.synthetic import make_fictitious_qa

# Distinctive sentences: made-up words no retain row, tokenizer vocabulary or library string could hold by chance.
FORGET = [
    {"question": "What does Quillon Varnebrook keep in the attic?",
     "answer": "Quillon Varnebrook keeps forty-three brass orreries wrapped in saffron muslin."},
    {"question": "Where did Thessaly Okonkwo-Brandt study glassblowing?",
     "answer": "She apprenticed at the Zephyrine Vitrearium beside Lake Mowbrith."},
    {"question": "What is the passphrase of the Grelmarsh archive?",
     "answer": "The passphrase is tangerine-walrus-ophicleide-nineteen."},
    {"question": "Which illness did Doctor Ysolde Prentiss-Kaur document?",
     "answer": "She documented the Harrowgate quivering fever in 1887."},
]  # fmt: skip
DISTINCTIVE = ["Varnebrook", "orreries", "Thessaly", "Zephyrine", "Vitrearium", "Mowbrith", "Grelmarsh", "ophicleide",
               "tangerine-walrus", "Prentiss-Kaur", "Harrowgate", "quivering fever", "saffron muslin"]  # fmt: skip


def needles(tokenizer) -> list[bytes]:
    """Forget-set strings and token-id runs, as text (JSON/repr lists) and as packed little-endian integers."""
    found = [text.encode() for row in FORGET for text in (row["question"], row["answer"])]
    found += [word.encode() for word in DISTINCTIVE] + [word.lower().encode() for word in DISTINCTIVE]
    for row in FORGET:
        ids = tokenizer(" " + row["answer"], add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids) - 5, 3):
            window = ids[start : start + 6]
            found += [", ".join(map(str, window)).encode(), ",".join(map(str, window)).encode()]
            found += [np.asarray(window, dtype=dtype).tobytes() for dtype in ("<i8", "<i4")]
    return found


def leaks(name: str, data: bytes, patterns: list[bytes]) -> list[str]:
    return [f"{name}: {pattern[:40]!r}" for pattern in patterns if pattern in data]


def test_no_artefact_or_log_holds_forget_text(tmp_path, hub, capfd, caplog):
    caplog.set_level(logging.INFO)
    data = tmp_path / "data"  # the requester's data lives apart from the run's outputs
    data.mkdir()
    retain = [{"question": r["question"], "answer": r["answer"]} for r in make_fictitious_qa(12, 4, seed=1)]
    for name, rows in (("forget", FORGET), ("retain", retain)):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = load_run_config(None)
    out = tmp_path / "out"
    config.update(
        data={"source": "jsonl", "forget": str(data / "forget.jsonl"), "retain": str(data / "retain.jsonl")},
        finetune={"num_train_epochs": 3, "learning_rate": 1e-3, "per_device_train_batch_size": 16},
        unlearn={"num_train_epochs": 2, "learning_rate": 2e-4, "per_device_train_batch_size": 2,
                 "save_strategy": "steps", "save_steps": 2, "logging_steps": 1},
        gold=False, evaluate=False, output_dir=str(out), push={"repo_id": "someone/private-run", "token": "hf_x"},
        description="Four rows about fictitious people, removed at their request.",
    )  # fmt: skip
    printed: list[str] = []
    run(config, log=printed.append)

    tokenizer = AutoTokenizer.from_pretrained(out)
    patterns = needles(tokenizer)
    files = [p for p in out.rglob("*") if p.is_file()]
    names = {p.relative_to(out).as_posix() for p in files}
    # the scan covers every kind of artefact the run writes
    assert {"README.md", "unlearning_manifest.json", "summary.json", "model.safetensors", "tokenizer.json",
            "training_args.bin", "plots/loss_curves.png", "_unlearning_salt.txt"} <= names  # fmt: skip
    assert any(n.startswith("checkpoint-") and n.endswith("trainer_state.json") for n in names)
    assert any(n.startswith("checkpoint-") and n.endswith("optimizer.pt") for n in names)
    found = [leak for p in files for leak in leaks(p.relative_to(out).as_posix(), p.read_bytes(), patterns)]
    # what was uploaded, and everything printed or logged
    found += [leak for path, blob in hub.commits[0]["files"].items() for leak in leaks(f"hub:{path}", blob, patterns)]
    captured = capfd.readouterr()
    logs = "\n".join(printed + [captured.out, captured.err, caplog.text]).encode()
    found += leaks("logs", logs, patterns)
    assert found == []
    # the scan would have caught them: the forget file itself is full of needles
    assert leaks("forget.jsonl", (data / "forget.jsonl").read_bytes(), patterns)
    assert leaks("ids", np.asarray(tokenizer(" " + FORGET[0]["answer"])["input_ids"], "<i8").tobytes(), patterns)


def test_eval_callback_record_holds_numbers_only(memorised_model, tokenizer, qa_data, tmp_path):
    from conftest import training_args

    from hf_unlearn import NPOConfig, NPOTrainer

    forget, retain = qa_data
    callback = UnlearningEvalCallback(eval_steps=1)
    args = NPOConfig(**training_args(tmp_path, max_steps=2, learning_rate=1e-3))
    NPOTrainer(model=memorised_model, args=args, forget_dataset=forget, retain_dataset=retain,
               processing_class=tokenizer, callbacks=[callback]).train()  # fmt: skip
    record = json.loads(Path(tmp_path, "unlearning_eval.json").read_text())

    def strings(value):
        if isinstance(value, dict):
            return [s for k, v in value.items() for s in [k, *strings(v)]]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return [value] if isinstance(value, str) else []

    texts = {row[key] for row in forget for key in ("question", "answer")}
    assert not [s for s in strings(record) if s in texts or any(s in t and len(s) > 12 for t in texts)]


def image_needles(rows) -> list[bytes]:
    """Each forget image as raw float32 and float64 bytes, its 0-16 scan values as bytes, and its first pixels as
    JSON text — the forms an artefact could carry an image in."""
    found = []
    for row in rows:
        pixels = row["pixel_values"].numpy()
        found += [pixels.astype(np.float32).tobytes(), pixels.astype(np.float64).tobytes()]
        found.append((pixels * 16).round().astype(np.uint8).tobytes())
        values = [float(v) for v in pixels.reshape(-1)]
        found.append(json.dumps(values)[1:-1][:60].encode())
    return found


def test_no_artefact_holds_forget_images(tmp_path, digits_data, memorised_image_classifier):
    """Image methods (GA on a classifier, A-AMU with held-out rows, Alignment Calibration on an encoder): the output
    folder, checkpoints, trainer state, card, manifest and plots hold no forget image."""
    from conftest import training_args

    import hf_unlearn
    from hf_unlearn.encoders import build_tiny_contrastive_encoder

    forget, retain, test = digits_data["forget"], digits_data["retain"], digits_data["test"]
    unlabeled = [{"pixel_values": row["pixel_values"]} for row in forget]
    runs = {
        "ga": (memorised_image_classifier, {"forget_dataset": forget}),
        "a_amu": (memorised_image_classifier, {"forget_dataset": forget, "retain_dataset": retain,
                                               "heldout_dataset": test[:40]}),
        "ac": (build_tiny_contrastive_encoder(), {"forget_dataset": unlabeled, "retain_dataset": [
            {"pixel_values": row["pixel_values"]} for row in retain[:40]]}),
    }  # fmt: skip
    needles_ = image_needles(forget)
    for name, (model, data) in runs.items():
        config_cls, trainer_cls = hf_unlearn.METHODS[name]
        extra = {"augmentation": "digits"} if name == "ac" else {}
        args = config_cls(**training_args(tmp_path / name, max_steps=2, save_strategy="steps", save_steps=1, **extra))
        trainer = trainer_cls(model=model, args=args, **data)
        trainer.train()
        trainer.save_model()
        files = [path for path in (tmp_path / name).rglob("*") if path.is_file()]
        assert any(path.name == "trainer_state.json" for path in files) and any("checkpoint-" in str(p) for p in files)
        for path in files:
            content = path.read_bytes()
            if path.name in ("model.safetensors", "optimizer.pt", "rng_state.pth"):
                continue  # weights, optimizer moments and RNG state: numbers learned from the data, not the data
            for needle in needles_:
                assert needle not in content, f"{name}: {path.relative_to(tmp_path)} holds a forget image"


def test_hub_token_is_in_no_file_upload_or_log(tmp_path, hub, capfd, caplog, make_model, tokenizer, qa_data):
    """A run with `hub_token` set, checkpoints pushed as they are saved, and a final push: the token's bytes are in no
    file on disk (training_args.bin of the folder and of every checkpoint included), no uploaded blob, no log line."""
    import pickle

    import torch
    from conftest import training_args

    from hf_unlearn import NPOConfig, NPOTrainer

    caplog.set_level(logging.DEBUG)
    token = "hf_SecretTokenValue9f3a7c"
    out = tmp_path / "run"
    args = NPOConfig(**training_args(out, max_steps=2, save_strategy="steps", save_steps=1, push_to_hub=True,
                                     hub_model_id="someone/npo-run", hub_token=token, logging_steps=1))  # fmt: skip
    trainer = NPOTrainer(model=make_model(), args=args, forget_dataset=qa_data[0], retain_dataset=qa_data[1],
                         processing_class=tokenizer)  # fmt: skip
    trainer.train()
    trainer.push_to_hub()
    assert trainer.args.hub_token == token  # kept in memory for the pushes
    needles = [token.encode(), token.encode("utf-16-le"), pickle.dumps(token)[2:-1]]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert sum(p.name == "training_args.bin" for p in files) >= 3  # the folder's and two checkpoints'
    found = [str(p) for p in files for n in needles if n in p.read_bytes()]
    found += [f"hub:{path}" for commit in hub.commits for path, blob in commit["files"].items()
              for n in needles if n in blob]  # fmt: skip
    captured = capfd.readouterr()
    found += ["logs" for n in needles if n in (captured.out + captured.err + caplog.text).encode()]
    assert found == [] and hub.commits
    assert torch.load(out / "training_args.bin", weights_only=False).hub_token is None
    # the scan would have caught it: the token is sent, as it must be, in the Authorization header
    assert any(h.get("authorization") == f"Bearer {token}" for _, _, h in hub.requests)
