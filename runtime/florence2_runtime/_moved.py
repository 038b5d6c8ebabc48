"""Old import paths of the modules moved into subpackages (0.1 layout), kept for one release.

``import florence2_runtime.hub`` (or ``from florence2_runtime.hub import ...``) still works: a finder on
``sys.meta_path`` answers every old name of :data:`MOVED` with THE module of its new path (same object:
``isinstance`` and ``monkeypatch.setattr("florence2_runtime.hub.X", ...)`` keep working), imported only
when the old name is, and a ``DeprecationWarning`` naming the new path, once per old name. Old names that
became packages (``florence2_runtime.tasks``, ``florence2_runtime.cli``) are real packages that re-export
what the old module offered; they are not in this table. Imports nothing of the project itself.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from importlib.machinery import ModuleSpec
from types import ModuleType

PACKAGE = __name__.rpartition(".")[0]

# old module (relative to the package) -> its new path; CHANGELOG.md lists the same moves
MOVED: dict[str, str] = {
    "argtypes": "cli.argtypes",
    "bench": "cli.bench",
    "coco": "tasks.coco",
    "community": "engine.onnx_community",
    "compare": "cli.compare",
    "config": "engine.config",
    "decoding": "generation",
    "drawing": "tasks.drawing",
    "encoded": "inputs.encoded",
    "graphs": "engine.graphs",
    "hub": "engine.hub",
    "inference": "engine.native",
    "int8cpu": "engine.int8cpu",
    "iobinding": "engine.iobinding",
    "layouts": "engine.layouts",
    "masks": "tasks.masks",
    "methods": "tasks.methods",
    "onnxproto": "engine.onnxproto",
    "postprocess": "tasks.postprocess",
    "preprocess": "inputs.images",
    "prompts": "tasks.prompts",
    "providers": "engine.providers",
    "results": "tasks.results",
    "runcmd": "cli.run",
    "svconvert": "tasks.supervision",
    "tensorrt": "engine.tensorrt",
    "tokenizer": "inputs.tokenizer",
}

_warned: set[str] = set()  # old names already warned about (tests clear it)


def new_name(old: str) -> str | None:
    """The new dotted path of old dotted module name ``old``; None if it did not move."""
    prefix = PACKAGE + "."
    if not old.startswith(prefix):
        return None
    new = MOVED.get(old[len(prefix) :])
    return prefix + new if new is not None else None


def import_moved(old: str) -> ModuleType:
    """The module at old name ``old``'s new path; warns once per old name."""
    new = new_name(old)
    if new is None:
        raise ImportError(f"{old} did not move", name=old)
    if old not in _warned:
        _warned.add(old)
        warnings.warn(
            f"{old} moved to {new}; import it from there (the old path goes away in the next release)",
            DeprecationWarning,
            stacklevel=3,
        )
    return importlib.import_module(new)


class _Alias(importlib.abc.Loader):
    """Loads an old name as the already-imported module of its new path, keeping that module's own spec."""

    def __init__(self) -> None:
        self._specs: dict[str, ModuleSpec | None] = {}

    def create_module(self, spec):
        module = import_moved(spec.name)
        self._specs[spec.name] = module.__spec__  # the import system overwrites __spec__; put it back
        return module

    def exec_module(self, module: ModuleType) -> None:
        for old, real in list(self._specs.items()):
            if sys.modules.get(old) is module:
                module.__spec__ = real
                del self._specs[old]


class MovedFinder(importlib.abc.MetaPathFinder):
    """Finds the old names of :data:`MOVED` (first on ``sys.meta_path``)."""

    loader = _Alias()

    def find_spec(self, fullname, path=None, target=None):
        if new_name(fullname) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self.loader)


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, MovedFinder())
