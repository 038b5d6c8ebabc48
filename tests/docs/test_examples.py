"""Every ```python and ```bash block of README.md and docs/**/*.md runs as written, on the toy model (one test
per block, named ``page:line``), unless the line above its fence says ``<!-- not-tested: REASON -->``; the
rules are in ``tests/helpers/examples.py``. Also: every block is run or marked with a reason, the site builds
with ``mkdocs build --strict``, the README stays short, and the runner itself follows its rules on
``tests/docs/data/rules.md``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import examples
from tests.helpers.paths import ROOT

FIXTURE = Path(__file__).parent / "data" / "rules.md"
PAGES = examples.pages()
BLOCKS = [b for page in PAGES for b in page.blocks if b.runs or (b.lang in examples.RUN and b.marker == "")]
SLOW = ("florence2 demo", "scripts/demo.sh", "florence2 export", "export(", "--ray", "florence2 label")
README_MAX_LINES = 250


@pytest.fixture(scope="session")
def docs_server(shapes_onnx_folder, tmp_path_factory):
    """``florence2 serve`` on the toy export: what ``http://localhost:8000`` becomes."""
    proc, url = examples.start_server(shapes_onnx_folder, tmp_path_factory.mktemp("docs-server") / "log")
    yield url
    examples.stop(proc)


@pytest.fixture(scope="session")
def toy_for(request):
    """``toy_for(needs)``: the :class:`examples.Toy` with what a block needs (fixtures asked for lazily)."""

    def toy(wanted: set[str]) -> examples.Toy:
        return examples.Toy(
            onnx_folder=request.getfixturevalue("shapes_onnx_folder") if "onnx_folder" in wanted else None,
            checkpoint=request.getfixturevalue("shapes_checkpoint") if "checkpoint" in wanted else None,
            server_url=request.getfixturevalue("docs_server") if "server_url" in wanted else None,
        )

    return toy


@pytest.fixture(scope="session")
def page_runs(tmp_path_factory, toy_for):
    """One :class:`examples.PageRun` per page, made when its first block runs."""
    runs: dict[str, examples.PageRun] = {}

    def run_of(page: examples.Page) -> examples.PageRun:
        if page.path not in runs:
            folder = tmp_path_factory.mktemp("page-" + page.path.replace("/", "-").removesuffix(".md"))
            runs[page.path] = examples.PageRun(page, folder, toy_for)
        return runs[page.path]

    return run_of


def _param(block: examples.Block):
    marks = [pytest.mark.slow] if any(s in block.code for s in SLOW) else []
    return pytest.param(block, id=block.id, marks=marks)


@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS])
def test_example(block: examples.Block, page_runs):
    if block.marker == "":
        pytest.fail(f"{block.id}: <!-- not-tested --> needs its reason: <!-- not-tested: REASON -->")
    page = next(p for p in PAGES if p.path == block.page)
    code, outcome = page_runs(page).run(block)
    if not outcome.ok:
        pytest.fail(examples.shown(block, code, outcome.output), pytrace=False)


def problems(pages: list[examples.Page]) -> list[str]:
    """What breaks the rule "every block runs or says why": see ``test_every_block_runs_or_says_why``."""
    found = []
    for page in pages:
        found += [f"{page.path}:{n}: a not-tested marker above no fence" for n in page.stray_markers]
        for b in page.blocks:
            if b.marker == "":
                found.append(f"{b.id}: a not-tested marker without its reason")
            elif b.marker is not None and b.lang not in examples.RUN:
                found.append(f"{b.id}: a not-tested marker on a ```{b.lang} block, which never runs")
            if b.lang in examples.RUNNABLE_LOOKALIKES:
                found.append(f"{b.id}: ```{b.lang}: write ```bash or ```python (those run) or ```text")
            if not b.lang:
                found.append(f"{b.id}: a fence without a language (```text for output)")
    return found


def test_every_block_runs_or_says_why():
    """Each python/bash block is a test above or carries a reason; markers stand right above a fence; no
    block hides from the tests behind ```sh, ```py, ... or no language at all."""
    assert problems(PAGES) == []
    fenced = sum(1 for page in PAGES for b in page.blocks if b.lang in examples.RUN)
    assert fenced == len(BLOCKS) + sum(
        1 for p in PAGES for b in p.blocks if b.lang in examples.RUN and b.marker
    )


def test_the_site_builds_strict(tmp_path):
    """``mkdocs build --strict`` (what .ci/run runs): no warning, every generated part filled."""
    env = examples.environment() | {"NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text("utf-8")
    assert "<!-- generated" not in cli and "usage: florence2 serve" in cli
    assert (
        "FLORENCE2_MAX_BODY_MB" in (tmp_path / "site" / "reference" / "settings" / "index.html").read_text()
    )
    assert (tmp_path / "site" / "changelog" / "index.html").is_file()


def test_the_readme_is_a_front_page():
    lines = len((ROOT / "README.md").read_text("utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES})"


# --- the runner on its own fixture page: every rule once -------------------------------------------------
def test_the_reader_and_the_rewriting_follow_the_rules():
    page = examples.read_page(FIXTURE)
    by_line = {b.line: b for b in page.blocks}
    assert [b.lang for b in page.blocks] == ["python"] * 2 + ["bash"] * 5 + ["python"] + ["bash"] * 2 + [
        "text",
        "json",
        "sh",
        "bash",
    ]
    indented = next(b for b in page.blocks if "from the block above" in b.code)
    assert indented.code.startswith("# expect: pass\nimport json\n")  # its fence's indent removed
    marked = {b.code.splitlines()[0]: b.marker for b in page.blocks if b.marker is not None}
    assert marked == {"# marked": "needs an NVIDIA GPU", "# empty reason": ""}
    assert page.stray_markers and all(n not in by_line for n in page.stray_markers)
    empty = next(b for b in page.blocks if b.marker == "")
    sh = next(b for b in page.blocks if b.lang == "sh")
    assert problems([page]) == [
        f"tests/docs/data/rules.md:{page.stray_markers[0]}: a not-tested marker above no fence",
        f"{empty.id}: a not-tested marker without its reason",
        f"{sh.id}: ```sh: write ```bash or ```python (those run) or ```text",
    ]
    toy = examples.Toy(onnx_folder=Path("/toy/onnx"), checkpoint=Path("/toy/ckpt"), server_url="http://h:1")
    code = (
        'm = Florence2.from_pretrained("microsoft/Florence-2-base-ft")\n'
        "florence2 export microsoft/Florence-2-large florence-2-base-onnx\n"
        "florence2 run florence-2-base photo.jpg  # not florence-2-base-onnx nor x/florence-2-base\n"
        "curl http://localhost:8000/health\n"
    )
    assert examples.substitute(code, toy) == (
        'm = Florence2.from_pretrained("/toy/onnx")\n'
        "florence2 export /toy/ckpt florence-2-base-onnx\n"
        "florence2 run /toy/onnx photo.jpg  # not florence-2-base-onnx nor x/florence-2-base\n"
        "curl http://h:1/health\n"
    )
    assert examples.needs(code) == {"onnx_folder", "checkpoint", "server_url"}
    assert examples.needs("florence2 serve florence-2-base\ncurl http://localhost:8000/") == {"onnx_folder"}


@pytest.mark.slow
def test_the_runner_on_its_fixture_page(page_runs):
    """Each runnable block of ``rules.md`` starts with ``# expect: pass`` or ``# expect: fail``; the runner
    must agree (a failing block proves failures are caught; the server blocks prove both server rules)."""
    page = examples.read_page(FIXTURE)
    got, wanted = {}, {}
    for block in page.blocks:
        if not block.runs:
            continue
        first = block.code.splitlines()[0]
        wanted[block.id] = first.split("expect:")[1].strip()
        code, outcome = page_runs(page).run(block)
        got[block.id] = "pass" if outcome.ok else "fail"
        if got[block.id] != wanted[block.id]:
            print(examples.shown(block, code, outcome.output))
    assert got == wanted
    assert os.path.isfile(page_runs(page).folder / "answer.json")  # bash blocks share the page's folder
