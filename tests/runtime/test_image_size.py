"""Image sizes: one type (``ImageSize``, width first), one check, and square model inputs only.

transformers' Florence-2 vision tower reshapes its patch tokens into a square map, so a checkpoint whose
processor resizes to a non-square size is refused at load (and at export: tests/export/test_checkpoints.py), with
a message that says why.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from florence2_runtime.engine.config import CONFIG_FILE, RuntimeConfig, square_image_size
from florence2_runtime.engine.onnx_community import community_runtime_config
from florence2_runtime.errors import ModelFileError
from florence2_runtime.inputs.encoded import EncodedImage
from florence2_runtime.inputs.image_size import ImageSize


@pytest.mark.parametrize(
    "value, expected",
    [
        ((640, 480), (640, 480)),
        ([3, 7], (3, 7)),
        ((np.int64(5), np.int32(9)), (5, 9)),
        ((640.0, 480.0), (640, 480)),
        (ImageSize(2, 1), (2, 1)),
    ],
)
def test_image_size_of_accepts_pairs_of_positive_whole_numbers(value, expected):
    size = ImageSize.of(value)
    assert size == expected and type(size.width) is int and type(size.height) is int
    assert (size.width, size.height) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        5,
        (5,),
        (1, 2, 3),
        (0, 5),
        (5, -1),
        (1.5, 2),
        (True, 3),
        (1, float("nan")),
        ("1", 2),
        (10**400, 2.0),
    ],
)
def test_image_size_of_refuses_anything_else_with_one_message(value):
    with pytest.raises(ValueError, match=r"image_size must be \(width, height\): two positive whole numbers"):
        ImageSize.of(value)


def test_every_layer_holds_the_same_named_size():
    encoded = EncodedImage(np.zeros((2, 3), np.float32), (640, 480), "m")
    assert isinstance(encoded.image_size, ImageSize) and encoded.image_size.width == 640
    cfg = _config(ImageSize(64, 64))
    assert isinstance(cfg.image_size, ImageSize) and isinstance(cfg.dims.image_size, ImageSize)


def _config(image_size) -> RuntimeConfig:
    return RuntimeConfig(
        d_model=8,
        vocab_size=10,
        encoder_layers=1,
        decoder_layers=1,
        encoder_heads=1,
        decoder_heads=1,
        max_position_embeddings=32,
        num_image_tokens=5,
        image_token_id=9,
        image_size=image_size,
    )


def test_runtime_config_round_trips_width_first(tmp_path):
    cfg = _config((128, 128))
    cfg.save(tmp_path)
    assert json.loads((tmp_path / CONFIG_FILE).read_text())["image_size"] == [128, 128]
    assert RuntimeConfig.load(tmp_path) == cfg


def test_square_image_size_names_the_rule():
    assert square_image_size((96, 96)) == ImageSize(96, 96)
    with pytest.raises(ValueError, match=r"96x128 \(width x height\).*square images only"):
        square_image_size((96, 128))


def test_a_non_square_runtime_config_is_refused_at_load(tmp_path):
    with pytest.raises(ValueError, match="square images only"):
        _config((96, 128))
    d = _config((128, 128)).to_dict()
    d["image_size"] = [96, 128]
    (tmp_path / CONFIG_FILE).write_text(json.dumps(d))
    with pytest.raises(
        ModelFileError, match=rf"{CONFIG_FILE}.*96x128 \(width x height\).*square images only"
    ):
        RuntimeConfig.load(tmp_path)
    d["image_size"] = "big"
    (tmp_path / CONFIG_FILE).write_text(json.dumps(d))
    with pytest.raises(ModelFileError, match="image_size must be"):
        RuntimeConfig.load(tmp_path)


def test_a_non_square_onnx_community_folder_is_refused_at_load(tiny_community_folder, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_community_folder, folder, ignore=shutil.ignore_patterns("onnx"))
    pre_path = folder / "preprocessor_config.json"
    pre = json.loads(pre_path.read_text())
    community_runtime_config(folder)  # as exported: square
    pre["size"] = {"height": 128, "width": 96}
    pre_path.write_text(json.dumps(pre))
    with pytest.raises(ModelFileError, match=r"preprocessor_config.json.*size.*96x128.*square images only"):
        community_runtime_config(folder)


def test_a_non_square_native_folder_is_refused_by_from_pretrained(tiny_folder, tmp_path):
    from florence2_runtime import Florence2

    folder = tmp_path / "model"
    shutil.copytree(tiny_folder, folder, ignore=shutil.ignore_patterns("onnx"))
    (folder / "onnx").symlink_to(tiny_folder / "onnx")
    d = json.loads((folder / CONFIG_FILE).read_text())
    d["image_size"] = [d["image_size"][0], d["image_size"][1] // 2]
    (folder / CONFIG_FILE).write_text(json.dumps(d))
    with pytest.raises(ModelFileError, match="square images only"):
        Florence2.from_pretrained(folder)
