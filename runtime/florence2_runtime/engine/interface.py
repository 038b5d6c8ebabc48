"""The one interface through which the model, the CLI commands and the server run an engine.

Two implementations, chosen once by ``Florence2.from_pretrained``:

- :class:`~.host.HostEngine`: the layout's sessions (:mod:`.native`, :mod:`.onnx_community`) on numpy
  arrays in host memory; the CPU and host-memory providers, both layouts.
- :class:`~.iobinding.DeviceEngine`: IO binding keeps image features, cross K/V and the KV cache where the
  model runs (CUDA / TensorRT; native layout).

A request is ``encode_images`` (vision encoder) -> ``encode_text`` (text encoder: cross K/V) -> ``decoder``
(an ``Inference`` for :func:`florence2_runtime.generation.generate`); ``start`` is the last two in one call.
Shapes: pixel_values [B, 3, H, W] float32, image features [B, I, D], text ids / mask [B, T] int64, cross
K/V 2 * decoder_layers tensors, encoder mask [B, I + T] int64.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ..generation import Inference
    from .config import RuntimeConfig


class Engine(Protocol):
    """Runs a model folder's graphs for one request at a time (the decoder state is per request)."""

    config: RuntimeConfig  # the folder's runtime config
    sessions: Any  # the layout's sessions (``native.Sessions`` or ``onnx_community.CommunitySessions``)

    @property
    def providers(self) -> list[str]:
        """The execution providers onnxruntime actually runs the decoder on."""
        ...

    @property
    def files(self) -> list[Path]:
        """The graph files in use."""
        ...

    def encode_images(self, pixel_values: np.ndarray, *, to_host: bool = True) -> Any:
        """pixel_values [B, 3, H, W] float32 -> image features [B, I, D]: a numpy array, or with
        ``to_host=False`` wherever the engine keeps them (an OrtValue on the device) for ``encode_text``."""
        ...

    def encode_text(
        self, text_ids: np.ndarray, text_mask: np.ndarray, features: Any, *, to_host: bool = True
    ) -> tuple[list[Any], np.ndarray]:
        """text ids, mask [B, T] and image features -> (cross K/V, encoder mask [B, I + T] int64); the K/V
        as numpy arrays, or with ``to_host=False`` wherever the engine keeps them for ``decoder``."""
        ...

    def decoder(self, cross: list[Any], encoder_mask: np.ndarray, num_beams: int = 1) -> Inference:
        """The decoder state for encoded inputs: ``batch * num_beams`` rows, an item's beams contiguous."""
        ...

    def start(
        self, features: Any, text_ids: np.ndarray, text_mask: np.ndarray, num_beams: int = 1
    ) -> Inference:
        """``decoder(*encode_text(text_ids, text_mask, features, to_host=False), num_beams)``."""
        ...
