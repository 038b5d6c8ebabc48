"""The arithmetic of onnxruntime's uint8 x int8 kernels on x86 CPUs without VNNI, in numpy.

The reference for what ``florence2_runtime.engine.int8cpu`` warns about: tests check it against
onnxruntime's own ``MatMulInteger`` where the CPU saturates, and that 7-bit weights never clip.
"""

from __future__ import annotations

import numpy as np


def saturating_u8s8_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` as ``vpmaddubsw`` + ``vpmaddwd`` compute it: a [M, K] uint8, b [K, N] int8 -> int32 [M, N].

    Products of neighbouring k (0 and 1, 2 and 3, ...) are summed and clipped to int16, then the clipped
    pair sums are added in int32 (K is padded with zeros to even).
    """
    a, b = a.astype(np.int32), b.astype(np.int32)
    if a.shape[1] % 2:
        a, b = np.pad(a, ((0, 0), (0, 1))), np.pad(b, ((0, 1), (0, 0)))
    pairs = a[:, 0::2, None] * b[None, 0::2, :] + a[:, 1::2, None] * b[None, 1::2, :]  # [M, K/2, N]
    return np.clip(pairs, -32768, 32767).sum(axis=1, dtype=np.int32)
