"""``Florence2Result.masks()``: boolean masks at the image size, equal to supervision's, without supervision."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from florence2_runtime import Florence2Result
from florence2_runtime.tasks.masks import polygon_mask
from tests.helpers.blocked_imports import source
from tests.helpers.images import make_test_image

sv = pytest.importorskip(
    "supervision", reason="the reference masks come from supervision (the 'supervision' extra)"
)


def random_polygons(n: int, seed: int = 0):
    """Convex, star-shaped and self-intersecting polygons, inside and across the image border."""
    rng = np.random.default_rng(seed)
    for trial in range(n):
        w, h = (int(v) for v in rng.integers(1, 70, 2))
        k = int(rng.integers(3, 12))
        if trial % 3 == 0:
            angles = np.sort(rng.uniform(0, 2 * np.pi, k))
            radii = rng.uniform(1, max(w, h), k)
            pts = np.array([w / 2, h / 2]) + np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)
        else:
            pts = rng.integers(-15, max(w, h) + 15, (k, 2))
        yield pts.astype(np.int32), (w, h)


def test_polygon_masks_equal_supervision_pixel_for_pixel():
    for pts, size in random_polygons(1500):
        np.testing.assert_array_equal(
            polygon_mask(pts, size),
            sv.polygon_to_mask(pts, size).astype(bool),
            err_msg=f"{size} {pts.tolist()}",
        )


def test_result_masks_equal_to_supervision_mask(tiny_model):
    image = make_test_image(160, 120, seed=3)
    results = [
        tiny_model.segment_phrase(image, "the red ball", max_new_tokens=60, num_beams=3),
        tiny_model.segment_region(image, (10, 12, 90, 70), max_new_tokens=60, num_beams=3),
    ]
    hand_built = {
        "<REFERRING_EXPRESSION_SEGMENTATION>": {
            "polygons": [
                [[10.5, 10.5, 80.5, 12.5, 40.5, 90.5], [100.5, 5.5, 150.5, 5.5, 150.5, 60.5, 100.5, 60.5]],
                [[1.0, 2.0, 3.0, 4.0]],  # two points: no mask, as in supervision
                [[0.5, 0.5, 159.5, 0.5, 0.5, 119.5, 159.5, 119.5]],
            ],  # self-intersecting
            "labels": ["", "", ""],
        }
    }
    results.append(Florence2Result.from_dict(hand_built, (160, 120)))
    for result in results:
        masks = result.masks()
        assert masks.dtype == bool and masks.shape[1:] == (120, 160)
        expected = result.to_supervision().mask
        if expected is None:
            assert masks.shape[0] == 0
        else:
            np.testing.assert_array_equal(masks, expected)
    assert results[-1].masks().shape == (2, 120, 160)
    assert Florence2Result.from_dict({"<CAPTION>": "a ball"}, (160, 120)).masks().shape == (0, 120, 160)


def test_masks_need_no_supervision():
    script = (
        source(("supervision", "cv2"))
        + """
from florence2_runtime import Florence2Result
r = Florence2Result.from_dict({'<REGION_TO_SEGMENTATION>': {'polygons': [[[1, 1, 9, 1, 9, 9]]], 'labels': ['']}},
                              (12, 10))
print(int(r.masks().sum()))
"""
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert int(out) == int(sv.polygon_to_mask(np.array([[1, 1], [9, 1], [9, 9]]), (12, 10)).sum())
