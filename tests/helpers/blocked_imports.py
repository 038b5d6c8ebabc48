"""Make packages unimportable in this process: ``import torch`` raises ``ImportError``.

``tests/conftest.py`` installs it for the whole pytest process when ``FLORENCE2_TESTS_BLOCK_TORCH=1``
(``scripts/test.sh`` runs ``tests/runtime`` that way); subprocess tests put :func:`source` at the top of
their ``python -c`` script. A finder first on ``sys.meta_path`` refuses the names before any other finder
looks, so an installed torch cannot be reached, not even by a lazy import deep inside a dependency.
"""

from __future__ import annotations

import importlib.abc
import sys

ENV = "FLORENCE2_TESTS_BLOCK_TORCH"
TORCH = ("torch", "torchvision", "transformers", "optimum")  # what the runtime must never need


class BlockedImports(importlib.abc.MetaPathFinder):
    """Refuses ``names`` and their submodules."""

    def __init__(self, names: tuple[str, ...]):
        self.names = frozenset(names)

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.names:
            raise ImportError(f"{name} is blocked in this test process ({ENV})", name=name)
        return None


def install(names: tuple[str, ...] = TORCH) -> BlockedImports:
    """Block ``names`` from now on; refuses if one of them is already imported (too late to block)."""
    loaded = sorted(m for m in sys.modules if m.partition(".")[0] in names)
    if loaded:
        raise RuntimeError(f"cannot block imports that already happened: {', '.join(loaded[:5])}")
    finder = BlockedImports(names)
    sys.meta_path.insert(0, finder)
    return finder


def source(names: tuple[str, ...] = TORCH) -> str:
    """The same finder as Python source, for the first lines of a ``python -c`` script."""
    return (
        "import importlib.abc, sys\n"
        "class _Blocked(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.partition('.')[0] in {tuple(names)!r}:\n"
        "            raise ImportError(name + ' is blocked in this test process', name=name)\n"
        "sys.meta_path.insert(0, _Blocked())\n"
    )
