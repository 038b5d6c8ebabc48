"""The mkdocs hook that fills the generated parts of the docs from the code, so they cannot drift from it.

- ``<!-- generated: settings-table -->`` on its own line: the server's settings table
  (``florence2_runtime.server.settings.settings_table`` over ``ServerLimits`` and ``RaySettings``).
- ``<!-- generated: cli-help florence2 <sub> -->`` on its own line: ``florence2 <sub> --help``, from the
  argparse parser itself (``florence2_runtime.cli.build_parser``), in a ``text`` block.
- ``changelog.md``: the repository's ``CHANGELOG.md``, added to the site's files at build time (there is no
  ``docs/changelog.md`` to hand-edit).

An unknown placeholder or sub-command fails the build. The repository's ``runtime/`` goes on ``sys.path``
so that ``mkdocs build`` needs no ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
HELP_WIDTH = "100"  # argparse wraps help text to $COLUMNS: fixed, so the pages do not depend on the terminal
PLACEHOLDER = re.compile(r"^<!--\s*generated:\s*(?P<what>.*?)\s*-->[ \t]*$", re.MULTILINE)

if str(ROOT / "runtime") not in sys.path:
    sys.path.insert(0, str(ROOT / "runtime"))


def settings_table() -> str:
    """The server's settings (``florence2 serve`` flags, ``FLORENCE2_*`` variables, defaults) as Markdown."""
    from florence2_runtime.server.ray_app import RaySettings
    from florence2_runtime.server.settings import ServerLimits, settings_table

    return settings_table(ServerLimits, RaySettings)


def cli_help(command: str) -> str:
    """``florence2 <sub> --help`` (``command`` is ``"florence2 <sub>"`` or ``"florence2"``) in a text block."""
    import argparse

    from florence2_runtime.cli import build_parser

    words = command.split()
    if not words or words[0] != "florence2" or len(words) > 2:
        raise ValueError(f"cli-help takes 'florence2' or 'florence2 <sub-command>', got {command!r}")
    parser = build_parser()
    if len(words) == 2:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        if words[1] not in sub.choices:
            raise ValueError(f"no sub-command {words[1]!r}; there are: {', '.join(sub.choices)}")
        parser = sub.choices[words[1]]
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH
    try:
        text = parser.format_help()
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before
    return f"```text\n{text.rstrip()}\n```"


def expand(markdown: str, where: str = "<page>") -> str:
    """``markdown`` with every ``<!-- generated: ... -->`` line replaced by what it names."""

    def replace(m: re.Match) -> str:
        what = m["what"]
        if what == "settings-table":
            return settings_table().rstrip("\n")
        if what.startswith("cli-help "):
            return cli_help(what.removeprefix("cli-help ").strip())
        raise ValueError(f"{where}: unknown placeholder '<!-- generated: {what} -->'")

    return PLACEHOLDER.sub(replace, markdown)


# --- mkdocs events ----------------------------------------------------------------------------------------
def on_files(files, config):
    """Add ``changelog.md`` (CHANGELOG.md's text) to the site's files."""
    from mkdocs.structure.files import File

    if files.get_file_from_path("changelog.md") is not None:
        raise ValueError("docs/changelog.md is generated from CHANGELOG.md: delete the hand-written copy")
    files.append(File.generated(config, "changelog.md", content=(ROOT / "CHANGELOG.md").read_text("utf-8")))
    return files


def on_page_markdown(markdown, page, config, files):
    return expand(markdown, page.file.src_uri)
