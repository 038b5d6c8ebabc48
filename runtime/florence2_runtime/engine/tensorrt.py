"""TensorRT execution provider options: optimisation profiles and engine caching, as pure functions.

TensorRT builds one engine per graph and per optimisation profile; a dynamic axis needs a
(min, opt, max) range, or onnxruntime rebuilds the engine whenever a new shape shows up. The
ranges follow from the model config (image tokens, heads, head size) and the user's limits
(:class:`TensorRTLimits`): batch x beams rows, prompt length, new tokens.

NOT YET VERIFIED ON HARDWARE: TensorRT cannot be installed on the machines this project is built
and tested on. These functions are unit-tested (shapes, strings, option keys); the engines they
describe have not been built. Known risk: the first decoder step runs with a zero-length past
(``past_length`` min 0), which TensorRT accepts as an empty tensor since 8.x but which is untested
here; if it is rejected, raise ``min_past`` and start decoding from a one-token past instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .graphs import GraphSpec, ModelDims


@dataclass(frozen=True)
class TensorRTLimits:
    """The largest (and the typical) request the engines must take; every field is a count."""

    max_batch: int = 1  # images per request
    max_beams: int = 3  # num_beams (rows = batch * beams in the decoder)
    max_prompt_tokens: int = 128  # "<s> prompt </s>" tokens (Florence-2 prompts are short; OCR ones too)
    max_new_tokens: int = 1024  # generated tokens, which bound the self-attention past
    opt_batch: int = 1
    opt_beams: int = 3
    opt_prompt_tokens: int = 16
    opt_new_tokens: int = 64
    min_past: int = 0  # see the module note

    def __post_init__(self):
        for name, value in vars(self).items():
            if not isinstance(value, int) or value < (0 if name == "min_past" else 1):
                raise ValueError(f"TensorRTLimits.{name} must be a positive integer, got {value!r}")
        for opt, top in (
            ("opt_batch", "max_batch"),
            ("opt_beams", "max_beams"),
            ("opt_prompt_tokens", "max_prompt_tokens"),
            ("opt_new_tokens", "max_new_tokens"),
        ):
            if getattr(self, opt) > getattr(self, top):
                raise ValueError(
                    f"TensorRTLimits.{opt} ({getattr(self, opt)}) exceeds {top} ({getattr(self, top)})"
                )


Range = tuple[int, int, int]  # (min, opt, max)
PROFILED_GRAPHS = ("vision_encoder", "text_encoder", "decoder", "kv_gather")  # the native layout's graphs


def axis_ranges(graph: str, dims: ModelDims, limits: TensorRTLimits) -> dict[str, Range]:
    """(min, opt, max) of every symbolic axis of ``graph`` (a role of :func:`graphs.native_graphs` or kv_gather)."""
    img = dims.num_image_tokens
    items = (1, limits.opt_batch, limits.max_batch)
    rows = (1, limits.opt_batch * limits.opt_beams, limits.max_batch * limits.max_beams)
    prompt = (1, limits.opt_prompt_tokens, limits.max_prompt_tokens)
    encoder = (img + 1, img + limits.opt_prompt_tokens, img + limits.max_prompt_tokens)
    # the past after step t holds t tokens; the last step of max_new_tokens sees max_new_tokens of them
    past = (limits.min_past, limits.opt_new_tokens, limits.max_new_tokens)
    table: dict[str, dict[str, Range]] = {
        "vision_encoder": {"batch": items},
        "text_encoder": {"batch": items, "text_length": prompt, "encoder_length": encoder},
        "decoder": {
            "batch": rows,
            "items": items,
            "step_length": (1, 1, 1),
            "encoder_length": encoder,
            "past_length": past,
            "total_length": (past[0] + 1, past[1] + 1, past[2] + 1),
        },
        # one engine for both jobs: repeat cross K/V per beam (length = encoder) and reorder the past
        "kv_gather": {
            "batch": rows,
            "rows": rows,
            "length": (min(past[0], encoder[0]), past[1], max(past[2], encoder[2])),
        },
    }
    if graph not in table:
        raise ValueError(f"no TensorRT profile for graph {graph!r}; known: {', '.join(table)}")
    return table[graph]


def profile_shapes(spec: GraphSpec, dims: ModelDims, limits: TensorRTLimits) -> tuple[dict, dict, dict]:
    """``({input: min shape}, {input: opt shape}, {input: max shape})`` for every input of ``spec``."""
    ranges = axis_ranges(spec.name, dims, limits)
    shapes: tuple[dict, dict, dict] = ({}, {}, {})
    for t in spec.inputs:
        for k in range(3):
            shapes[k][t.name] = tuple(a if isinstance(a, int) else ranges[a][k] for a in t.axes)
    return shapes


def shapes_option(shapes: dict[str, tuple[int, ...]]) -> str:
    """onnxruntime's profile string: ``"name:1x3x768x768,other:2x5"``."""
    return ",".join(f"{name}:{'x'.join(str(d) for d in shape)}" for name, shape in shapes.items())


@dataclass(frozen=True)
class TensorRTSettings:
    """What a user chooses for the TensorRT provider (besides the limits)."""

    cache_dir: str = "trt_cache"  # engines and timing caches; reused across runs (first build takes minutes)
    fp16: bool = (
        True  # fp16 kernels; LayerNorm kept in fp32 (it overflows in fp16 on Florence-2's activations)
    )
    workspace_bytes: int | None = None  # cap on TensorRT's builder workspace (Jetson: keep it small)
    device_id: int = 0
    builder_optimization_level: int = 3
    extra: dict[str, Any] = field(default_factory=dict)  # any other trt_* option, passed through


def provider_options(
    spec: GraphSpec, dims: ModelDims, limits: TensorRTLimits, settings: TensorRTSettings = TensorRTSettings()
) -> dict[str, Any]:
    """Options of ``TensorrtExecutionProvider`` for the session of one graph (profiles only for
    :data:`PROFILED_GRAPHS`)."""
    lo, opt, hi = profile_shapes(spec, dims, limits) if spec.name in PROFILED_GRAPHS else ({}, {}, {})
    cache = str(Path(settings.cache_dir))
    options: dict[str, Any] = {
        "device_id": settings.device_id,
        "trt_fp16_enable": settings.fp16,
        "trt_layer_norm_fp32_fallback": settings.fp16,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": cache,
        "trt_engine_cache_prefix": spec.name,
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": cache,
        "trt_builder_optimization_level": settings.builder_optimization_level,
    }
    if lo:
        options.update(
            trt_profile_min_shapes=shapes_option(lo),
            trt_profile_opt_shapes=shapes_option(opt),
            trt_profile_max_shapes=shapes_option(hi),
        )
    if settings.workspace_bytes is not None:
        options["trt_max_workspace_size"] = int(settings.workspace_bytes)
    options.update(settings.extra)
    return options


TENSORRT = "TensorrtExecutionProvider"


def graph_providers(
    providers: list[tuple[str, dict[str, Any]]], dims: ModelDims, limits: TensorRTLimits | None = None
):
    """A function ``spec -> [(name, options)]`` giving each graph's session its own TensorRT profiles.

    The TensorRT entry's options are :func:`provider_options` for that graph, updated with what the
    user passed (the user's keys win); the other providers are left as they are.
    """
    limits = limits or TensorRTLimits()

    def for_graph(spec: GraphSpec) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for name, user in providers:
            if name == TENSORRT:
                settings = TensorRTSettings(
                    device_id=int(user.get("device_id", 0)),
                    cache_dir=str(user.get("trt_engine_cache_path", "trt_cache")),
                )
                # graphs without profiles (the onnx-community layout's) get engines built per shape seen
                out.append((name, {**provider_options(spec, dims, limits, settings), **user}))
            else:
                out.append((name, user))
        return out

    return for_graph
