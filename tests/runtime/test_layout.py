"""The runtime's layout: no import circles, layers that import only downwards, no import hooks.

Every import of a project module counts for the module graph (top level, ``if TYPE_CHECKING:`` and inside
functions); the layer graph counts the imports at module level (``TYPE_CHECKING`` ones included), which run
whenever the module is imported.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import florence2_runtime

PACKAGE = "florence2_runtime"
ROOT = Path(florence2_runtime.__file__).parent
PUBLIC_API = [
    "BoundingBox",
    "EncodedImage",
    "Florence2",
    "Florence2Error",
    "Florence2Result",
    "MissingDependencyError",
    "ModelFileError",
    "Polygon",
    "QuadBox",
    "post_process_generation",
]

# The layer order, lowest first (the package docstring shows the same list); names on one line share a layer.
# "(package)" is florence2_runtime/__init__.py, the public API.
LAYERS = [
    ("errors",),
    ("generation",),
    ("inputs",),
    ("engine",),
    ("tasks",),
    ("model",),
    ("(package)",),
    ("cli",),
    ("server", "mcp", "datasets"),
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_module(name: str) -> bool:
    return name in MODULES


def _imports(name: str) -> list[tuple[str, bool]]:
    """(imported project module, at module level) for every import statement of module ``name``."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    module_level = {id(n) for n in _walk_module_level(tree)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                base_name = ".".join(base + ([node.module] if node.module else []))
            else:
                base_name = node.module or ""
            targets = [
                f"{base_name}.{a.name}" if _is_module(f"{base_name}.{a.name}") else base_name
                for a in node.names
            ]
        else:
            continue
        for target in targets:
            while target and not _is_module(target) and target.startswith(PACKAGE + "."):
                target = target.rpartition(".")[
                    0
                ]  # `import florence2_runtime.x.y` -> the deepest module there
            if _is_module(target):
                found.append((target, id(node) in module_level))
    return found


def _walk_module_level(tree: ast.Module):
    """Nodes that run at import time: the module body, descending into if / try / with, not into defs."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            if isinstance(node, ast.ClassDef):  # a class body runs at import time
                stack.extend(node.body)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(package)"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes, or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_module_graph_has_no_circles():
    graph = {m: {t for t, _ in _imports(m) if t != m} for m in MODULES}
    assert sum(map(len, graph.values())) > 100  # the parser does see the imports
    cycle = _cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_layers_import_only_downwards():
    edges = {
        (_layer(m), _layer(t)) for m in MODULES for t, top in _imports(m) if top and _layer(m) != _layer(t)
    }
    assert not {a for a, _ in edges} - RANK.keys(), "a module outside LAYERS: add it to the layer order"
    assert set(map(_layer, MODULES)) <= RANK.keys(), "a subpackage outside LAYERS: add it to the layer order"
    upwards = sorted(f"{a} imports {b}" for a, b in edges if RANK[a] <= RANK[b] and RANK[a] != RANK[b])
    assert not upwards, upwards
    assert _cycle({a: {b for x, b in edges if x == a} for a, _ in edges}) is None


def test_the_package_docstring_states_the_same_layers():
    doc = florence2_runtime.__doc__
    block = doc.split("::", 1)[1].split("\n\n", 2)[1]
    named = [line.split()[0] for line in block.splitlines() if line.strip()]
    assert named == [name for names in LAYERS for name in names]


def test_only_the_export_command_reaches_into_the_export_package():
    """torch / transformers never; florence2_export only inside cli.command's sub-commands (imported lazily)."""
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = {id(n) for n in _walk_module_level(tree)}
        for node in ast.walk(tree):
            mods = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            )
            for mod in mods:
                root = mod.split(".")[0]
                assert root not in ("torch", "transformers", "optimum"), f"{name} imports {mod}"
                if root == "florence2_export":
                    assert name == f"{PACKAGE}.cli.command" and id(node) not in top, f"{name} imports {mod}"


def test_every_subpackage_says_what_it_holds_and_may_import():
    for name, path in MODULES.items():
        if path.name == "__init__.py" and name != PACKAGE and name.count(".") == 1:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
            assert doc and "May import" in doc, name


# --- the public API ----------------------------------------------------------------------------------
def test_the_public_api_is_unchanged():
    assert sorted(florence2_runtime.__all__) == PUBLIC_API
    for name in PUBLIC_API:
        assert getattr(florence2_runtime, name).__name__ == name


def test_no_import_hook_and_no_old_module_paths():
    """No release had another layout, so nothing answers for old module names (no finder on sys.meta_path)."""
    assert not [f for f in sys.meta_path if type(f).__module__.startswith(PACKAGE)]
    for old in ("hub", "decoding", "results", "runcmd"):  # paths of the layout before the subpackages
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(f"{PACKAGE}.{old}")


def test_importing_the_package_imports_no_front_end():
    script = (
        "import sys, florence2_runtime\n"
        "print(sorted(m for m in sys.modules if m.startswith('florence2_runtime')))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    loaded = set(ast.literal_eval(out.stdout.strip()))
    assert not {m for m in loaded if _layer(m) in ("cli", "server")}, loaded
