"""A Hugging Face hub stand-in on loopback, for ``HF_ENDPOINT=http://127.0.0.1:PORT``.

It serves what ``huggingface_hub`` (2.x) requests for ``model_info``, ``snapshot_download`` and
``hf_hub_download``, and logs every request so tests can assert exactly which files were fetched:

    GET  /api/models/{repo}[/revision/{rev}]          model info: sha, siblings
    GET  /api/models/{repo}/tree/{rev}[/{path}]       tree listing (recursive), one page
    HEAD /{repo}/resolve/{rev}/{path}                 X-Repo-Commit, ETag, Content-Length (no Xet headers)
    GET  /{repo}/resolve/{rev}/{path}                 the file

Errors carry the ``X-Error-Code`` header the real hub sends (RepoNotFound, GatedRepo, RevisionNotFound,
EntryNotFound), which is how huggingface_hub picks its exception type.

huggingface_hub reads ``HF_ENDPOINT`` and ``HF_HUB_CACHE`` once, when it is imported; a process that has
imported it already points it elsewhere with :func:`huggingface_hub_at` (subprocesses: the environment).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

TOKEN = "hf_stand_in_token"


@dataclass
class StubRepo:
    """A repository: its files (repo path -> bytes or a local file), gated or not, files listed but missing."""

    files: dict[str, bytes | Path]
    gated: bool = False
    missing: set[str] = field(default_factory=set)  # listed, but resolve answers 404

    @property
    def sha(self) -> str:
        h = hashlib.sha1()
        for name in sorted(self.files):
            h.update(name.encode() + self._digest(name).encode())
        return h.hexdigest()

    def data(self, name: str) -> bytes:
        v = self.files[name]
        return v if isinstance(v, bytes) else Path(v).read_bytes()

    def _digest(self, name: str) -> str:
        return hashlib.sha256(self.data(name)).hexdigest()


def folder_files(folder: Path, prefix: str = "") -> dict[str, Path]:
    """Every file under ``folder`` as ``{prefix + relative posix path: path}``."""
    return {prefix + p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


class HubStub:
    """``with HubStub(repos) as hub: ...``; ``hub.url``; ``hub.downloads(repo)``: files GET'd, in order."""

    def __init__(self, repos: dict[str, StubRepo]):
        self.repos = repos
        self.log: list[tuple[str, str]] = []  # (method, path)
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                stub._handle(self, "GET")

            def do_HEAD(self):
                stub._handle(self, "HEAD")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HubStub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def downloads(self, repo_id: str | None = None) -> list[str]:
        """Repository paths fetched with GET (file contents), in request order."""
        out = []
        for method, path in self.log:
            m = _RESOLVE.match(path)
            if method == "GET" and m and (repo_id is None or m.group(1) == repo_id):
                out.append(m.group(3))
        return out

    def clear(self) -> None:
        with self._lock:
            self.log.clear()

    # ------------------------------------------------------------------ request handling
    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        path = unquote(urlparse(h.path).path)
        with self._lock:
            self.log.append((method, path))
        for pattern, route in ((_INFO, self._info), (_TREE, self._tree), (_RESOLVE, self._resolve)):
            m = pattern.match(path)
            if m:
                repo = self.repos.get(m.group(1))
                if repo is None:
                    return _send(
                        h, method, 401, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"}
                    )
                rev = m.group(2) or "main"
                if rev not in ("main", repo.sha):
                    return _send(
                        h, method, 404, b'{"error": "Invalid rev id"}', {"X-Error-Code": "RevisionNotFound"}
                    )
                return route(h, method, m.group(1), repo, m.group(3))
        _send(h, method, 404, b'{"error": "not served by the stand-in"}', {})

    def _info(self, h, method, repo_id, repo: StubRepo, _rest) -> None:
        body = {
            "_id": repo.sha[:24],
            "id": repo_id,
            "modelId": repo_id,
            "sha": repo.sha,
            "private": False,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "lastModified": "2026-01-01T00:00:00.000Z",
            "createdAt": "2026-01-01T00:00:00.000Z",
            "siblings": [{"rfilename": name} for name in sorted(repo.files)],
        }
        _send(h, method, 200, json.dumps(body).encode(), {"Content-Type": "application/json"})

    def _tree(self, h, method, repo_id, repo: StubRepo, sub) -> None:
        prefix = f"{sub.strip('/')}/" if sub else ""
        entries, dirs = [], set()
        for name in sorted(repo.files):
            if not name.startswith(prefix):
                continue
            parts = name.split("/")
            dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
            data = repo.data(name)
            entries.append(
                {"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data), "path": name}
            )
        entries += [
            {"type": "directory", "oid": "0" * 40, "path": d} for d in sorted(dirs) if d.startswith(prefix)
        ]
        _send(h, method, 200, json.dumps(entries).encode(), {"Content-Type": "application/json"})

    def _resolve(self, h, method, repo_id, repo: StubRepo, name) -> None:
        commit = {"X-Repo-Commit": repo.sha}
        if repo.gated and h.headers.get("authorization") != f"Bearer {TOKEN}":
            return _send(h, method, 401, b'{"error": "gated"}', {"X-Error-Code": "GatedRepo", **commit})
        if name not in repo.files or name in repo.missing:
            return _send(
                h, method, 404, b'{"error": "Entry not found"}', {"X-Error-Code": "EntryNotFound", **commit}
            )
        data = repo.data(name)
        etag = f'"{hashlib.sha256(data).hexdigest()}"'
        _send(h, method, 200, data, {"ETag": etag, "Content-Type": "application/octet-stream", **commit})


@contextmanager
def huggingface_hub_at(url: str, cache: str | Path | None = None, offline: bool = False) -> Iterator[None]:
    """Within the block, the imported ``huggingface_hub`` talks to ``url``, caches in ``cache`` (None: as it
    was) and is offline or not, as ``HF_ENDPOINT`` / ``HF_HUB_CACHE`` / ``HF_HUB_OFFLINE`` at its import
    would have made it."""
    from huggingface_hub import constants

    values = {
        "ENDPOINT": url,
        "HUGGINGFACE_CO_URL_TEMPLATE": url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_OFFLINE": offline,
        **({"HF_HUB_CACHE": str(cache)} if cache is not None else {}),
    }
    saved = {name: getattr(constants, name) for name in values}
    for name, value in values.items():
        setattr(constants, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(constants, name, value)


_INFO = re.compile(r"^/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?()$")
_TREE = re.compile(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


def _send(h: BaseHTTPRequestHandler, method: str, status: int, body: bytes, headers: dict[str, str]) -> None:
    h.send_response(status)
    for k, v in headers.items():
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if method != "HEAD":
        h.wfile.write(body)
