"""A push that fails on the way (HTTP 500, HTTP 403, a dropped connection, a refused one) leaves nothing behind: no
repo it created, no commit, the local folder byte for byte; one PushError (from the CLI, one `hf-unlearn: error:`
line) says what to re-run and never shows the token. NaN and inf metrics never reach the model-index: the card lists
them as missing."""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import Future
from pathlib import Path

import pytest
import yaml
from hub_server import DROP
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from test_model_card import manifest as card_manifest
from test_push import REPO, local_files, make_trainer, uploadable

from hf_unlearn.hub import PushError, eval_result_entries, push_folder, render_model_card, write_card_files
from hf_unlearn.synthetic import build_tiny_causal_lm

TOKEN = "hf_pushFaultsNeverPrintMe0123456789abcd"  # shaped like a real token, so a leak cannot hide
FAILURES = [500, 403, DROP]
REASON = {500: "500", 403: "403", DROP: "disconnected"}  # what the message says went wrong


@pytest.fixture(scope="module")
def trained(tokenizer, qa_data, tmp_path_factory):
    """One unlearned model's folder, trained once for the module."""
    out = tmp_path_factory.mktemp("faults") / "out"
    model = lambda: build_tiny_causal_lm(tokenizer, hidden_size=64, num_layers=2, num_heads=2, seed=0)  # noqa: E731
    trainer = make_trainer(model, tokenizer, qa_data, out)
    trainer.train()
    trainer.save_model()
    return out


@pytest.fixture
def output_dir(trained, tmp_path):
    return Path(shutil.copytree(trained, tmp_path / "out"))


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    """The client retries a 500 and a dropped connection 5 times with 1+2+4+8+8 s of backoff: skip the waits."""
    monkeypatch.setattr(time, "sleep", lambda seconds: None)


def commit_posts(hub) -> int:
    return sum(method == "POST" and "/commit/" in path for method, path, _ in hub.requests)


def deletes(hub) -> list[str]:
    return [path for method, path, _ in hub.requests if method == "DELETE"]


def assert_says_what_to_rerun(message: str, output_dir: Path, failure) -> None:
    assert "\n" not in message and TOKEN not in message
    assert f"Pushing {output_dir} to {REPO} failed while uploading (" in message and REASON[failure] in message
    assert f"The local folder {output_dir} is intact; re-run `hf-unlearn push {output_dir} {REPO}`." in message


def test_fake_hub_deletes_a_repo_as_the_client_asks(hub):
    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    api.create_repo(REPO)
    with pytest.raises(HfHubHTTPError) as error:
        HfApi(endpoint=hub.endpoint, token=False).delete_repo(REPO)  # anonymous
    assert error.value.response.status_code == 401 and REPO in hub.repos
    api.delete_repo(REPO)
    assert hub.repos == {} and not api.repo_exists(REPO)
    with pytest.raises(RepositoryNotFoundError):
        api.delete_repo(REPO)
    api.delete_repo(REPO, missing_ok=True)
    api.create_repo(REPO)  # the name is free again
    assert hub.repos[REPO]["branches"] == {"main": {}}


@pytest.mark.parametrize("failure", FAILURES)
def test_failed_first_push_leaves_no_repo_and_says_what_to_rerun(hub, output_dir, failure, capsys, caplog):
    before = local_files(output_dir)
    hub.fail_commits, hub.fail_status = True, failure
    with caplog.at_level(logging.DEBUG), pytest.raises(PushError) as error:
        push_folder(output_dir, REPO, token=TOKEN)
    message = str(error.value)
    assert_says_what_to_rerun(message, output_dir, failure)
    assert message.endswith(f" {REPO}, which this push created, was deleted again.")
    assert commit_posts(hub) >= 1 and deletes(hub) == ["/api/repos/delete"]  # the commit was tried, then undone
    assert REPO not in hub.repos and hub.commits == []  # no repo, so no partial file either
    assert local_files(output_dir) == before
    assert any(h.get("authorization") == f"Bearer {TOKEN}" for _, _, h in hub.requests)  # sent, never shown
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err + caplog.text
    hub.fail_commits = False  # the re-run it names works
    push_folder(output_dir, REPO, token=TOKEN)
    assert len(hub.commits) == 1 and hub.commits[0]["files"] == uploadable(output_dir)


@pytest.mark.parametrize("failure", FAILURES)
def test_cli_failed_push_ends_in_one_error_line(hub, output_dir, failure, tmp_path):
    before = local_files(output_dir)
    hub.fail_commits, hub.fail_status = True, failure
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")}
    env.update(HF_ENDPOINT=hub.endpoint, HF_HUB_DISABLE_TELEMETRY="1", HF_HOME=str(tmp_path / "hf_home"))
    # `python -m hf_unlearn.cli`, without the client's backoff waits
    main = "import runpy, time; time.sleep = lambda s: None; runpy.run_module('hf_unlearn.cli', run_name='__main__')"
    command = [sys.executable, "-c", main, "push", str(output_dir), REPO, "--token", TOKEN]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    *notes, last = done.stderr.splitlines()
    assert last.startswith("hf-unlearn: error: ") and "Traceback" not in done.stderr, done.stderr
    assert TOKEN not in done.stdout + done.stderr
    assert_says_what_to_rerun(last, output_dir, failure)
    assert notes == [], done.stderr  # the client's retry notes are silenced: one line says the outcome
    assert commit_posts(hub) >= 1 and REPO not in hub.repos and hub.commits == []
    assert local_files(output_dir) == before


@pytest.mark.parametrize("failure", FAILURES)
def test_failed_push_keeps_a_repo_that_existed(hub, output_dir, failure):
    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    api.create_repo(REPO)
    api.upload_file(path_or_fileobj=b"kept\n", path_in_repo="notes.txt", repo_id=REPO)
    kept = {name: dict(tree) for name, tree in hub.repos[REPO]["branches"].items()}
    hub.fail_commits, hub.fail_status = True, failure
    with pytest.raises(PushError) as error:
        push_folder(output_dir, REPO, token=TOKEN)
    assert_says_what_to_rerun(str(error.value), output_dir, failure)
    assert "deleted" not in str(error.value) and deletes(hub) == []
    assert hub.repos[REPO]["branches"] == kept and len(hub.commits) == 1  # only notes.txt's commit


@pytest.mark.parametrize("failure", [403, DROP])
def test_future_raises_push_error_and_leaves_no_repo(hub, output_dir, failure):
    before = local_files(output_dir)
    hub.fail_commits, hub.fail_status = True, failure
    future = push_folder(output_dir, REPO, token=TOKEN, run_as_future=True)
    assert isinstance(future, Future)
    with pytest.raises(PushError) as error:
        future.result(timeout=60)
    assert_says_what_to_rerun(str(error.value), output_dir, failure)
    assert REPO not in hub.repos and hub.commits == [] and local_files(output_dir) == before
    hub.fail_commits = False  # success: the client's CommitInfo, unchanged
    info = push_folder(output_dir, REPO, token=TOKEN, run_as_future=True).result(timeout=60)
    assert info.oid == hub.commits[0]["oid"] and info.commit_url.endswith(f"/{REPO}/commit/{info.oid}")


def test_refused_connection_is_a_push_error(output_dir, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(PushError) as error:
        push_folder(output_dir, REPO, token=TOKEN, endpoint=f"http://127.0.0.1:{port}")
    message = str(error.value)
    assert message.startswith(f"Pushing {output_dir} to {REPO} failed while preparing the repo (")
    assert f"re-run `hf-unlearn push {output_dir} {REPO}`" in message and TOKEN not in message


def test_non_finite_metrics_are_missing_not_results(tmp_path):
    metrics = {"unlearned": {"forget_quality": math.nan, "model_utility": 0.66, "privleak": math.inf,
                             "forget_truth_ratio": -math.inf, "mia_min_k_auc": 0.52},
               "original": {"forget_quality": 0.001, "model_utility": math.inf}}  # fmt: skip
    manifest = card_manifest(metrics=metrics, dataset={"id": "locuslab/TOFU", "split": "forget10", "public": True},
                             metrics_missing={"unlearned": {"rouge": "no generations"}})  # fmt: skip
    card = str(render_model_card(manifest))
    data = ModelCard(card).data
    assert {r.metric_type: r.metric_value for r in data.eval_results} == {"model_utility": 0.66, "mia_min_k_auc": 0.52}
    front = card.split("---")[1].lower()
    assert "nan" not in front and "inf" not in front
    assert [e.task_id for e in eval_result_entries(manifest)] == ["forget10_model_utility", "forget10_mia_min_k_auc"]
    assert "- `rouge` of the unlearned model: no generations." in card
    assert "- `forget_quality` of the unlearned model: not a finite number (nan)." in card
    assert "- `privleak` of the unlearned model: not a finite number (inf)." in card
    assert "- `forget_truth_ratio` of the unlearned model: not a finite number (-inf)." in card
    assert "- `model_utility` of the original model: not a finite number (inf)." in card
    assert "| model_utility | n/a | 0.66 |" in card and "| forget_quality | 0.001 | n/a |" in card
    write_card_files(tmp_path, manifest)
    written = yaml.safe_load((tmp_path / ".eval_results" / "hf-unlearn.yaml").read_text())
    assert "nan" not in str(written).lower() and "inf" not in str(written).lower() and len(written) == 2
