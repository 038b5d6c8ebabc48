"""The project's error types and the lazy import of optional dependencies."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType


class Florence2Error(Exception):
    """Base class of the errors this package raises on purpose."""


class ModelFileError(Florence2Error, ValueError):
    """A file of an exported model folder is missing or unreadable."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        super().__init__(f"{self.path}: {problem}")


class MissingDependencyError(Florence2Error, ImportError):
    """An optional dependency is not installed."""


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"{what} needs the Python package '{module.split('.')[0]}', which is not installed "
            f"({e}). Install it with: pip install 'florence2-onnx[{extra}]'"
        ) from None
