"""TensorRT profiles and options: pure functions, checked against the graphs' shared description.

TensorRT itself cannot be installed here; these tests pin what the runtime would hand to it.
"""

from __future__ import annotations

import json

import pytest

from florence2_runtime.engine.graphs import ModelDims, kv_gather_graph, native_graphs
from florence2_runtime.engine.tensorrt import (
    TensorRTLimits,
    TensorRTSettings,
    axis_ranges,
    graph_providers,
    profile_shapes,
    provider_options,
    shapes_option,
)
from tests.helpers.paths import DATA

BASE = ModelDims(
    image_size=(768, 768),
    num_image_tokens=577,
    d_model=768,
    vocab_size=51289,
    decoder_layers=6,
    decoder_heads=12,
)
LIMITS = TensorRTLimits(
    max_batch=4,
    max_beams=3,
    max_prompt_tokens=64,
    max_new_tokens=256,
    opt_batch=1,
    opt_beams=3,
    opt_prompt_tokens=12,
    opt_new_tokens=32,
)
GRAPHS = {**native_graphs(BASE), "kv_gather": kv_gather_graph(BASE)}


@pytest.mark.parametrize("name", list(GRAPHS))
def test_every_input_gets_ordered_shapes(name):
    spec = GRAPHS[name]
    lo, opt, hi = profile_shapes(spec, BASE, LIMITS)
    assert set(lo) == set(opt) == set(hi) == set(spec.input_names)
    for t in spec.inputs:
        assert len(lo[t.name]) == len(t.axes)
        for a, b, c, axis in zip(lo[t.name], opt[t.name], hi[t.name], t.axes):
            assert a <= b <= c
            if isinstance(axis, int):
                assert a == b == c == axis  # fixed axes (image size, heads, head size) stay fixed


def test_decoder_profile_values():
    lo, opt, hi = profile_shapes(GRAPHS["decoder"], BASE, LIMITS)
    # rows = batch x beams, one new token's embedding each
    assert (lo["inputs_embeds"], opt["inputs_embeds"], hi["inputs_embeds"]) == (
        (1, 1, 768),
        (3, 1, 768),
        (12, 1, 768),
    )
    assert lo["past.0.key"] == (1, 12, 0, 64)  # first step: empty past
    assert hi["past.5.value"] == (12, 12, 256, 64)
    assert hi["cross.0.key"] == (4, 12, 577 + 64, 64)  # one cross K/V per item, shared by its beams
    assert opt["encoder_attention_mask"] == (1, 577 + 12)


def test_vision_profile_is_static_but_batch():
    lo, _opt, hi = profile_shapes(GRAPHS["vision_encoder"], BASE, LIMITS)
    assert lo["pixel_values"] == (1, 3, 768, 768) and hi["pixel_values"] == (4, 3, 768, 768)


def test_profile_string_format():
    assert shapes_option({"a": (1, 3, 768, 768), "b": (2, 5)}) == "a:1x3x768x768,b:2x5"


def test_provider_options_and_user_overrides(tmp_path):
    spec = GRAPHS["text_encoder"]
    opts = provider_options(
        spec, BASE, LIMITS, TensorRTSettings(cache_dir=str(tmp_path), workspace_bytes=1 << 30)
    )
    assert opts["trt_fp16_enable"] is True and opts["trt_layer_norm_fp32_fallback"] is True
    assert opts["trt_engine_cache_enable"] is True and opts["trt_engine_cache_path"] == str(tmp_path)
    assert opts["trt_engine_cache_prefix"] == "text_encoder" and opts["trt_max_workspace_size"] == 1 << 30
    assert opts["trt_profile_max_shapes"].startswith("inputs_embeds:4x64x768,")
    per_graph = graph_providers(
        [
            ("TensorrtExecutionProvider", {"trt_fp16_enable": False}),
            ("CUDAExecutionProvider", {}),
            ("CPUExecutionProvider", {}),
        ],
        BASE,
        LIMITS,
    )
    trt, cuda, cpu = per_graph(GRAPHS["decoder"])
    assert trt[1]["trt_fp16_enable"] is False  # the user's choice wins
    assert (
        trt[1]["trt_engine_cache_prefix"] == "decoder"
        and "past.0.key:1x12x0x64" in trt[1]["trt_profile_min_shapes"]
    )
    assert cuda == ("CUDAExecutionProvider", {}) and cpu == ("CPUExecutionProvider", {})


@pytest.mark.parametrize(
    "kwargs", [dict(max_batch=0), dict(opt_beams=4, max_beams=3), dict(max_new_tokens="8")]
)
def test_bad_limits_are_value_errors(kwargs):
    with pytest.raises(ValueError):
        TensorRTLimits(**kwargs)


def test_unknown_graph_is_a_value_error():
    with pytest.raises(ValueError, match="no TensorRT profile"):
        axis_ranges("mystery", BASE, LIMITS)


def test_ranges_follow_the_real_configs():
    """Image tokens and head sizes come from the model: large has 16 heads of 64, 577 image tokens."""
    text = json.loads((DATA / "florence2_configs.json").read_text())["large"]["text_config"]
    dims = ModelDims(
        (768, 768),
        577,
        text["d_model"],
        text["vocab_size"],
        text["decoder_layers"],
        text["decoder_attention_heads"],
    )
    lo, _, _hi = profile_shapes(native_graphs(dims)["decoder"], dims, LIMITS)
    assert lo["past.0.key"][1:] == (16, 0, 64)
    assert len(lo) == 2 + 4 * dims.decoder_layers


def test_graphs_without_profiles_still_get_caching():
    from florence2_runtime.engine.graphs import community_graphs

    spec = community_graphs(BASE)["embed_tokens"]
    opts = provider_options(spec, BASE, LIMITS)
    assert opts["trt_engine_cache_enable"] is True
    assert not any(k.startswith("trt_profile_") for k in opts)
