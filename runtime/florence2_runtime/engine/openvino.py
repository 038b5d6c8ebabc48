"""OpenVINO as a per-graph engine: bfloat16 (or float32) compute on the CPU for the graphs where it wins.

OpenVINO (the ``openvino`` package, extra ``openvino``; not onnxruntime's OpenVINO execution provider)
reads the folder's own fp32 ONNX files and compiles them for the CPU. With ``bf16`` inference precision it
runs the matrix products in bfloat16 on CPUs that have it (AVX512-BF16, AMX): on an Intel Xeon with AMX
the vision and text encoders then take about a quarter of onnxruntime's fp32 CPU time. The decoder step
(a few small products, bound by streaming the weights) joins them on CPUs with AMX, where OpenVINO's bf16
steps took 0.55-0.7x onnxruntime's fp32 CPU time; elsewhere it stays on onnxruntime: on an AMD EPYC Zen 4
(AVX512-BF16, no AMX) OpenVINO's step was 0.91x as fast (:func:`default_graphs`;
``benchmarks/results/cpu-base-notes.md``).

It is the provider ``"openvino"`` (:data:`OPENVINO`) with options ``{"precision": "bf16" | "f32",
"graphs": (graph names)}``; any other key is passed to ``openvino.Core.compile_model`` as a property.
``Florence2.from_pretrained(folder, precision="bf16")`` asks for it with the default graphs
(:func:`precision_plan`); ``providers="openvino"`` runs the encoders in float32 (token parity with the
onnxruntime path, within float rounding; not faster than onnxruntime there). :class:`OpenVINOSession` looks like an onnxruntime
``InferenceSession`` to the layouts' session classes, so every layout and the host engine use it unchanged.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import Florence2Error, ModelFileError, require
from .graphs import GraphSpec
from .int8cpu import cpu_flags

# the provider name (short name "openvino"); not onnxruntime's OpenVINOExecutionProvider
OPENVINO = "OpenVINO"
# the graphs OpenVINO runs unless told otherwise (native names and their onnx-community counterparts):
# the encoders always; the decoder too in bf16 on CPUs with AMX (default_graphs)
ENCODERS = ("vision_encoder", "text_encoder", "encoder_model")
DECODERS = ("decoder", "decoder_model_merged", "decoder_model", "decoder_with_past_model")
AMX_FLAGS = ("amx_bf16",)  # /proc/cpuinfo's name
# this runtime's precision names -> OpenVINO's inference precision
INFERENCE_PRECISIONS = {"bf16": "bf16", "f32": "f32", "fp32": "f32"}
# what each precision needs from the CPU (``OPTIMIZATION_CAPABILITIES``)
CAPABILITY = {"bf16": "BF16", "f32": "FP32"}
OUR_KEYS = ("precision", "graphs")  # options this module reads; the rest go to compile_model

ProviderList = list[tuple[str, dict[str, Any]]]

# OpenVINO element type name -> onnxruntime's type string (what ``get_inputs()[i].type`` says)
ORT_TYPE_NAMES = {
    "f32": "tensor(float)",
    "f16": "tensor(float16)",
    "i64": "tensor(int64)",
    "i32": "tensor(int32)",
    "boolean": "tensor(bool)",
}


class OpenVINOError(Florence2Error, ValueError):
    """OpenVINO cannot run what was asked on this machine (e.g. bf16 on a CPU without it)."""


def openvino() -> Any:
    """The openvino module, or a clear error naming the extra."""
    return require("openvino", "openvino", "Running graphs with OpenVINO (precision='bf16')")


@functools.lru_cache(maxsize=1)
def core() -> Any:
    """One ``openvino.Core`` per process (it holds the plugins)."""
    return openvino().Core()


@functools.lru_cache(maxsize=1)
def cpu_capabilities() -> frozenset[str]:
    """What OpenVINO's CPU plugin says this CPU can compute in: ``{"FP32", "BF16", "INT8", ...}``."""
    return frozenset(str(c) for c in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def check_precision(precision: str) -> str:
    """``precision`` as OpenVINO names it; :class:`OpenVINOError` when this CPU cannot compute in it."""
    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(
            f"OpenVINO precision must be one of {', '.join(INFERENCE_PRECISIONS)}, got {precision!r}"
        )
    ov_precision = INFERENCE_PRECISIONS[precision]
    wanted = CAPABILITY[ov_precision]
    have = cpu_capabilities()
    if wanted not in have:
        raise OpenVINOError(
            f"precision {precision!r} needs a CPU that computes in {wanted} (x86 with AVX512-BF16 or AMX, "
            f"e.g. Intel Xeon 4th generation or newer, AMD Zen 4 or newer); OpenVINO reports this CPU "
            f"can do: {', '.join(sorted(have)) or 'nothing'}. Use precision='fp32' or 'int8'"
        )
    return ov_precision


@dataclass(frozen=True)
class TensorInfo:
    """What ``InferenceSession.get_inputs()`` / ``get_outputs()`` give: name and onnxruntime type string."""

    name: str
    type: str


class OpenVINOSession:
    """One ONNX graph compiled by OpenVINO for the CPU, behind onnxruntime's ``InferenceSession`` methods
    (``run``, ``get_inputs``, ``get_outputs``, ``get_providers``).

    Outputs are copied out of OpenVINO's buffers (the next run reuses them); inputs are read in place. One
    infer request, so concurrent runs take turns (an onnxruntime session runs them side by side).
    """

    def __init__(self, path: Path, options: Mapping[str, Any], threads: int = 0):
        """options: the provider's options (``precision``, ``graphs`` and compile properties); threads:
        inference threads (0: OpenVINO's choice, all cores)."""
        ov_precision = check_precision(str(options.get("precision", "f32")))
        properties = {k: v for k, v in options.items() if k not in OUR_KEYS}
        properties.setdefault("INFERENCE_PRECISION_HINT", ov_precision)
        properties.setdefault("PERFORMANCE_HINT", "LATENCY")
        if threads:
            properties.setdefault("INFERENCE_NUM_THREADS", int(threads))
        if not path.is_file():
            raise ModelFileError(path, "file not found")
        try:
            model = core().read_model(str(path))
            self.rewritten = fold_transposes_into_matmuls(model)
            self.compiled = core().compile_model(model, "CPU", properties)
        except Exception as e:  # OpenVINO raises RuntimeError for unreadable or unsupported graphs
            raise ModelFileError(
                path, f"OpenVINO cannot compile it ({type(e).__name__}: {str(e).splitlines()[0]})"
            ) from None
        del model
        self.path = path
        self.precision = ov_precision
        self.request = self.compiled.create_infer_request()
        self._lock = threading.Lock()
        self._inputs = [_info(p) for p in self.compiled.inputs]
        self._outputs = [_info(p) for p in self.compiled.outputs]
        self._output_index = {o.name: i for i, o in enumerate(self._outputs)}

    def get_providers(self) -> list[str]:
        return [OPENVINO]

    def get_inputs(self) -> list[TensorInfo]:
        return list(self._inputs)

    def get_outputs(self) -> list[TensorInfo]:
        return list(self._outputs)

    def run(
        self, output_names: Sequence[str] | None, feed: Mapping[str, np.ndarray], run_options: Any = None
    ) -> list[np.ndarray]:
        """As ``InferenceSession.run``: the outputs named (None: all, in graph order) for ``feed``.
        run_options: accepted and ignored (onnxruntime's ``RunOptions``)."""
        indices = (
            range(len(self._outputs))
            if output_names is None
            else [self._output_index[name] for name in output_names]
        )
        inputs = {name: np.ascontiguousarray(v) for name, v in feed.items()}
        with self._lock:
            self.request.infer(inputs, share_inputs=True)
            return [np.array(self.request.get_output_tensor(i).data, copy=True) for i in indices]


def _info(port: Any) -> TensorInfo:
    name = port.get_any_name()
    return TensorInfo(name, ORT_TYPE_NAMES.get(port.get_element_type().get_type_name(), "tensor(float)"))


def _constant_order(transpose: Any) -> tuple[int, ...] | None:
    source = transpose.input_value(1).get_node()
    return tuple(int(v) for v in source.get_data()) if source.get_type_name() == "Constant" else None


def fold_transposes_into_matmuls(model: Any) -> int:
    """Rewrite ``model`` (an ``openvino.Model``, in place) so that the 4-D transposes OpenVINO's CPU plugin
    runs slowly become cheap ones plus MatMul transpose flags; returns the number of rewrites.

    OpenVINO moves a ``(0, 2, 3, 1)`` / ``(0, 3, 1, 2)`` transpose of a large tensor one element at a time
    (DaViT's channel attention, [1, 36864, 4, 32] at 768 px: ~40 ms of CPU each), while ``(0, 2, 1, 3)``
    moves whole rows of the last axis (~5 ms). Two exact identities (f32 outputs agree to 1e-5):

    - ``Transpose(x, (0, 2, 3, 1))`` read only by MatMuls: ``Transpose(x, (0, 2, 1, 3))`` with the reading
      side's transpose flag flipped (the two differ by a swap of the last two axes);
    - ``Transpose(MatMul(a, b), (0, 3, 1, 2))`` (the MatMul read by nothing else):
      ``Transpose(MatMul(b, a) with both flags flipped, (0, 2, 1, 3))``, as ``(a b)^T = b^T a^T``.

    In the vision encoder this leaves only the permutes around the depthwise convolutions (their
    consumers are convolutions); it saves 10-20 % of the bf16 encoder's CPU time (``cpu-base-notes.md``).
    """
    ops = require("openvino.opset13", "openvino", "Running graphs with OpenVINO")
    rows = ops.constant(np.array([0, 2, 1, 3], np.int64))
    count = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "Transpose":
            continue
        order, readers = _constant_order(node), list(node.output(0).get_target_inputs())
        if (
            order == (0, 2, 3, 1)
            and readers
            and all(r.get_node().get_type_name() == "MatMul" for r in readers)
        ):
            swapped = ops.transpose(node.input_value(0), rows)
            for reader in readers:
                matmul, side = reader.get_node(), reader.get_index()
                a, b = matmul.input_value(0), matmul.input_value(1)
                ta, tb = matmul.get_transpose_a(), matmul.get_transpose_b()
                new = ops.matmul(swapped, b, not ta, tb) if side == 0 else ops.matmul(a, swapped, ta, not tb)
                _replace(matmul, new)
            count += 1
        elif order == (0, 3, 1, 2):
            source = node.input_value(0).get_node()
            if source.get_type_name() == "MatMul" and len(source.output(0).get_target_inputs()) == 1:
                a, b = source.input_value(0), source.input_value(1)
                transposed = ops.matmul(b, a, not source.get_transpose_b(), not source.get_transpose_a())
                _replace(node, ops.transpose(transposed, rows))
                count += 1
    if count:
        model.validate_nodes_and_infer_types()
    return count


def _replace(old: Any, new: Any) -> None:
    """Every reader of ``old``'s output reads ``new``'s instead."""
    new.set_friendly_name(old.get_friendly_name())
    for reader in list(old.output(0).get_target_inputs()):
        reader.replace_source_output(new.output(0))


def open_session(path: Path, options: Mapping[str, Any], threads: int = 0) -> OpenVINOSession:
    """What ``providers.create_session`` calls for the ``OpenVINO`` provider."""
    openvino()
    return OpenVINOSession(path, options, threads)


# ----------------------------------------------------------------------------- which graph runs where


def default_graphs(precision: str, flags: frozenset[str] | None = None) -> tuple[str, ...]:
    """The graphs OpenVINO runs when its options name none: the encoders, and in bf16 on a CPU with AMX
    (``flags``: :func:`~.int8cpu.cpu_flags` by default) the decoder as well."""
    flags = cpu_flags() if flags is None else flags
    amx = flags is not None and any(f in flags for f in AMX_FLAGS)
    return ENCODERS + DECODERS if amx and INFERENCE_PRECISIONS.get(precision) == "bf16" else ENCODERS


def graph_providers(providers: ProviderList) -> Callable[[GraphSpec], ProviderList]:
    """Per-graph providers for a list whose first entry is OpenVINO: the graphs named by its ``graphs``
    option (default :func:`default_graphs`) on OpenVINO, every other graph on the rest of the list
    (onnxruntime's CPU provider by default)."""
    (name, options), rest = providers[0], providers[1:]
    graphs = tuple(options.get("graphs") or default_graphs(str(options.get("precision", "f32"))))
    fallback = rest or [("CPUExecutionProvider", {})]

    def providers_for(spec: GraphSpec) -> ProviderList:
        return [(name, options)] if spec.name in graphs else fallback

    return providers_for


def precision_plan(precision: str | None, providers: ProviderList) -> tuple[str | None, ProviderList]:
    """(the graph files' precision, providers) for ``from_pretrained``'s ``precision`` and provider list.

    ``bf16`` is a compute precision, not a file variant: it loads the fp32 graphs and puts OpenVINO with
    bf16 first (an OpenVINO entry already given keeps its options). Raises :class:`OpenVINOError` when
    asked with an accelerator provider first, or on a CPU without bf16; other precisions pass through.
    """
    if precision is None or precision.lower() != "bf16":
        return precision, providers
    first = providers[0][0]
    if first not in (OPENVINO, "CPUExecutionProvider"):
        raise OpenVINOError(
            f"precision 'bf16' runs on the CPU through OpenVINO, not on {first}; use fp16 on a GPU"
        )
    openvino()
    check_precision("bf16")
    if first == OPENVINO:
        return "fp32", [(OPENVINO, {**providers[0][1], "precision": "bf16"}), *providers[1:]]
    return "fp32", [(OPENVINO, {"precision": "bf16"}), *providers]
