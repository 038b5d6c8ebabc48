"""Small rewrites of exported ONNX graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def tie_lm_head(path: str | Path) -> bool:
    """Make the decoder's output projection read the embedding table instead of a transposed copy.

    The TorchScript exporter folds ``lm_head`` (tied to the embeddings) into ``MatMul(h, W^T)`` with
    ``W^T`` stored as a second initializer: [V, D] floats twice. This rewrites it as
    ``Gemm(h, W, transB=1)`` so the table is stored once. Returns whether a rewrite happened.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    gathers = [n for n in graph.node if n.op_type == "Gather" and n.input[0] in inits]
    if not gathers:
        return False
    table_name = gathers[0].input[0]
    table = numpy_helper.to_array(inits[table_name])
    for i, node in enumerate(graph.node):
        if node.op_type != "MatMul" or node.input[1] not in inits:
            continue
        weight = inits[node.input[1]]
        if tuple(weight.dims) != table.shape[::-1] or not np.array_equal(numpy_helper.to_array(weight), table.T):
            continue
        gemm = helper.make_node("Gemm", [node.input[0], table_name], list(node.output), name=node.name or "lm_head",
                                transB=1)
        graph.node.remove(node)
        graph.node.insert(i, gemm)
        if not any(weight.name in n.input for n in graph.node):
            graph.initializer.remove(weight)
        onnx.save(model, str(path))
        return True
    return False
