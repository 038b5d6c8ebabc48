"""``florence2_runtime.inputs.images`` on its own: what ``load_image`` and ``preprocess`` refuse, and why.

Pixels against the checkpoint's ``Florence2Processor``: tests/parity/test_preprocess.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from florence2_runtime.inputs.images import load_image, preprocess
from tests.helpers.images import encode, make_test_image


def test_rgb_pil_image_is_passed_through():
    image = make_test_image(10, 10, seed=1)
    assert load_image(image) is image


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((4, 4, 3), np.float32), "uint8"),
        (np.zeros((4, 4, 3), np.int64), "uint8"),
        (np.zeros((4, 4, 2), np.uint8), "channels"),
        (np.zeros((3, 4, 4, 3), np.uint8), "dimensions"),
        (np.zeros((5,), np.uint8), "dimensions"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
        (b"definitely not an image", "decode"),
        (b"", "empty"),
        ("/no/such/file.png", "not found"),
        (12, "unsupported image type int"),
        (None, "unsupported image type NoneType"),
        ([[0, 0, 0]], "unsupported image type list"),
    ],
)
def test_load_image_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        load_image(bad)


def test_load_image_file_errors(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(encode(make_test_image(8, 8), "PNG")[:40])  # truncated
    with pytest.raises(ValueError, match=r"broken.png"):
        load_image(broken)
    with pytest.raises(ValueError, match="folder"):
        load_image(tmp_path)


def test_preprocess_errors():
    rgb = make_test_image(8, 8)
    with pytest.raises(ValueError, match="at least one"):
        preprocess([], size=(8, 8), mean=(0, 0, 0), std=(1, 1, 1))
    with pytest.raises(ValueError, match="RGB"):
        preprocess([rgb.convert("L")], size=(8, 8), mean=(0, 0, 0), std=(1, 1, 1))
    with pytest.raises(ValueError, match="RGB"):
        preprocess([np.zeros((8, 8, 3), np.uint8)], size=(8, 8), mean=(0, 0, 0), std=(1, 1, 1))
    with pytest.raises(ValueError, match="size"):
        preprocess([rgb], size=(0, 8), mean=(0, 0, 0), std=(1, 1, 1))
