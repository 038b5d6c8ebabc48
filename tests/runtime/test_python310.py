"""The runtime stays importable on Python 3.10 (JetPack 6): its sources parse with the 3.10 grammar."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import florence2_runtime

SOURCES = sorted(Path(florence2_runtime.__file__).parent.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_parses_as_python_310(path):
    ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 10))


def test_no_311_only_modules():
    banned = {"tomllib"}  # standard-library modules that 3.10 lacks
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            assert not {n.split(".")[0] for n in names} & banned, f"{path}: {names}"
