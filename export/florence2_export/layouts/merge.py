"""Merge ``decoder_model`` and ``decoder_with_past_model`` into ``decoder_model_merged``.

The merged graph has the inputs of both plus ``use_cache_branch`` (bool [1]) and one ``If`` node: its
then-branch is the with-past graph, its else-branch the first-step graph. Both branches produce every
output of the merged spec; the with-past branch passes its ``past_key_values.{i}.encoder.*`` through as
``present.{i}.encoder.*`` (it does not recompute them). Weights live once, in the outer graph: the
initializers of both branches are hoisted and identical tensors are stored once (the two decoders share
every weight). Node and value names inside each branch get a branch prefix so that nothing clashes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from florence2_runtime.engine.graphs import USE_CACHE_BRANCH, GraphSpec, TensorSpec

if TYPE_CHECKING:  # onnx is imported where it is used
    from onnx import TensorProto

ELEM_TYPES = {"float32": 1, "uint8": 2, "int8": 3, "int32": 6, "int64": 7, "bool": 9, "float16": 10}


def _value_info(t: TensorSpec):
    from onnx import helper

    return helper.make_tensor_value_info(t.name, ELEM_TYPES[t.dtype], list(t.axes))


def _hoist(graph, store: dict[str, TensorProto], by_digest: dict[str, str]) -> dict[str, str]:
    """Put ``graph``'s initializers into ``store`` (one entry per distinct tensor); return ``{old: new}``."""
    rename: dict[str, str] = {}
    for init in graph.initializer:
        tensor = type(init)()
        tensor.CopyFrom(init)
        tensor.name = ""
        key = (
            f"{init.data_type}:{list(init.dims)}:"
            + hashlib.sha256(tensor.SerializeToString(deterministic=True)).hexdigest()
        )
        if key not in by_digest:
            tensor.name = f"w{len(store)}_{init.name}"[:200]
            store[tensor.name] = tensor
            by_digest[key] = tensor.name
        rename[init.name] = by_digest[key]
    return rename


def _branch(
    graph,
    prefix: str,
    outer_inputs: set[str],
    init_names: dict[str, str],
    outputs: list[TensorSpec],
    passthrough: dict[str, str],
):
    """``graph`` as an If branch: renamed values, no initializers, outputs in ``outputs`` order.

    passthrough: branch output name -> outer input it forwards unchanged (Identity nodes are added).
    """
    from onnx import helper

    def name(v: str) -> str:
        if not v or v in outer_inputs:
            return v
        return init_names.get(v, f"{prefix}/{v}")

    nodes = []
    for node in graph.node:
        if any(a.type in (a.GRAPH, a.GRAPHS) for a in node.attribute):
            raise ValueError(f"cannot merge: node {node.name or node.op_type} has a subgraph")
        new = helper.make_node(
            node.op_type,
            [name(v) for v in node.input],
            [name(v) for v in node.output],
            name=f"{prefix}/{node.name}" if node.name else "",
            domain=node.domain or None,
        )
        new.attribute.extend(node.attribute)
        nodes.append(new)
    produced = {o.name for o in graph.output}
    outs = []
    for t in outputs:
        inner = f"{prefix}/out/{t.name}"
        if t.name in passthrough:
            nodes.append(helper.make_node("Identity", [passthrough[t.name]], [inner]))
        elif t.name in produced:
            nodes.append(helper.make_node("Identity", [name(t.name)], [inner]))
        else:
            raise ValueError(f"cannot merge: the {prefix} graph has no output {t.name!r}")
        outs.append(helper.make_tensor_value_info(inner, ELEM_TYPES[t.dtype], None))
    return helper.make_graph(nodes, f"{prefix}_branch", [], outs)


def merge_decoders(
    no_past_path: str | Path, with_past_path: str | Path, out_path: str | Path, spec: GraphSpec
) -> Path:
    """Write ``decoder_model_merged`` (``spec``) built from the two decoder files; return its path."""
    import onnx
    from onnx import helper

    first = onnx.load(str(no_past_path))
    later = onnx.load(str(with_past_path))
    outer_inputs = set(spec.input_names)
    store: dict[str, TensorProto] = {}
    by_digest: dict[str, str] = {}
    renames = {
        prefix: _hoist(graph, store, by_digest)
        for prefix, graph in (("no_past", first.graph), ("with_past", later.graph))
    }
    passthrough = {
        n: n.replace("present", "past_key_values", 1)
        for n in spec.output_names
        if n.startswith("present.") and ".encoder." in n
    }
    then_branch = _branch(
        later.graph, "with_past", outer_inputs, renames["with_past"], list(spec.outputs), passthrough
    )
    else_branch = _branch(first.graph, "no_past", outer_inputs, renames["no_past"], list(spec.outputs), {})
    cond = "use_cache_branch_scalar"
    nodes = [
        helper.make_node("Squeeze", [USE_CACHE_BRANCH], [cond], name="squeeze_use_cache_branch"),
        helper.make_node(
            "If",
            [cond],
            spec.output_names,
            name="use_cache_branch_if",
            then_branch=then_branch,
            else_branch=else_branch,
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "decoder_model_merged",
        [_value_info(t) for t in spec.inputs],
        [_value_info(t) for t in spec.outputs],
        initializer=list(store.values()),
    )
    model = helper.make_model(graph, opset_imports=list(first.opset_import), producer_name="florence2-onnx")
    model.ir_version = first.ir_version
    onnx.checker.check_model(model)
    onnx.save(model, str(out_path))
    return Path(out_path)
