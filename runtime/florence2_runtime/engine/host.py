"""The host engine: the layout's onnxruntime sessions on numpy arrays in host memory (both layouts).

Implements :class:`~.interface.Engine` for the CPU and the other host-memory providers (OpenVINO, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ..generation import Inference


class HostEngine:
    """:class:`~.interface.Engine` over ``sessions`` (native ``Sessions`` or ``CommunitySessions``).

    inference: the layout's ``Inference`` class, ``(sessions, cross, encoder_mask, rows=None)``
    (:attr:`.layouts.Layout.inference`)."""

    def __init__(self, sessions: Any, inference: Callable[..., Inference]):
        self.sessions = sessions
        self.config = sessions.cfg
        self._inference = inference

    @property
    def providers(self) -> list[str]:
        return self.sessions.providers

    @property
    def files(self) -> list[Path]:
        return self.sessions.files

    def encode_images(self, pixel_values: np.ndarray, *, to_host: bool = True) -> np.ndarray:
        """pixel_values [B, 3, H, W] float32 -> image features [B, I, D] (always on the host here)."""
        return self.sessions.encode_images(pixel_values)

    def encode_text(
        self, text_ids: np.ndarray, text_mask: np.ndarray, features: np.ndarray, *, to_host: bool = True
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """text ids, mask [B, T], features [B, I, D] -> (cross K/V, encoder mask [B, I + T])."""
        return self.sessions.encode_text(text_ids, text_mask, features)

    def decoder(self, cross: list[np.ndarray], encoder_mask: np.ndarray, num_beams: int = 1) -> Inference:
        """The decoder state, ``num_beams`` rows per item (cross K/V and mask: one per item)."""
        return self._inference(self.sessions, cross, encoder_mask, rows=encoder_mask.shape[0] * num_beams)

    def start(
        self, features: np.ndarray, text_ids: np.ndarray, text_mask: np.ndarray, num_beams: int = 1
    ) -> Inference:
        # no local reference: with beams the un-repeated cross K/V would stay alive during decoding
        return self.decoder(*self.encode_text(text_ids, text_mask, features, to_host=False), num_beams)
