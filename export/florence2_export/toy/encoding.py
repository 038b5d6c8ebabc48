"""Training and evaluation examples turned into model tensors, as ``Florence2Processor`` builds them.

Shared by the trainer (:mod:`.train_tiny`) and transformers' side of the evaluation (:mod:`.tiny_eval`);
the tests check it against the processor.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from florence2_runtime.prompts import construct_prompt

from . import tiny

MAX_TARGET_TOKENS = 64


class Encoder:
    """Samples -> model tensors, exactly as ``Florence2Processor`` builds them (tested against it)."""

    def __init__(self, tokenizer, num_image_tokens: int):
        self.tokenizer = tokenizer
        self.image_prefix = [tokenizer.token_to_id(tiny.IMAGE_TOKEN)] * num_image_tokens
        self.pad = tokenizer.token_to_id("<pad>")
        self.mean = np.array(tiny.IMAGE_MEAN, np.float32)
        self.std = np.array(tiny.IMAGE_STD, np.float32)

    def pixels(self, images: Sequence) -> np.ndarray:
        """[B, 3, S, S] float32: the images (already S x S) rescaled and normalised."""
        arr = np.stack([np.asarray(im.convert("RGB"), np.float32) for im in images]) / 255.0
        return ((arr - self.mean) / self.std).transpose(0, 3, 1, 2).copy()

    def prompts(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """input_ids and attention_mask [B, T]: image tokens, then ``<s> prompt </s>``, right-padded."""
        rows = [self.image_prefix + self.tokenizer.encode(construct_prompt(t)).ids for t in texts]
        return self._pad(rows, self.pad)

    def targets(self, targets: Sequence[str]) -> np.ndarray:
        """labels [B, L]: ``<s> target </s>``, padded with -100 (ignored by the loss)."""
        rows = [self.tokenizer.encode(t).ids[:MAX_TARGET_TOKENS] for t in targets]
        return self._pad(rows, -100)[0]

    @staticmethod
    def _pad(rows: list[list[int]], value: int) -> tuple[np.ndarray, np.ndarray]:
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), value, np.int64)
        mask = np.zeros((len(rows), width), np.int64)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = r
            mask[i, :len(r)] = 1
        return ids, mask
