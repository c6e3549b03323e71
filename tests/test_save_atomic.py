"""Nothing lost: a save killed at any point leaves one complete, consistent model; a folder that holds a model is not
overwritten by accident; every request has its own salt, and an earlier request's salt is kept."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import SEED, training_args
from safetensors.torch import load_file

from hf_unlearn import GAConfig, GATrainer
from hf_unlearn.manifest import MANIFEST_NAME, SALT_NAME, STAGING_NAME, find_request, read_manifest

# The child unlearns the model saved in FOLDER again (a second request on its lineage), dumps the weights it is about
# to save, and is SIGKILLed at one point of save_model.
CHILD = textwrap.dedent("""
    import json, os, signal, sys
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import hf_unlearn.hub, hf_unlearn.manifest
    from hf_unlearn import GAConfig, GATrainer

    folder, rows_file, dump, point = sys.argv[1:5]

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "before_weights":
        transformers.Trainer._save = die
    elif point == "between_weights_and_card":
        hf_unlearn.hub.write_card_files = die
    elif point in ("before_commit_record", "mid_commit"):
        real, calls = os.replace, []

        def replace(source, target):
            calls.append(source)
            # the first os.replace writes the commit record; the moves of the staged files follow it
            if (point == "before_commit_record" and len(calls) == 1) or (point == "mid_commit" and len(calls) == 3):
                die()
            return real(source, target)

        hf_unlearn.manifest.os.replace = replace
    rows = [json.loads(line) for line in open(rows_file)]
    model = AutoModelForCausalLM.from_pretrained(folder)
    args = GAConfig(output_dir=folder, report_to="none", save_strategy="no", disable_tqdm=True, use_cpu=True,
                    max_steps=1, learning_rate=1e-2, per_device_train_batch_size=4, alpha=0)
    trainer = GATrainer(model=model, args=args, forget_dataset=rows[4:],
                        processing_class=AutoTokenizer.from_pretrained(folder))
    trainer.train()
    torch.save({k: v.clone() for k, v in trainer.model.state_dict().items()}, dump)
    trainer.save_model()
""")

POINTS = ["before_weights", "between_weights_and_card", "before_commit_record", "mid_commit", "completes"]


@pytest.fixture
def first_save(tmp_path, make_model, tokenizer, qa_data):
    """A folder holding a complete unlearned model (request 1 of its lineage), and the rows of both requests."""
    forget = qa_data[0]
    folder = tmp_path / "model"
    args = GAConfig(**training_args(folder, max_steps=1, alpha=0, learning_rate=1e-2))
    trainer = GATrainer(model=make_model(), args=args, forget_dataset=forget[:4], processing_class=tokenizer)
    trainer.train()
    trainer.save_model()
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps(row) + "\n" for row in forget))
    return folder, rows, forget


def consistent_request(folder, forget) -> int:
    """Which request the folder holds, after checking that weights, card, manifest and salt all describe it."""
    manifest = read_manifest(folder)  # settles an interrupted save first
    assert not (folder / STAGING_NAME).exists()
    newest = manifest["requests"][0]
    card = (folder / "README.md").read_text()
    assert newest["fingerprint"]["hmac_sha256"] in card and f"Deletion request: **{newest['request']}**" in card
    rows = forget[:4] if newest["request"] == 1 else forget[4:]
    salt = (folder / SALT_NAME).read_text().strip()
    assert find_request(manifest, rows, salt)["request"] == newest["request"]  # the salt fingerprints these rows
    return newest["request"]


@pytest.mark.parametrize("point", POINTS)
def test_a_save_killed_anywhere_leaves_one_complete_model(first_save, point, tmp_path, qa_data):
    folder, rows, forget = first_save
    old_weights = load_file(folder / "model.safetensors")
    dump = tmp_path / "new_weights.pt"
    done = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(rows), str(dump), point],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == (0 if point == "completes" else -9), done.stderr[-2000:]
    request = consistent_request(folder, forget)
    weights = load_file(folder / "model.safetensors")
    same_as_old = all(torch.equal(weights[k], old_weights[k]) for k in old_weights)
    if request == 1:
        assert same_as_old
    else:
        new = torch.load(dump)
        assert not same_as_old and all(torch.equal(weights[k], new[k]) for k in weights)
    # a kill before the commit record keeps the old model; from the record on, the new one is completed
    assert request == (1 if point in ("before_weights", "between_weights_and_card", "before_commit_record") else 2)
    if request == 2:  # the first requester's salt is kept beside the new one
        earlier = [p for p in folder.glob("_unlearning_salt.*.txt")]
        assert len(earlier) == 1 and find_request(read_manifest(folder), forget[:4], earlier[0].read_text().strip())


def test_output_dir_holding_a_model_is_refused_unless_overwrite(first_save, make_model, tokenizer):
    folder, _, forget = first_save
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    args = GAConfig(**training_args(folder, max_steps=1, alpha=0))
    with pytest.raises(ValueError, match=r"already holds a saved model.*set overwrite_output_dir=True"):
        GATrainer(model=make_model(), args=args, forget_dataset=forget[4:], processing_class=tokenizer)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
    args = GAConfig(**training_args(folder, max_steps=1, alpha=0, overwrite_output_dir=True))
    trainer = GATrainer(model=make_model(), args=args, forget_dataset=forget[4:], processing_class=tokenizer)
    trainer.train()
    trainer.save_model()
    assert json.loads((folder / MANIFEST_NAME).read_text())["requests"][0]["request"] == 1  # a new, unrelated model


def test_every_request_gets_its_own_salt(first_save, tokenizer):
    from transformers import AutoModelForCausalLM

    folder, _, forget = first_save
    first_salt = (folder / SALT_NAME).read_text()
    args = GAConfig(**training_args(folder, max_steps=1, alpha=0, learning_rate=1e-2))
    trainer = GATrainer(model=AutoModelForCausalLM.from_pretrained(folder), args=args, forget_dataset=forget[4:],
                        processing_class=tokenizer)  # fmt: skip
    trainer.train()
    trainer.save_model()
    assert (folder / SALT_NAME).read_text() != first_salt
    assert consistent_request(folder, forget) == 2


def test_an_interrupted_staging_is_discarded_and_never_uploaded(tmp_path):
    """A crash before the commit record leaves a staging folder that the next save (or any read) discards; its name
    starts with '_' so that no upload carries it meanwhile."""
    from hf_unlearn.manifest import NEVER_UPLOAD, recover_folder

    folder = tmp_path / "m"
    (folder / STAGING_NAME).mkdir(parents=True)
    (folder / STAGING_NAME / "model.safetensors").write_bytes(b"half")
    recover_folder(folder)
    assert list(folder.iterdir()) == [] and STAGING_NAME.startswith("_") and "_*" in NEVER_UPLOAD


def test_a_failed_run_leaves_no_empty_output_folder(tmp_path, make_model, tokenizer, qa_data):
    import hf_unlearn

    model = make_model()
    with torch.no_grad():
        model.get_input_embeddings().weight.fill_(float("nan"))
    out = tmp_path / "never-filled"
    args = hf_unlearn.NPOConfig(**training_args(out, max_steps=2))
    trainer = hf_unlearn.NPOTrainer(model=model, args=args, forget_dataset=qa_data[0], retain_dataset=qa_data[1],
                                    processing_class=tokenizer)  # fmt: skip
    assert out.is_dir()  # Trainer makes it
    with pytest.raises(hf_unlearn.NonFiniteLossError):
        trainer.train()
    assert not out.exists() and tmp_path.is_dir()


RESUME_CHILD = textwrap.dedent("""
    import json, os, signal, sys
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from hf_unlearn import NPOConfig, NPOTrainer

    base, rows_file, out, seed = sys.argv[1:5]

    class KillAfterSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 3:
                os.kill(os.getpid(), signal.SIGKILL)

    rows = [json.loads(line) for line in open(rows_file)]
    args = NPOConfig(output_dir=out, report_to="none", disable_tqdm=True, use_cpu=True, max_steps=6, seed=int(seed),
                     save_strategy="steps", save_steps=1, learning_rate=1e-3, per_device_train_batch_size=4)
    NPOTrainer(model=AutoModelForCausalLM.from_pretrained(base), args=args, forget_dataset=rows[:8],
               retain_dataset=rows[8:], processing_class=AutoTokenizer.from_pretrained(base),
               callbacks=[KillAfterSave()]).train()
""")


def test_resume_after_sigkill_ends_with_the_same_weights(tmp_path, make_model, tokenizer, qa_data):
    from transformers import AutoModelForCausalLM

    from hf_unlearn import NPOConfig, NPOTrainer

    base, rows = tmp_path / "base", tmp_path / "rows.jsonl"
    make_model().save_pretrained(base)
    tokenizer.save_pretrained(base)
    forget, retain = qa_data
    rows.write_text("".join(json.dumps(row) + "\n" for row in forget + retain))
    out = tmp_path / "killed"
    command = [sys.executable, "-c", RESUME_CHILD, str(base), str(rows), str(out), str(SEED)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == -9 and (out / "checkpoint-3").is_dir() and not (out / "checkpoint-4").exists()

    def trainer(folder):
        args = NPOConfig(**training_args(folder, max_steps=6, save_strategy="steps", save_steps=1, learning_rate=1e-3))
        return NPOTrainer(model=AutoModelForCausalLM.from_pretrained(base), args=args, forget_dataset=forget,
                          retain_dataset=retain, processing_class=tokenizer)  # fmt: skip

    from transformers import TrainerCallback

    class Steps(TrainerCallback):
        steps: list[int] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.steps.append(state.global_step)

    resumed = trainer(out)
    resumed.add_callback(Steps())
    resumed.train(resume_from_checkpoint=True)
    assert Steps.steps == [4, 5, 6]  # it went on from the checkpoint the killed run left
    uninterrupted = trainer(tmp_path / "whole")
    uninterrupted.train()
    for (name, a), b in zip(resumed.model.state_dict().items(), uninterrupted.model.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


def test_a_folder_saved_under_the_old_salt_name_keeps_its_salt(first_save, tokenizer):
    """Folders saved before the salt was `_`-prefixed hold `unlearning_salt.txt`: it is still read, and a new request
    saved there keeps it beside the new salt, under the `_` name that no upload sends."""
    from transformers import AutoModelForCausalLM

    from hf_unlearn.manifest import LEGACY_SALT_NAME, NEVER_UPLOAD, read_salt

    folder, _, forget = first_save
    (folder / SALT_NAME).rename(folder / LEGACY_SALT_NAME)
    old_salt = read_salt(folder)
    assert old_salt and LEGACY_SALT_NAME in NEVER_UPLOAD
    args = GAConfig(**training_args(folder, max_steps=1, alpha=0, learning_rate=1e-2))
    trainer = GATrainer(model=AutoModelForCausalLM.from_pretrained(folder), args=args, forget_dataset=forget[4:],
                        processing_class=tokenizer)  # fmt: skip
    trainer.train()
    trainer.save_model()
    assert not (folder / LEGACY_SALT_NAME).exists() and consistent_request(folder, forget) == 2
    [kept] = folder.glob("_unlearning_salt.*.txt")
    assert kept.read_text().strip() == old_salt
