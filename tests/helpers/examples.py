"""The docs' examples as tests (``tests/docs/test_examples.py``): find the fenced blocks of a Markdown page,
rewrite them for the toy model, and run them.

The rules (``DOCS_CONVENTION`` in issue #29; ``docs/index.md`` tells writers):

- every ```python and ```bash block runs, unless the line directly above its fence is
  ``<!-- not-tested: REASON -->`` (a reason is required); other languages (text, json, console, yaml,
  toml, ...) are never run, except those in :data:`RUNNABLE_LOOKALIKES`, which are refused: write ```bash or
  ```python so the block runs; a block that installs (``pip install``, ``git clone``, ``scripts/setup.sh``,
  ``scripts/test.sh``, ``scripts/demo.sh``) fails unmarked instead of running;
- the Florence-2 model names (:data:`MODEL_NAMES`) become the toy model: its exported ONNX folder, or its
  checkpoint on a line that exports (``florence2 export``, ``export(``);
- ``http://localhost:8000`` (``localhost:8000``, ``127.0.0.1:8000``) becomes a server on the toy model;
- a bash block that starts a server (``florence2 serve``, ``florence2 mcp --http``) runs in the
  background on a free port until the port answers, then is stopped;
- python blocks of one page share one namespace; every block of a page runs in the page's own folder,
  which holds ``photo.jpg`` (a JPEG over 200 KB) and ``cat.png``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers.images import encode, make_test_image
from tests.helpers.paths import ROOT

RUN = ("python", "bash")
RUNNABLE_LOOKALIKES = ("py", "python3", "sh", "shell", "zsh", "pycon")  # refused: say python or bash
MODEL_NAMES = (  # longest first, so no name is replaced inside a longer one
    "onnx-community/Florence-2-large-ft",
    "onnx-community/Florence-2-base-ft",
    "microsoft/Florence-2-large-ft",
    "microsoft/Florence-2-base-ft",
    "microsoft/Florence-2-large",
    "microsoft/Florence-2-base",
    "florence-2-large-ft",
    "florence-2-base-ft",
    "florence-2-large",
    "florence-2-base",
)
_MODEL = re.compile(r"(?<![\w./-])(?:" + "|".join(re.escape(n) for n in MODEL_NAMES) + r")(?![\w.-])")
_LOCALHOST = re.compile(r"(?<![\w.-])(?:localhost|127\.0\.0\.1):8000(?!\d)")  # with http:// or without
_EXPORTS = re.compile(r"florence2\s+export\b|\bexport\(")
_BACKGROUND = re.compile(r"^\s*florence2\s+(?:serve\b|mcp\b.*--http\b)", re.MULTILINE)
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*?)[ \t]*$")
_MARKER = re.compile(r"^\s*<!--\s*not-tested\b\s*:?(?P<reason>.*?)-->\s*$")
_ANY_MARKER = re.compile(r"<!--\s*not-tested\b")
_INSTALLS = re.compile(r"\bpip install\b|\bgit clone\b|\bscripts/(?:setup|test|demo)\.sh\b")
BLOCK_TIMEOUT_S = 300
SERVER_START_S = 120


@dataclass(frozen=True)
class Block:
    """One fenced block: ``page`` (repository-relative), ``line`` (1-based, of the opening fence)."""

    page: str
    line: int
    lang: str
    code: str
    marker: str | None  # the not-tested marker's reason ("" when the marker gives none); None: no marker

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.lang in RUN and self.marker is None


@dataclass(frozen=True)
class Page:
    """A page's blocks, and its not-tested markers that stand above no fence (mistakes)."""

    path: str
    blocks: list[Block]
    stray_markers: list[int] = field(default_factory=list)


def read_page(path: Path, root: Path = ROOT) -> Page:
    """Every fenced block of a Markdown file, in order (fences indented in lists, tabs and admonitions too)."""
    name = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
    lines = path.read_text("utf-8").splitlines()
    blocks, used_markers, i = [], set(), 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = len(m["indent"]), m["fence"]
        lang = (m["info"].split() or [""])[0].lower().lstrip("{.").rstrip("}")
        end = i + 1
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        body = "\n".join(
            line[indent:] if line[:indent].strip() == "" else line for line in lines[i + 1 : end]
        )
        marker = None
        if i > 0 and (mm := _MARKER.match(lines[i - 1])):
            marker = mm["reason"].strip()
            used_markers.add(i - 1)
        blocks.append(Block(name, i + 1, lang, body + "\n", marker))
        i = end + 1
    stray = [n + 1 for n, line in enumerate(lines) if _ANY_MARKER.search(line) and n not in used_markers]
    return Page(name, blocks, stray)


def pages(root: Path = ROOT) -> list[Page]:
    """README.md and every page under docs/, README first."""
    return [read_page(p, root) for p in [root / "README.md", *sorted((root / "docs").rglob("*.md"))]]


# --- rewriting for the toy model ------------------------------------------------------------------------
@dataclass(frozen=True)
class Toy:
    """What the model names and the server address become; each ``None`` until a block needs it."""

    onnx_folder: Path | None = None
    checkpoint: Path | None = None
    server_url: str | None = None


def needs(code: str) -> set[str]:
    """Which parts of :class:`Toy` a block needs: ``onnx_folder``, ``checkpoint``, ``server_url``."""
    wanted = set()
    for line in code.splitlines():
        if _MODEL.search(line):
            wanted.add("checkpoint" if _EXPORTS.search(line) else "onnx_folder")
    if _LOCALHOST.search(code) and not _BACKGROUND.search(code):
        wanted.add("server_url")
    return wanted


def substitute(code: str, toy: Toy) -> str:
    """``code`` with the model names and the server address replaced (see the module's docstring)."""

    def line_of(line: str) -> str:
        target = toy.checkpoint if _EXPORTS.search(line) else toy.onnx_folder
        if target is not None:
            line = _MODEL.sub(str(target), line)
        return line

    code = "\n".join(line_of(line) for line in code.split("\n"))
    if toy.server_url is not None:
        code = _LOCALHOST.sub(toy.server_url.removeprefix("http://"), code)
    return code


# --- the page's folder and the environment ---------------------------------------------------------------
def fill_folder(folder: Path) -> None:
    """``photo.jpg`` (1600x1200, over 200 KB, like a phone's photo) and ``cat.png`` (320x240)."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = encode(make_test_image(1600, 1200, seed=1), "JPEG", quality=92)
    assert len(photo) > 200 * 1024, len(photo)
    (folder / "photo.jpg").write_bytes(photo)
    (folder / "cat.png").write_bytes(encode(make_test_image(320, 240, seed=2)))


def environment() -> dict[str, str]:
    """This interpreter's scripts first on PATH, this checkout's packages first on PYTHONPATH, the hub offline."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    paths = [str(ROOT / "runtime"), str(ROOT / "export")]
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["HF_HUB_OFFLINE"] = "1"
    env.pop("COLUMNS", None)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout_s: float) -> bool:
    """Whether something listens on ``port`` before ``proc`` exits or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.2)
    return False


def stop(proc: subprocess.Popen, timeout_s: float = 10) -> None:
    """SIGTERM to the process group (``start_new_session``), SIGKILL after ``timeout_s``."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@dataclass
class Outcome:
    ok: bool
    output: str


# curl exits 0 on an HTTP error; in the test it must not: a 4xx / 5xx answer fails the block (shown in full).
# Examples leave -f / --fail out (curl refuses it together with --fail-with-body).
STRICT_CURL = 'curl() { command curl --fail-with-body "$@"; }\n'


def run_bash(code: str, cwd: Path, timeout_s: float = BLOCK_TIMEOUT_S) -> Outcome:
    """``bash -euo pipefail``; stdin is empty (a stdio MCP server reads end-of-file and stops); ``curl``
    fails on an HTTP error status (:data:`STRICT_CURL`)."""
    proc = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", STRICT_CURL + code],
        cwd=cwd,
        env=environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop(proc)
        return Outcome(False, f"timed out after {timeout_s} s:\n{proc.communicate()[0]}")
    return Outcome(proc.returncode == 0, f"exit code {proc.returncode}\n{out}")


def run_background(code: str, cwd: Path, log: Path, timeout_s: float = SERVER_START_S) -> Outcome:
    """A block that starts a server: run it with every ``florence2 serve`` / ``mcp`` on a free port (its
    ``--port``, if any, is overridden), wait until the port answers, stop it. Passes when the port answered."""
    port = free_port()
    prelude = (
        'florence2() { case "${1:-}" in serve|mcp) command florence2 "$@" --port '
        f'{port};; *) command florence2 "$@";; esac; }}\n'
    )
    code = _LOCALHOST.sub(f"127.0.0.1:{port}", code)
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", prelude + code],
            cwd=cwd,
            env=environment(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            up = wait_for_port(port, proc, timeout_s)
        finally:
            stop(proc)
    text = log.read_text(errors="replace")
    return Outcome(up, text if up else f"no server answered on port {port} within {timeout_s} s:\n{text}")


def start_server(onnx_folder: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """``florence2 serve`` on the toy export, on a free port; returns the process and its URL."""
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["florence2", "serve", str(onnx_folder), "--port", str(port)],
            env=environment(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    if not wait_for_port(port, proc, SERVER_START_S):
        stop(proc)
        raise RuntimeError(f"florence2 serve did not start:\n{log.read_text(errors='replace')}")
    return proc, f"http://127.0.0.1:{port}"


def shown(block: Block, code: str, output: str, limit: int = 6000) -> str:
    """The failure message: where, what ran, what it said (the end of it)."""
    tail = output if len(output) <= limit else "...\n" + output[-limit:]
    return f"{block.id} ({block.lang}) failed.\n--- ran:\n{code}--- output:\n{tail}"


class PageRun:
    """A page's blocks run in order, in one folder, python blocks in one namespace (a notebook).

    ``toy(names)`` gives the :class:`Toy` for the parts a block needs (tests: session fixtures, so the toy
    is exported and served once)."""

    def __init__(self, page: Page, folder: Path, toy: Callable[[set[str]], Toy]):
        self.page, self.folder, self.toy = page, folder, toy
        self.namespace: dict[str, Any] = {"__name__": "__main__"}
        self.outcomes: dict[int, Outcome] = {}
        fill_folder(folder)

    def run(self, block: Block) -> tuple[str, Outcome]:
        """Run the page's earlier runnable blocks not run yet (their outcomes kept), then ``block``; returns
        the code as run and its outcome."""
        for earlier in self.page.blocks:
            if earlier.line >= block.line:
                break
            if earlier.runs and earlier.line not in self.outcomes:
                self._run(earlier)
        return self._run(block)

    def _run(self, block: Block) -> tuple[str, Outcome]:
        if _INSTALLS.search(block.code):  # never run: it would install packages or run the suite itself
            refused = "refused: it installs packages or runs the suite; mark it <!-- not-tested: installs packages -->"
            self.outcomes[block.line] = Outcome(False, refused)
            return block.code, self.outcomes[block.line]
        code = substitute(block.code, self.toy(needs(block.code)))
        if block.lang == "python":
            outcome = self._python(block, code)
        elif _BACKGROUND.search(code):
            outcome = run_background(code, self.folder, self.folder / f".server-{block.line}.log")
        else:
            outcome = run_bash(code, self.folder)
        self.outcomes[block.line] = outcome
        return code, outcome

    def _python(self, block: Block, code: str) -> Outcome:
        before = Path.cwd()
        os.chdir(self.folder)
        try:
            exec(compile(code, block.id, "exec"), self.namespace)
        except SystemExit as e:
            return Outcome(e.code in (None, 0), f"SystemExit({e.code!r})")
        except Exception:
            return Outcome(False, traceback.format_exc())
        finally:
            os.chdir(before)
        return Outcome(True, "")
