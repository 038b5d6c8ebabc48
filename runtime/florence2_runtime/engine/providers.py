"""Execution providers: normalise what the user asks for, create sessions, check what was granted."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import Florence2Error, ModelFileError, install_hint, require
from . import openvino

ProviderSpec = str | tuple[str, dict[str, Any]]

SHORT_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "openvino": openvino.OPENVINO,  # the openvino package on the encoders (engine/openvino.py)
}
# what a short name expands to: an accelerator keeps the CPU as the fallback for unsupported nodes
EXPANSIONS = {
    "CUDAExecutionProvider": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "TensorrtExecutionProvider": [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ],
    openvino.OPENVINO: [openvino.OPENVINO, "CPUExecutionProvider"],  # the CPU runs the other graphs
}


class ProviderError(Florence2Error, ValueError):
    """A requested execution provider is unknown or not available in this onnxruntime build."""


def onnxruntime():
    """The onnxruntime module, or a clear error saying which extra to install."""
    return require("onnxruntime", "cpu", "Running Florence-2 models")


def normalize_providers(providers: Sequence[ProviderSpec] | str | None) -> list[tuple[str, dict[str, Any]]]:
    """``None`` / ``"cuda"`` / ``["CUDAExecutionProvider", ("CPUExecutionProvider", {})]`` -> ``[(name, options)]``.

    Raises :class:`ProviderError` naming a provider this onnxruntime build does not have.
    """
    if providers is None:
        providers = ["cpu"]
    if isinstance(providers, str):
        providers = [providers]
    out: list[tuple[str, dict[str, Any]]] = []
    for p in providers:
        name, opts = (p, {}) if isinstance(p, str) else (p[0], dict(p[1]))
        if not isinstance(name, str):
            raise ProviderError(f"provider must be a name or (name, options), got {p!r}")
        full = SHORT_NAMES.get(name.lower(), name)
        names = EXPANSIONS.get(full, [full]) if name.lower() in SHORT_NAMES else [full]
        for n in names:
            if n not in (x for x, _ in out):
                out.append((n, opts if n == full else {}))
    available = onnxruntime().get_available_providers()
    for name, _ in out:
        if name == openvino.OPENVINO:
            openvino.openvino()  # not an onnxruntime provider: the openvino package must be there
        elif name not in available:
            hint = (
                f" (install the 'gpu' extra, {install_hint('gpu')}, or a GPU build of onnxruntime)"
                if name != "CPUExecutionProvider"
                else ""
            )
            raise ProviderError(
                f"execution provider {name!r} is not available in this onnxruntime build; available: "
                f"{', '.join(available)}{hint}"
            )
    return out


def create_session(path: Path, providers: list[tuple[str, dict[str, Any]]], options=None):
    """An InferenceSession for ``path``; warns when onnxruntime did not grant the first provider asked for.

    With OpenVINO first, an :class:`~.openvino.OpenVINOSession` (same methods) with as many threads as
    ``options`` gives onnxruntime's sessions."""
    if providers and providers[0][0] == openvino.OPENVINO:
        threads = options.intra_op_num_threads if options is not None else 0
        return openvino.open_session(path, providers[0][1], threads)
    ort = onnxruntime()
    if not path.is_file():
        raise ModelFileError(path, "file not found")
    try:
        sess = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types for corrupt files
        raise ModelFileError(
            path, f"onnxruntime cannot load it ({type(e).__name__}: {str(e).splitlines()[0]})"
        ) from None
    granted = sess.get_providers()
    wanted = providers[0][0]
    if wanted not in granted:
        warnings.warn(
            f"{path.name}: asked for {wanted} but onnxruntime runs it on {', '.join(granted)}",
            RuntimeWarning,
            stacklevel=3,
        )
    return sess
