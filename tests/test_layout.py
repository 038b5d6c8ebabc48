"""The runtime's layout: no import circles, layers that import only downwards, old paths that still work.

Every import of a project module counts for the module graph (top level, ``if TYPE_CHECKING:`` and inside
functions); the layer graph counts the imports at module level (``TYPE_CHECKING`` ones included), which run
whenever the module is imported.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import florence2_runtime
from florence2_runtime import _moved

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
    ("errors", "_moved"),
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
    assert named == [name for names in LAYERS for name in names if name != "_moved"]


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


# --- the old paths ------------------------------------------------------------------------------------
def test_the_public_api_is_unchanged():
    assert sorted(florence2_runtime.__all__) == PUBLIC_API
    for name in PUBLIC_API:
        assert getattr(florence2_runtime, name).__name__ == name


@pytest.mark.parametrize("old, new", sorted(_moved.MOVED.items()))
def test_an_old_path_imports_the_new_module_with_a_warning(old, new):
    old, new = f"{PACKAGE}.{old}", f"{PACKAGE}.{new}"
    sys.modules.pop(old, None)
    _moved._warned.discard(old)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new) and module.__name__ == new
    assert module.__spec__.name == new  # the new module's own spec is kept
    sys.modules.pop(old)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per old name
        assert importlib.import_module(old) is module


def test_old_paths_keep_monkeypatch_and_isinstance_working(monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from florence2_runtime.results import Florence2Result as OldResult

        monkeypatch.setattr("florence2_runtime.hub.ALIASES", {"x": "y/z"})
    from florence2_runtime.engine import hub

    assert hub.ALIASES == {"x": "y/z"}
    assert OldResult is florence2_runtime.Florence2Result
    assert isinstance(florence2_runtime.Florence2Result("<OCR>", (1, 1)), OldResult)


def test_old_modules_that_became_packages_offer_what_they_did():
    from florence2_runtime import cli, tasks
    from florence2_runtime.cli import command as main_module
    from florence2_runtime.tasks import batch

    assert cli.main is main_module.main and cli.build_parser is main_module.build_parser
    assert {n for n in batch.__all__} <= set(tasks.__all__)
    assert tasks.answer_prompts is batch.answer_prompts


def test_the_new_paths_import_without_deprecation_warnings():
    new = sorted({f"{PACKAGE}.{n}" for n in _moved.MOVED.values()} | {f"{PACKAGE}.cli", f"{PACKAGE}.tasks"})
    script = (
        "import importlib, sys\nimport florence2_runtime\n"
        + "".join(f"importlib.import_module({n!r})\n" for n in new)
        + ("old = [m for m in sys.modules if m in {o!r}]\nassert not old, old\nprint('ok')\n").format(
            o={f"{PACKAGE}.{o}" for o in _moved.MOVED}
        )
    )
    out = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_importing_the_package_imports_neither_front_end_nor_an_old_path():
    script = (
        "import sys, florence2_runtime\n"
        "print(sorted(m for m in sys.modules if m.startswith('florence2_runtime')))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    loaded = set(ast.literal_eval(out.stdout.strip()))
    assert not {m for m in loaded if _layer(m) in ("cli", "server")}, loaded
    assert not loaded & {f"{PACKAGE}.{o}" for o in _moved.MOVED}
