"""A small in-memory, Hub-compatible HTTP server for tests (stdlib only).

It answers the endpoints huggingface_hub's real client (2.x) calls for model repos, shaped the way the client parses
them: create_repo, delete_repo, create_branch, upload_folder / upload_file / create_commit, repo_info / model_info,
list_repo_files / list_repo_tree, file_exists and hf_hub_download. Point a client at it with
`HfApi(endpoint=hub.endpoint)` or with `HF_ENDPOINT=hub.endpoint` in a subprocess (and HF_HUB_OFFLINE unset).

Every file is declared "regular" at preupload, so the client sends the contents base64-encoded inside the commit's
NDJSON body: no LFS batch API, no Xet storage, whatever the file's size and whether or not hf_xet is installed.
Not the real Hub: no `.gitattributes` initial file, no tags, PRs, LFS pointers or README metadata parsing; any
Authorization header counts as authenticated.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

# Raw (still URL-quoted) paths. The client quotes revisions and tree paths with safe="" ("a/b" -> "a%2Fb") but leaves
# the repo id's "/" and a resolved filename's "/" as is, so route on the raw path and unquote the captured groups.
API_ROUTE = re.compile(
    r"^/api/models/(?P<repo>.+?)/(?P<op>preupload|commit|branch|revision|tree)/(?P<rev>[^/]+)/?(?P<path>.*)$"
)
INFO_ROUTE = re.compile(r"^/api/models/(?P<repo>[^/]+(?:/[^/]+)?)$")
RESOLVE_ROUTE = re.compile(r"^/(?P<repo>.+?)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


def git_blob_sha1(data: bytes) -> str:
    """The oid the Hub (and the client's no-op detection) uses for a regular file: git's blob hash."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubError(Exception):
    """An error answer: the client maps `X-Error-Code` to its exceptions (see utils/_http.py hf_raise_for_status)."""

    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None, **body):
        super().__init__(message)
        self.status, self.message, self.code, self.commit, self.body = status, message, code, commit, body


DROP = "drop"  # FakeHub.fail_status that answers nothing: the connection is closed, as by a crashed proxy


class DropConnection(Exception):
    """Raised by an endpoint to close the connection without sending a response."""


class FakeHub:
    """`with FakeHub() as hub:` serves on `hub.endpoint`; inspect `hub.repos`, `hub.commits`, `hub.requests`.

    - repos: repo_id -> {"private": bool, "branches": {name: {path: bytes}}, "heads": {name: commit oid}}
    - commits: one dict per successful commit: repo_id, revision, message, files {path: bytes}, deleted [paths], oid
    - requests: (method, raw path incl. query, headers with lower-cased names) for every request received
    - fail_commits: True fails every commit with HTTP `fail_status` and a JSON error; "once" fails the next one only.
      With the default 500 (as the Hub answers on an internal error) note that upload_folder, when hf_xet is installed,
      retries 408/429/5xx commits itself with backoff (1+2+4+8+8 s): set fail_status to e.g. 403 for a failure the
      client raises at once, or patch time.sleep in-process. fail_status = DROP closes the connection without an
      answer instead (the client sees a RemoteProtocolError, which it retries with the same backoff).
    """

    def __init__(self, username: str = "user"):
        self.username = username  # namespace of create_repo("name") without "org/"
        self.repos: dict[str, dict] = {}
        self.commits: list[dict] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.fail_commits: bool | str = False
        self.fail_status: int | str = 500
        self._snapshots: dict[str, tuple[dict, dict[str, bytes]]] = {}  # commit oid -> (repo, tree): revision=<sha>
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    # ------------------------------------------------------------------ state helpers (called under self._lock)

    def _new_commit(self, repo: dict, branch: str, tree: dict[str, bytes]) -> str:
        oid = secrets.token_hex(20)  # 40 hex chars, as the client checks for a commit hash
        repo["branches"][branch], repo["heads"][branch] = tree, oid
        self._snapshots[oid] = (repo, dict(tree))
        return oid

    def _repo(self, repo_id: str, authorized: bool) -> dict:
        repo = self.repos.get(repo_id)
        if repo is None or (repo["private"] and not authorized):
            # The Hub answers 401 to anonymous callers and 404 otherwise; both carry RepoNotFound.
            raise HubError(404 if authorized else 401, "Repository not found", "RepoNotFound")
        return repo

    def _tree(self, repo: dict, rev: str) -> tuple[dict[str, bytes], str]:
        """(files, commit oid) of a branch name or a commit oid."""
        if rev in repo["branches"]:
            return repo["branches"][rev], repo["heads"][rev]
        owner, tree = self._snapshots.get(rev, (None, {}))
        if owner is not repo:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return tree, rev

    # ------------------------------------------------------------------ endpoints: (status, JSON or bytes[, headers])

    def create_repo(self, body: dict):
        if body.get("type", "model") != "model":
            raise HubError(400, "FakeHub only serves model repos")
        repo_id = f"{body.get('organization') or self.username}/{body['name']}"
        if repo_id in self.repos:  # create_repo(exist_ok=True) swallows this 409, then reads its "url"
            raise HubError(409, "You already created this model repo", url=f"{self.endpoint}/{repo_id}")
        repo = self.repos[repo_id] = {"private": body.get("visibility") == "private", "branches": {}, "heads": {}}
        self._new_commit(repo, "main", {})  # the Hub's "initial commit" (without its .gitattributes)
        return 200, {"url": f"{self.endpoint}/{repo_id}", "name": repo_id, "id": repo_id}

    def delete_repo(self, body: dict):
        repo_id = f"{body.get('organization') or self.username}/{body['name']}"
        repo = self._repo(repo_id, authorized=True)
        del self.repos[repo_id]
        self._snapshots = {oid: snapshot for oid, snapshot in self._snapshots.items() if snapshot[0] is not repo}
        return 200, {}

    def create_branch(self, repo: dict, branch: str, body: dict):
        if branch in repo["branches"]:
            raise HubError(409, "Reference already exists")
        tree, oid = self._tree(repo, body.get("startingPoint", "main"))
        repo["branches"][branch], repo["heads"][branch] = dict(tree), oid
        return 200, {}

    def preupload(self, repo: dict, rev: str, body: dict):
        tree, _ = self._tree(repo, rev)
        # "regular" for every file => contents go inline in the commit (no LFS/Xet). The oid of an existing file lets
        # the client drop unchanged files from the commit, as against the real Hub.
        oids = {path: git_blob_sha1(data) for path, data in tree.items()}
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": oids.get(f["path"])}
                 for f in body["files"]]  # fmt: skip
        return 200, {"files": files}

    def commit(self, repo_id: str, repo: dict, rev: str, raw: bytes):
        if self.fail_commits:
            self.fail_commits = False if self.fail_commits == "once" else self.fail_commits
            if self.fail_status == DROP:
                raise DropConnection
            raise HubError(self.fail_status, "Injected commit failure (FakeHub.fail_commits)")
        tree, head = self._tree(repo, rev)
        if rev not in repo["branches"]:
            raise HubError(400, "Commits go to a branch")
        # NDJSON body: a "header" line (summary, description, parentCommit), then one line per operation.
        lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        if header.get("parentCommit") not in (None, head):  # the Hub's optimistic-concurrency check
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        new_tree, files, deleted = dict(tree), {}, []
        for op in (line for line in lines if line["key"] != "header"):
            key, path = op["key"], op["value"]["path"]
            if key == "file":
                files[path] = new_tree[path] = base64.b64decode(op["value"]["content"])
            elif key in ("deletedFile", "deletedFolder"):
                prefix = path.rstrip("/") + "/"
                gone = [p for p in new_tree if p == path or (key == "deletedFolder" and p.startswith(prefix))]
                if not gone:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                for p in gone:
                    del new_tree[p]
                    deleted.append(p)
            else:  # lfsFile: only sent when preupload answers "lfs", which this server never does
                raise HubError(400, f"FakeHub does not support commit operation {key!r}")
        oid = self._new_commit(repo, rev, new_tree)
        self.commits.append({"repo_id": repo_id, "revision": rev, "message": header["summary"],
                             "description": header.get("description", ""), "files": files, "deleted": deleted,
                             "oid": oid})  # fmt: skip
        return 200, {"success": True, "commitOid": oid, "commitUrl": f"{self.endpoint}/{repo_id}/commit/{oid}",
                     "pullRequestUrl": None}  # fmt: skip

    def info(self, repo_id: str, repo: dict, rev: str):
        tree, oid = self._tree(repo, rev)
        now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        return 200, {"id": repo_id, "modelId": repo_id, "author": repo_id.split("/")[0], "sha": oid,
                     "private": repo["private"], "disabled": False, "gated": False, "downloads": 0, "likes": 0,
                     "tags": [], "lastModified": now, "createdAt": now,
                     "siblings": [{"rfilename": p} for p in sorted(tree)]}  # fmt: skip

    def tree(self, repo: dict, rev: str, folder: str, recursive: bool):
        files, _ = self._tree(repo, rev)
        prefix = f"{folder.strip('/')}/" if folder else ""
        entries: dict[str, dict] = {}
        for path in sorted(p for p in files if p.startswith(prefix)):
            parts = path[len(prefix) :].split("/")
            # Its folders are listed too, as the Hub does: all of them when recursive, else only the top one.
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                sub = prefix + "/".join(parts[:depth])
                entries.setdefault(sub, {"type": "directory", "path": sub, "oid": git_blob_sha1(sub.encode())})
            if recursive or len(parts) == 1:
                data = files[path]
                entries[path] = {"type": "file", "path": path, "size": len(data), "oid": git_blob_sha1(data)}
        if folder and not entries:
            raise HubError(404, f"{folder} does not exist", "EntryNotFound")
        return 200, list(entries.values())

    def resolve(self, repo: dict, rev: str, path: str):
        files, oid = self._tree(repo, rev)
        if path not in files:
            raise HubError(404, "Entry not found", "EntryNotFound", commit=oid)
        data = files[path]
        # hf_hub_download's HEAD needs X-Repo-Commit and an ETag (git blob sha1 for regular files) besides the size.
        headers = {"X-Repo-Commit": oid, "ETag": f'"{git_blob_sha1(data)}"', "Content-Type": "application/octet-stream"}
        return 200, data, headers


def _make_handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format, *args):  # quiet
            pass

        def _handle(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            url = urlsplit(self.path)
            authorized = bool(self.headers.get("Authorization"))
            extra: dict[str, str] = {}
            with hub._lock:
                hub.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                try:
                    status, payload, *rest = self._route(url.path, parse_qs(url.query), raw, authorized)
                    extra = rest[0] if rest else {}
                except HubError as e:
                    status, payload = e.status, {"error": e.message, **e.body}
                    extra = {"X-Error-Message": e.message, **({"X-Error-Code": e.code} if e.code else {}),
                             **({"X-Repo-Commit": e.commit} if e.commit else {})}  # fmt: skip
                except DropConnection:
                    self.close_connection = True  # no status line, no headers: the socket just closes
                    return
            body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **extra}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = do_POST = do_DELETE = _handle

        def _route(self, path: str, query: dict, raw: bytes, authorized: bool):
            method = self.command
            if method in ("POST", "DELETE") and not authorized:  # every write needs a token (any token, here)
                raise HubError(401, "Invalid username or password.")
            if method == "POST" and path == "/api/repos/create":
                return hub.create_repo(json.loads(raw))
            if method == "DELETE" and path == "/api/repos/delete":
                return hub.delete_repo(json.loads(raw))
            if method == "POST" and path == "/api/validate-yaml":  # create_commit checks a README.md's metadata
                return 200, {"errors": [], "warnings": []}
            if method == "GET" and path == "/api/whoami-v2":
                return 200, {"type": "user", "name": hub.username, "auth": {"type": "access_token"}}
            if m := API_ROUTE.match(path):
                repo_id, op, rev = unquote(m["repo"]), m["op"], unquote(m["rev"])
                repo = hub._repo(repo_id, authorized)
                if (method, op) == ("POST", "branch"):
                    return hub.create_branch(repo, rev, json.loads(raw or b"{}"))
                if (method, op) == ("POST", "preupload"):
                    return hub.preupload(repo, rev, json.loads(raw))
                if (method, op) == ("POST", "commit"):
                    return hub.commit(repo_id, repo, rev, raw)
                if (method, op) == ("GET", "revision"):
                    return hub.info(repo_id, repo, rev)
                if (method, op) == ("GET", "tree"):
                    recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
                    return hub.tree(repo, rev, unquote(m["path"] or ""), recursive)
            if method == "GET" and (m := INFO_ROUTE.match(path)):
                repo_id = unquote(m["repo"])
                return hub.info(repo_id, hub._repo(repo_id, authorized), "main")
            if method in ("GET", "HEAD") and (m := RESOLVE_ROUTE.match(path)):
                repo = hub._repo(unquote(m["repo"]), authorized)
                return hub.resolve(repo, unquote(m["rev"]), unquote(m["path"]))
            raise HubError(404, f"FakeHub has no route for {method} {path}")

    return Handler
