"""Pushes run huggingface_hub's real client against a Hub-compatible server on loopback (tests/hub_server.py): one
commit, never the salt or checkpoints, a refusal over another base model's card, a failure that keeps the folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import training_args
from huggingface_hub import HfApi, ModelCard, ModelCardData

from hf_unlearn import GATrainer, UnlearningConfig
from hf_unlearn.hub import PushError, push_folder, verify
from hf_unlearn.manifest import SALT_NAME

REPO = "someone/tiny-unlearned"
TOKEN = "hf_secretTOKEN123"


def make_trainer(make_model, tokenizer, qa_data, out, **kwargs):
    forget, _ = qa_data
    args = UnlearningConfig(**training_args(out, max_steps=1, alpha=0, **kwargs))
    return GATrainer(model=make_model(), args=args, forget_dataset=forget, processing_class=tokenizer)


@pytest.fixture
def output_dir(make_model, tokenizer, qa_data, tmp_path):
    """An unlearned model's folder, with a checkpoint in it (which a push must leave out)."""
    out = tmp_path / "out"
    trainer = make_trainer(make_model, tokenizer, qa_data, out, save_strategy="steps", save_steps=1)
    trainer.train()
    trainer.save_model()
    assert (out / SALT_NAME).is_file() and list(out.glob("checkpoint-*"))
    return out


def local_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def uploadable(folder: Path) -> dict[str, bytes]:
    return {k: v for k, v in local_files(folder).items() if k != SALT_NAME and not k.startswith("checkpoint-")}


def test_cli_push_is_one_commit_without_salt_or_checkpoints(hub, output_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")}
    env.update(HF_ENDPOINT=hub.endpoint, HF_HUB_DISABLE_TELEMETRY="1", HF_HOME=str(tmp_path / "hf_home"))
    command = [sys.executable, "-m", "hf_unlearn.cli", "push", str(output_dir), REPO, "--private", "--token", TOKEN]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(hub.commits) == 1
    received = hub.commits[0]["files"]
    assert received == uploadable(output_dir)  # every byte, nothing more
    assert {"README.md", "unlearning_manifest.json", "model.safetensors", "plots/loss_curves.png"} <= set(received)
    assert hub.repos[REPO]["private"] is True
    assert any(h.get("authorization") == f"Bearer {TOKEN}" for _, _, h in hub.requests)
    assert TOKEN not in done.stdout + done.stderr  # the token is sent, never printed
    assert f"pushed {output_dir} to {REPO}: " in done.stdout


def test_refuses_a_repo_whose_card_names_another_base_model(hub, output_dir, tmp_path):
    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    api.create_repo(REPO)
    other = ModelCard.from_template(ModelCardData(base_model="org/other-model"), template_str="---\n{{card_data}}\n---")
    api.upload_file(path_or_fileobj=str(other).encode(), path_in_repo="README.md", repo_id=REPO)
    with pytest.raises(PushError, match=r"base model 'org/other-model'.*--overwrite"):
        push_folder(output_dir, REPO, token=TOKEN)
    assert len(hub.commits) == 1  # only the card uploaded above
    push_folder(output_dir, REPO, token=TOKEN, overwrite=True)
    assert len(hub.commits) == 2 and hub.commits[1]["files"] == uploadable(output_dir)


def test_failed_upload_leaves_the_folder_and_says_what_to_rerun(hub, output_dir):
    before = local_files(output_dir)
    hub.fail_commits, hub.fail_status = True, 403
    with pytest.raises(PushError) as error:
        push_folder(output_dir, REPO, token=TOKEN, revision="v1")
    message = str(error.value)
    assert f"re-run `hf-unlearn push {output_dir} {REPO} --revision v1`" in message and TOKEN not in message
    assert hub.commits == [] and local_files(output_dir) == before
    hub.fail_commits = False  # the re-run it names works
    push_folder(output_dir, REPO, token=TOKEN, revision="v1")
    assert hub.commits[0]["revision"] == "v1" and hub.commits[0]["files"] == uploadable(output_dir)


def test_trainer_push_to_hub_and_verify_against_the_repo(hub, make_model, tokenizer, qa_data, tmp_path):
    out = tmp_path / "run"
    trainer = make_trainer(make_model, tokenizer, qa_data, out, push_to_hub=True, hub_model_id=REPO,
                           hub_token=TOKEN, forget_description="Two people, at their request.")  # fmt: skip
    trainer.train()
    trainer.push_to_hub(license="mit", tags=["privacy"])
    assert len(hub.commits) == 1
    received = hub.commits[0]["files"]
    assert SALT_NAME not in received and received == uploadable(out)
    card = ModelCard(received["README.md"].decode())
    assert card.data.license == "mit" and "privacy" in card.data.tags and card.data.model_name == "tiny-unlearned"
    assert json.loads(received["unlearning_manifest.json"])["requests"][0]["description"].startswith("Two people")
    # the requester verifies against the Hub repo with their rows and the salt
    forget, _ = qa_data
    rows = tmp_path / "mine.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in forget))
    manifest, request = verify(REPO, rows, out / SALT_NAME)
    assert request is not None and request["request"] == 1
