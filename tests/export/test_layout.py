"""The layout of ``florence2_export``: no import circles, and its parts import one way, down a layer order.

Every ``import`` of a ``florence2_export`` module is collected from the source with ``ast`` (top-level,
``TYPE_CHECKING`` blocks and function-local imports alike), so a circle cannot hide behind a lazy import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers.paths import ROOT as REPOSITORY

PACKAGE = "florence2_export"
ROOT = REPOSITORY / "export" / PACKAGE

# The parts of the package (a subpackage, or a module at the top), lowest first: a part may import only
# parts to its left. "__init__" is the package's own __init__.py (the public names).
LAYERS = (
    "progress",
    "graphs",
    "checkpoints",
    "verify",
    "precision",
    "layouts",
    "pipeline",
    "toy",
    "__init__",
)


def _module_name(path: Path) -> str:
    parts = (PACKAGE, *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The ``florence2_export`` modules that module ``name`` (file ``path``) imports anywhere in its code."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # ``from pkg import sub`` imports the submodule ``pkg.sub`` when there is one, else a name of ``pkg``
            subs = [f"{module}.{alias.name}" for alias in node.names]
            targets = subs if all(t in known for t in subs) else [module, *subs]
        else:
            continue
        out |= {t for t in targets if t in known}
    out.discard(name)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` as a path ``[a, b, ..., a]``, or None when it has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def part_of(module: str) -> str:
    """The layer part a module belongs to: ``florence2_export.graphs.vision`` -> ``graphs``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_the_import_collector_sees_every_kind_of_import():
    graph = import_graph()
    # a function-local import (checkpoints.adapters imports .original_adapter inside a function)
    assert f"{PACKAGE}.checkpoints.original_adapter" in graph[f"{PACKAGE}.checkpoints.adapters"]
    assert f"{PACKAGE}.layouts.native" in graph[f"{PACKAGE}.pipeline"]
    assert f"{PACKAGE}.pipeline" in graph[PACKAGE]  # relative import from a package __init__


def test_find_cycle_reports_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circles_between_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_every_part_has_a_layer():
    parts = {part_of(m) for m in import_graph()}
    assert parts <= set(LAYERS), f"parts missing from LAYERS: {sorted(parts - set(LAYERS))}"


def test_parts_import_only_lower_layers():
    rank = {part: i for i, part in enumerate(LAYERS)}
    wrong = sorted(
        f"{a} ({part_of(a)}) imports {b} ({part_of(b)})"
        for a, targets in import_graph().items()
        for b in targets
        if part_of(a) != part_of(b) and rank[part_of(b)] >= rank[part_of(a)]
    )
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)
    parts_graph: dict[str, set[str]] = {}
    for a, targets in import_graph().items():
        parts_graph.setdefault(part_of(a), set()).update(
            part_of(b) for b in targets if part_of(b) != part_of(a)
        )
    assert find_cycle(parts_graph) is None


@pytest.mark.parametrize("package", sorted(p.parent.name for p in ROOT.glob("*/__init__.py")))
def test_each_subpackage_says_what_it_holds(package):
    doc = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text(encoding="utf-8")))
    assert doc and len(doc.split()) >= 8, f"{package}/__init__.py needs a docstring saying what it holds"


def test_every_module_has_a_docstring():
    missing = [
        name
        for name, path in _modules().items()
        if not ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert not missing, f"modules without a docstring: {missing}"
