"""Precision variants of an exported model folder: fp32, fp16 and int8 graphs the same runtime loads.

Every variant keeps the graphs' interface of :mod:`florence2_runtime.engine.graphs` unchanged: float32
inputs and outputs (the KV cache included), int64 ids and masks. Only what happens inside changes:

- ``fp32``: the graphs as exported.
- ``fp16``: weights and activations in float16 (``onnxruntime.transformers.float16``) with Cast nodes
  at the graph boundary (``keep_io_types``); ops that overflow or lose too much in float16 stay
  float32 (:data:`FP16_BLOCKED_OPS`). Meant for GPUs; onnxruntime's CPU provider runs most float16
  nodes through inserted casts, so it is slower there, not faster.
- ``int8``: dynamic quantisation (``onnxruntime.quantization.quantize_dynamic``): int8 weights for
  every MatMul with a constant weight (the tied ``lm_head`` Gemm is first rewritten as such a MatMul),
  uint8 activations quantised per call. Meant for CPUs. The recipe (:data:`florence2_runtime.engine.int8cpu.RECIPES`)
  is recorded in ``florence2_config.json``: the default ``7bit`` (7-bit int8 weights) is right on every CPU;
  ``full-range`` saturates on x86 CPUs without VNNI (:mod:`florence2_runtime.engine.int8cpu`).

``onnxruntime.transformers``' transformer optimizer (attention / LayerNorm / GELU fusions) is
available as :func:`fuse_graph`; it is not applied by default (see the README's numbers).

The embedding table ``embed_tokens.npy`` stays float32 in every variant: it is read for the
prompt tokens only, memory-mapped, and its rows feed the text encoder's float32 input.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from florence2_runtime.engine.config import RuntimeConfig
from florence2_runtime.engine.graphs import ONNX_DIR, native_graphs
from florence2_runtime.engine.int8cpu import DEFAULT_RECIPE, check_recipe

from .graphs import onnxfile

DTYPES = ("fp32", "fp16", "int8")
# what the export's check allows per graph: max |variant - torch| / max |torch| (fp32 keeps its absolute 1e-3).
# A sanity bound that catches broken conversions (overflow, NaN, a wrong graph), not drift: measure the
# drift that matters (tokens, results) on your own images with `florence2 compare`.
VARIANT_TOLERANCE = {"fp32": 0.0, "fp16": 0.01, "int8": 0.25}

# ops kept in float32 inside fp16 graphs: normalisations and softmax (sums of squares / exponentials
# overflow float16's 65504), the reductions and powers around them, and onnxruntime's default list
# (non-float ops, and ops without float16 kernels)
FP16_BLOCKED_OPS = (
    "LayerNormalization",
    "SkipLayerNormalization",
    "Softmax",
    "ReduceMean",
    "Pow",
    "Sqrt",
    "Range",
    "CumSum",
)


@dataclass(frozen=True)
class Int8Options:
    """How ``quantize_dynamic`` is called (see the README for the measured choice)."""

    per_channel: bool = True  # one scale per output column of each weight: same speed, smaller error
    # weights: "7bit" (int8 within +-64: right on every CPU), "full-range" (int8: wrong on x86 CPUs without
    # VNNI, whose u8*s8 pair sums saturate), "u8u8" (uint8 weights); florence2_runtime.engine.int8cpu.RECIPES
    recipe: str = DEFAULT_RECIPE
    op_types: tuple[str, ...] = ("MatMul",)  # Conv stays float: ConvInteger is slower than float Conv
    untie_lm_head: bool = True  # rewrite Gemm(h, table, transB=1) as MatMul(h, table^T) so it is quantised
    # nodes whose name contains one of these stay float32. DaViT's channel attention sums q * k over every
    # spatial token: quantising its q/k/v projections triples the vision encoder's error (README). The
    # vision graph has them as q, k, v (florence2_export.graphs.vision).
    exclude: tuple[str, ...] = ("channel_attn/q/", "channel_attn/k/", "channel_attn/v/")

    def __post_init__(self):
        check_recipe(self.recipe)


@dataclass(frozen=True)
class Fp16Options:
    """How ``convert_float_to_float16`` is called."""

    op_block_list: tuple[str, ...] = FP16_BLOCKED_OPS
    keep_io_types: bool = True  # graph inputs/outputs stay float32: the runtime feeds the same arrays
    # graphs whose attention scores (the QK^T MatMul and its scaling Mul) stay float32: DaViT's channel
    # attention sums over every spatial token (36864 at 768 px) before scaling and overflows float16
    fp32_attention_scores: tuple[str, ...] = ("vision_encoder",)
    # the graphs converted; the others are copied as fp32 (e.g. a vision encoder whose activations overflow)
    graphs: tuple[str, ...] = ("vision_encoder", "text_encoder", "decoder")


# ----------------------------------------------------------------------------- graph transforms


def _load(path: Path):
    import onnx

    return onnx.load(str(path))


def _save(model, path: Path) -> None:
    import onnx

    onnx.save(model, str(path))


def gemm_to_matmul(model) -> int:
    """Rewrite ``Gemm(x, W, transB=1)`` with a constant ``W`` [N, K] (and no C, alpha = 1) as
    ``MatMul(x, W^T)``, storing ``W^T`` [K, N] as a new initializer; ``W`` stays when others use it.

    Dynamic quantisation only handles MatMul; the decoder's tied ``lm_head`` is such a Gemm.
    Returns the number of rewritten nodes.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    count = 0
    for node in list(graph.node):
        if node.op_type != "Gemm" or len(node.input) != 2 or node.input[1] not in inits:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or not attrs.get("transB", 0):
            continue
        weight_t = np.ascontiguousarray(numpy_helper.to_array(inits[node.input[1]]).T)
        name = f"{node.input[1]}.T"
        graph.initializer.append(numpy_helper.from_array(weight_t, name))
        matmul = helper.make_node(
            "MatMul", [node.input[0], name], list(node.output), name=f"{node.name}.matmul"
        )
        pos = list(graph.node).index(node)
        graph.node.remove(node)
        graph.node.insert(pos, matmul)
        if not any(node.input[1] in n.input for n in graph.node):
            graph.initializer.remove(inits[node.input[1]])
        count += 1
    return count


def to_int8(src: Path, dst: Path, graph: str = "", options: Int8Options = Int8Options()) -> None:
    """Dynamically quantise graph ``src`` into ``dst`` (weights int8 or uint8 as ``options.recipe`` says,
    activations uint8 per call)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    recipe = check_recipe(options.recipe)
    model = _load(src)
    if options.untie_lm_head:
        gemm_to_matmul(model)
    excluded = [n.name for n in model.graph.node if any(part in n.name for part in options.exclude)]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs a generic "consider pre-processing" warning per call
    try:
        quantize_dynamic(
            model,
            str(dst),
            op_types_to_quantize=list(options.op_types),
            per_channel=options.per_channel,
            reduce_range=recipe.reduce_range,
            weight_type=QuantType.QInt8 if recipe.weight_type == "int8" else QuantType.QUInt8,
            nodes_to_exclude=excluded,
            extra_options={"MatMulConstBOnly": True},
        )
    finally:
        root.setLevel(level)


def attention_score_nodes(model) -> list[str]:
    """Names of the ``MatMul -> Mul [-> Add] -> Softmax`` chains' MatMul and Mul nodes (unscaled attention scores)."""
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def only_consumer(node, op_types: tuple[str, ...]):
        nexts = consumers.get(node.output[0], [])
        return nexts[0] if len(nexts) == 1 and nexts[0].op_type in op_types else None

    names = []
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        mul = only_consumer(node, ("Mul",))
        nxt = mul and only_consumer(mul, ("Add", "Softmax"))
        if nxt is not None and nxt.op_type == "Add":
            nxt = only_consumer(nxt, ("Softmax",))
        if nxt is not None:
            names += [node.name, mul.name]
    return names


def to_fp16(src: Path, dst: Path, graph: str = "", options: Fp16Options = Fp16Options()) -> None:
    """Convert graph ``src`` (role ``graph``) to float16 into ``dst``; blocked ops and graph inputs/outputs
    stay float32."""
    from onnxruntime.transformers import float16

    if graph and graph not in options.graphs:
        return _copy(src, dst)
    model = _load(src)
    block = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(options.op_block_list))
    nodes = attention_score_nodes(model) if graph in options.fp32_attention_scores else None
    model = float16.convert_float_to_float16(
        model, keep_io_types=options.keep_io_types, op_block_list=block, node_block_list=nodes
    )
    skip_fp16_round_trips(model)
    _save(model, dst)


def skip_fp16_round_trips(model) -> int:
    """``x -> Cast(float16) -> Cast(float32)`` becomes ``x -> Cast(float32)``; returns how many were rewired.

    The float16 converter casts each blocked node's output to float16 and back to float32 for the next
    blocked node: a needless rounding that overflows for values above 65504 (unscaled attention scores).
    Casts left without consumers are removed.
    """
    from onnx import TensorProto, helper

    def cast_to(node) -> int | None:
        if node.op_type != "Cast":
            return None
        return next((helper.get_attribute_value(a) for a in node.attribute if a.name == "to"), None)

    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    rewired = 0
    for node in graph.node:
        parent = producer.get(node.input[0]) if node.op_type == "Cast" else None
        if (
            parent is not None
            and cast_to(node) == TensorProto.FLOAT
            and cast_to(parent) == TensorProto.FLOAT16
        ):
            node.input[0] = parent.input[0]
            rewired += 1
    outputs = {o.name for o in graph.output}
    while True:  # drop Casts nobody reads any more
        used = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if n.op_type == "Cast" and not any(o in used for o in n.output)]
        if not dead:
            return rewired
        for n in dead:
            graph.node.remove(n)


def _copy(src: Path, dst: Path, graph: str = "", options: None = None) -> None:
    """The fp32 "transform": ``src`` (single-file or split) as a single-file graph ``dst``."""
    if src != dst:
        _save(_load(src), dst)


# dtype -> transform(src graph, dst graph, graph role, options), and the options type it takes
TRANSFORMS: dict[str, Callable[..., None]] = {"fp32": _copy, "fp16": to_fp16, "int8": to_int8}
OPTIONS: dict[str, type | None] = {"fp32": None, "fp16": Fp16Options, "int8": Int8Options}


def fuse_graph(src: Path, dst: Path, cfg: RuntimeConfig, use_gpu: bool = False) -> dict[str, int]:
    """Apply ``onnxruntime.transformers``' BART optimizer fusions to one graph; returns fused op counts.

    Off by default: on these graphs onnxruntime's own session-level fusions (LayerNorm, GELU,
    SkipLayerNorm, bias-GELU) already apply and the attention patterns are not matched (README).
    """
    from onnxruntime.transformers.optimizer import optimize_model

    opt = optimize_model(
        str(src),
        model_type="bart",
        num_heads=cfg.decoder_heads,
        hidden_size=cfg.d_model,
        opt_level=0,
        use_gpu=use_gpu,
    )
    opt.save_model_to_file(str(dst))
    return {k: v for k, v in opt.get_fused_operator_statistics().items() if v}


# ----------------------------------------------------------------------------- folders


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return dtype


def _convert_graphs(
    src_onnx: Path, dst_onnx: Path, cfg: RuntimeConfig, dtype: str, options, fuse: bool
) -> None:
    """Write the ``dtype`` version of each fp32 graph in ``src_onnx`` to ``dst_onnx`` (may be the same folder)."""
    transform = TRANSFORMS[dtype]
    dst_onnx.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst_onnx) as tmp:
        for spec in native_graphs(cfg.dims).values():
            src, out = src_onnx / spec.filename, Path(tmp) / spec.filename
            if fuse:
                fused = Path(tmp) / f"fused-{spec.filename}"
                fuse_graph(src, fused, cfg)
                src = fused
            default = OPTIONS[dtype]
            transform(src, out, spec.name, options or (default() if default is not None else None))
            onnxfile.split(out)  # the transforms write single files; the folder holds graph + weights
            for part in (out, onnxfile.data_file(out)):
                part.replace(dst_onnx / part.name)


def _check_options(dtype: str, options) -> None:
    wanted = OPTIONS[dtype]
    if options is not None and (wanted is None or not isinstance(options, wanted)):
        raise ValueError(
            f"options for {dtype} must be {wanted.__name__ if wanted else 'None'}, "
            f"got {type(options).__name__}"
        )


def _fp32_config(folder: Path) -> RuntimeConfig:
    cfg = RuntimeConfig.load(folder)
    if cfg.precision != "fp32":
        raise ValueError(f"{folder}: holds {cfg.precision} graphs; variants are made from an fp32 export")
    return cfg


def variant_config(cfg: RuntimeConfig, dtype: str, options=None) -> RuntimeConfig:
    """``cfg`` of an fp32 folder as its ``dtype`` variant records it: the precision, and the int8 recipe."""
    recipe = (options or Int8Options()).recipe if dtype == "int8" else ""
    return replace(cfg, precision=dtype, int8_recipe=recipe)


def apply_precision(
    folder: str | Path, dtype: str, options: Int8Options | Fp16Options | None = None, *, fuse: bool = False
) -> RuntimeConfig:
    """Turn the fp32 graphs of model folder ``folder`` into ``dtype`` graphs in place; returns the new config
    (saved to the folder's ``florence2_config.json``, whose ``precision`` records the variant).

    options: :class:`Int8Options` / :class:`Fp16Options` (None: the defaults). fuse: apply :func:`fuse_graph`
    first (off by default: no measured gain on CPU, see the README).
    """
    check_dtype(dtype)
    _check_options(dtype, options)
    folder = Path(folder)
    cfg = _fp32_config(folder)
    if dtype == "fp32" and not fuse:
        return cfg
    _convert_graphs(folder / ONNX_DIR, folder / ONNX_DIR, cfg, dtype, options, fuse)
    cfg = variant_config(cfg, dtype, options)
    cfg.save(folder)
    return cfg


def convert_folder(
    src: str | Path,
    dst: str | Path,
    dtype: str,
    options: Int8Options | Fp16Options | None = None,
    *,
    fuse: bool = False,
    overwrite: bool = False,
) -> RuntimeConfig:
    """Write a ``dtype`` copy of the fp32 model folder ``src`` to ``dst``; needs onnx and onnxruntime, not PyTorch.

    Every file but the graphs is copied unchanged; ``florence2_config.json`` records the precision.
    options and fuse: as in :func:`apply_precision`.
    """
    check_dtype(dtype)
    _check_options(dtype, options)
    src, dst = Path(src), Path(dst)
    cfg = _fp32_config(src)
    if dst.resolve() == src.resolve():
        raise ValueError(f"{dst}: the output folder must differ from the input folder")
    if dst.exists() and any(dst.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{dst}: folder exists and is not empty (pass overwrite=True / --overwrite)"
            )
        shutil.rmtree(dst)
    graphs = {spec.filename for spec in native_graphs(cfg.dims).values()}
    graphs |= {onnxfile.data_file(name).name for name in graphs}
    shutil.copytree(
        src,
        dst,
        dirs_exist_ok=True,
        ignore=lambda d, names: [n for n in names if Path(d).name == ONNX_DIR and n in graphs],
    )
    _convert_graphs(src / ONNX_DIR, dst / ONNX_DIR, cfg, dtype, options, fuse)
    cfg = variant_config(cfg, dtype, options)
    cfg.save(dst)
    return cfg


__all__ = [
    "DTYPES",
    "FP16_BLOCKED_OPS",
    "VARIANT_TOLERANCE",
    "Fp16Options",
    "Int8Options",
    "apply_precision",
    "convert_folder",
    "fuse_graph",
    "gemm_to_matmul",
    "to_fp16",
    "to_int8",
]
