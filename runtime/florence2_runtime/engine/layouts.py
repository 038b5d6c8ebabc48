"""The model-folder layouts the runtime reads, and which one a folder is in.

=================  ==========================================================  ============================
layout             graphs in ``onnx/`` (see :mod:`florence2_runtime.engine.graphs`)    runtime config
=================  ==========================================================  ============================
native             vision_encoder, text_encoder, decoder + embed_tokens.npy     florence2_config.json
onnx-community     vision_encoder, embed_tokens, encoder_model, decoder_model   florence2_config.json, else
                   + decoder_with_past_model or decoder_model_merged            config.json & co.
=================  ==========================================================  ============================

:func:`layout_of` picks the layout from the files present (:func:`~florence2_runtime.engine.graphs.detect_layout`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..inputs.tokenizer import Florence2Tokenizer
from .config import CONFIG_FILE, RuntimeConfig
from .graphs import ONNX_DIR, detect_layout
from .native import DecoderInference, Sessions
from .onnx_community import (
    CommunityDecoderInference,
    CommunitySessions,
    community_runtime_config,
    community_tokenizer,
)


@dataclass(frozen=True)
class Layout:
    """How to load and run one folder layout."""

    name: str
    load_config: Callable[[Path], RuntimeConfig]
    load_tokenizer: Callable[[Path], Florence2Tokenizer]  # tokenizer.json -> the runtime's tokenizer
    sessions: type  # (folder, cfg, providers, session_options) -> the layout's sessions
    inference: type  # (sessions, cross, encoder_mask, rows) -> an ``Inference`` (for host.HostEngine)
    io_binding: bool  # whether iobinding.DeviceEngine can run it


LAYOUTS: dict[str, Layout] = {
    "native": Layout(
        "native",
        RuntimeConfig.load,
        Florence2Tokenizer.from_file,
        Sessions,
        DecoderInference,
        io_binding=True,
    ),
    "onnx-community": Layout(
        "onnx-community",
        community_runtime_config,
        community_tokenizer,
        CommunitySessions,
        CommunityDecoderInference,
        io_binding=False,
    ),
}


def layout_of(folder: str | Path) -> Layout:
    """The layout of model folder ``folder``, from the graph files in its ``onnx/``.

    With no marker graph present: native if ``florence2_config.json`` exists, onnx-community if only
    transformers' ``config.json`` does (so that the error names a graph file of the right layout).
    """
    folder = Path(folder)
    name = detect_layout(folder / ONNX_DIR)
    if name is None:
        name = (
            "onnx-community"
            if not (folder / CONFIG_FILE).is_file() and (folder / "config.json").is_file()
            else "native"
        )
    return LAYOUTS[name]
