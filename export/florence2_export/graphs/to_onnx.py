"""Trace one torch module into one ONNX file, with the input/output names and dynamic axes of its ``GraphSpec``."""

from __future__ import annotations

import warnings
from pathlib import Path

from florence2_runtime.engine.graphs import GraphSpec

OPSET = 17


def export_graph(module, args, spec: GraphSpec, path: Path) -> None:
    """``torch.onnx.export`` (TorchScript tracer, constant folding) of ``module(*args)`` to ``path``."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=spec.input_names,
            output_names=spec.output_names,
            dynamic_axes=spec.dynamic_axes(),
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
