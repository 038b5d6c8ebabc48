"""The rounding behind benchmarks/precision_tiny.py's ``weights:BITS:BLOCK`` control (``round_to_bits``)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tests.helpers.paths import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
precision_tiny = pytest.importorskip("precision_tiny")


@pytest.mark.parametrize("block", [0, 16, 32, 7])
@pytest.mark.parametrize("axis", [0, 1])
def test_round_to_bits_is_symmetric_rounding_per_block(block, axis):
    rng = np.random.default_rng(block)
    w = rng.standard_normal((40, 24)).astype(np.float32) * rng.uniform(0.1, 3, (1, 24)).astype(np.float32)
    w = w if axis == 0 else w.T.copy()
    q = precision_tiny.round_to_bits(w, 8, block, axis)
    assert q.shape == w.shape and q.dtype == np.float32
    moved_w, moved_q = np.moveaxis(w, axis, -1), np.moveaxis(q, axis, -1)
    size = block or moved_w.shape[-1]
    for start in range(0, moved_w.shape[-1], size):
        bw, bq = moved_w[..., start : start + size], moved_q[..., start : start + size]
        scale = np.abs(bw).max(axis=-1, keepdims=True) / 127
        levels = bq / scale
        np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)  # integers times one scale
        assert np.abs(levels).max() <= 127 + 1e-3
        assert np.all(np.abs(bq - bw) <= scale / 2 * (1 + 1e-5))  # nearest level
        np.testing.assert_allclose(np.abs(bq).max(-1), np.abs(bw).max(-1), rtol=1e-6)  # block max exact


def test_round_to_bits_keeps_zero_blocks():
    w = np.zeros((32, 4), np.float32)
    assert np.array_equal(precision_tiny.round_to_bits(w, 8, 16, 0), w)
