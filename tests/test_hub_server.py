"""tests/hub_server.py's FakeHub answers huggingface_hub's real client: create, upload, branch, read back, failures."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from hub_server import FakeHub
from huggingface_hub import CommitOperationAdd, HfApi, constants, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError
from huggingface_hub.utils._runtime import is_xet_available

REPO = "someone/tiny-model"


@pytest.fixture
def hub(monkeypatch):
    # conftest.py sets HF_HUB_OFFLINE=1 before huggingface_hub is imported; the client reads this constant per request.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with FakeHub() as hub:
        yield hub


@pytest.fixture
def api(hub):
    return HfApi(endpoint=hub.endpoint, token="hf_fake")


@pytest.fixture
def folder(tmp_path):
    """A model folder: a text file, a file in a subfolder and ~3 MB of random bytes."""
    root = tmp_path / "model"
    (root / "sub").mkdir(parents=True)
    files = {"config.json": b'{"hidden_size": 8}\n', "sub/notes.txt": b"hi\n", "model.safetensors": os.urandom(3 << 20)}
    for path, data in files.items():
        (root / path).write_bytes(data)
    return root, files


def test_upload_folder_then_read_back(hub, api, folder, tmp_path):
    root, files = folder
    url = api.create_repo(REPO, private=True, exist_ok=True)
    assert url.repo_id == REPO and hub.repos[REPO]["private"] is True
    info = api.upload_folder(repo_id=REPO, folder_path=root, commit_message="first")

    assert len(hub.commits) == 1
    commit = hub.commits[0]
    assert (commit["repo_id"], commit["revision"], commit["message"]) == (REPO, "main", "first")
    assert commit["files"] == files and commit["deleted"] == []
    assert info.oid == commit["oid"] and hub.repos[REPO]["branches"]["main"] == files

    path = hf_hub_download(REPO, "model.safetensors", endpoint=hub.endpoint, token="hf_fake", cache_dir=tmp_path / "c")
    assert open(path, "rb").read() == files["model.safetensors"]
    assert sorted(api.list_repo_files(REPO)) == sorted(files)
    assert api.file_exists(REPO, "sub/notes.txt") and not api.file_exists(REPO, "missing.txt")
    assert api.model_info(REPO).sha == commit["oid"] and api.repo_info(REPO).private is True
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.txt", endpoint=hub.endpoint, token="hf_fake", cache_dir=tmp_path / "c")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("someone/nope")

    # Every request carried the token; re-uploading the same folder is a no-op, as on the Hub.
    assert {headers.get("authorization") for _, _, headers in hub.requests} == {"Bearer hf_fake"}
    api.upload_folder(repo_id=REPO, folder_path=root)
    assert len(hub.commits) == 1


def test_create_repo_exist_ok_false_raises_on_existing_repo(hub, api):
    api.create_repo(REPO)
    api.create_repo(REPO, exist_ok=True)
    with pytest.raises(HfHubHTTPError) as error:
        api.create_repo(REPO, exist_ok=False)
    assert error.value.response.status_code == 409


def test_upload_to_a_new_branch_lands_on_that_branch(hub, api, folder, tmp_path):
    root, files = folder
    api.create_repo(REPO)
    api.create_branch(REPO, branch="unlearned", exist_ok=True)
    api.create_branch(REPO, branch="unlearned", exist_ok=True)
    api.upload_folder(repo_id=REPO, folder_path=root, revision="unlearned")
    api.upload_file(path_or_fileobj=b"# card\n", path_in_repo="README.md", repo_id=REPO, revision="unlearned")

    assert [c["revision"] for c in hub.commits] == ["unlearned", "unlearned"]
    assert hub.repos[REPO]["branches"]["main"] == {}
    assert hub.repos[REPO]["branches"]["unlearned"] == {**files, "README.md": b"# card\n"}
    assert not api.file_exists(REPO, "config.json") and api.file_exists(REPO, "config.json", revision="unlearned")
    path = hf_hub_download(REPO, "README.md", revision="unlearned", endpoint=hub.endpoint, cache_dir=tmp_path / "c")
    assert open(path, "rb").read() == b"# card\n"


def commit_posts(hub) -> int:
    return sum(method == "POST" and "/commit/" in path for method, path, _ in hub.requests)


def test_failed_commit_raises_and_records_nothing(hub, api, folder):
    root, _ = folder
    api.create_repo(REPO)
    hub.fail_commits = True  # HTTP 500: create_commit does not retry it
    with pytest.raises(HfHubHTTPError) as error:
        api.create_commit(REPO, operations=[CommitOperationAdd("a.txt", b"a")], commit_message="m")
    assert error.value.response.status_code == 500 and hub.commits == [] and commit_posts(hub) == 1

    hub.fail_status = 403  # a status no client path retries: upload_folder fails at once too
    with pytest.raises(HfHubHTTPError) as error:
        api.upload_folder(repo_id=REPO, folder_path=root)
    assert error.value.response.status_code == 403 and hub.commits == [] and commit_posts(hub) == 2


@pytest.mark.skipif(not is_xet_available(), reason="upload_folder takes its retrying path only with hf_xet")
def test_upload_folder_retries_a_500(hub, api, folder, monkeypatch):
    root, files = folder
    api.create_repo(REPO)
    monkeypatch.setattr(time, "sleep", lambda seconds: None)  # the client's backoff: 1 + 2 + 4 + 8 + 8 s
    hub.fail_commits = True
    with pytest.raises(HfHubHTTPError) as error:
        api.upload_folder(repo_id=REPO, folder_path=root)
    assert error.value.response.status_code == 500 and hub.commits == [] and commit_posts(hub) == 1 + 5

    hub.fail_commits = "once"  # the client's own retry gets the commit through
    api.upload_folder(repo_id=REPO, folder_path=root)
    assert commit_posts(hub) == 6 + 2 and len(hub.commits) == 1 and hub.commits[0]["files"] == files


def test_hf_endpoint_env_in_a_subprocess(hub, folder, tmp_path):
    root, files = folder
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")}
    env.update(HF_ENDPOINT=hub.endpoint, HF_HUB_DISABLE_TELEMETRY="1", HF_HOME=str(tmp_path / "hf_home"))
    code = (
        "import sys; from huggingface_hub import HfApi; api = HfApi(token='hf_fake'); "
        "api.create_repo(sys.argv[1], exist_ok=True); api.upload_folder(repo_id=sys.argv[1], folder_path=sys.argv[2])"
    )
    subprocess.run([sys.executable, "-c", code, REPO, str(root)], env=env, check=True, timeout=60)
    assert len(hub.commits) == 1 and hub.commits[0]["files"] == files
