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


def install_hint(extra: str) -> str:
    """How to install an extra. The project is not on PyPI: it is installed from a clone of its repository."""
    return f"pip install -e '.[{extra}]' in the florence2-onnx clone (bash scripts/setup.sh installs every extra)"


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"{what} needs the Python package '{module.split('.')[0]}', which is not installed "
            f"({e}); install the '{extra}' extra: {install_hint(extra)}"
        ) from None


def brief(value: object, limit: int = 60) -> str:
    """``repr(value)`` for an error message, cut to about ``limit`` characters with the full length noted.

    Messages echo what the caller gave; a 19 MB string or a 5000-digit number must not come back whole
    (nor fail to print: ``repr`` of a huge int raises ValueError)."""
    if isinstance(value, (str, bytes)) and len(value) > limit:
        unit = "characters" if isinstance(value, str) else "bytes"
        return f"{value[:limit]!r}... ({len(value)} {unit})"
    try:
        text = repr(value)
    except ValueError:  # an int past sys.get_int_max_str_digits()
        return f"<{type(value).__name__} too large to print>"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
