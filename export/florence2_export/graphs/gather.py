"""Build the ``kv_gather`` helper graph (row gather over K/V tensors) from its shared description."""

from __future__ import annotations

from pathlib import Path

from florence2_runtime.engine.graphs import GraphSpec, ModelDims, kv_gather_graph

OPSET = 17


def _value_info(t):
    import numpy as np
    from onnx import helper

    return helper.make_tensor_value_info(
        t.name, helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype)), list(t.axes)
    )


def build_kv_gather(spec: GraphSpec):
    """One ``Gather(axis=0)`` per K/V tensor, all sharing the ``index`` input."""
    import onnx
    from onnx import helper

    index, *kv = spec.inputs
    nodes = [
        helper.make_node("Gather", [t.name, index.name], [o.name], axis=0, name=f"gather_{i}")
        for i, (t, o) in enumerate(zip(kv, spec.outputs))
    ]
    graph = helper.make_graph(
        nodes, spec.name, [_value_info(t) for t in spec.inputs], [_value_info(t) for t in spec.outputs]
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="florence2_export"
    )
    onnx.checker.check_model(model)
    return model


def write_kv_gather(onnx_dir: Path, dims: ModelDims) -> Path:
    """Write ``kv_gather.onnx`` into ``onnx_dir``; returns its path."""
    import onnx

    spec = kv_gather_graph(dims)
    path = Path(onnx_dir) / spec.filename
    onnx.save(build_kv_gather(spec), str(path))
    return path
