"""Folders in the onnx-community layout: detection, the runtime config read from transformers' files, the
merged decoder alone, precision-suffixed files, missing files named; answers equal to the native layout's."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from florence2_runtime import Florence2
from florence2_runtime.engine.config import RuntimeConfig
from florence2_runtime.engine.graphs import detect_layout
from florence2_runtime.engine.layouts import layout_of
from florence2_runtime.engine.onnx_community import community_runtime_config
from florence2_runtime.errors import ModelFileError
from tests.helpers.images import make_test_image

IMAGES = [(160, 120), (33, 200), (300, 31)]
TEXTS = [
    "<OD>",
    "<CAPTION_TO_PHRASE_GROUNDING>a red car",
    "<REGION_TO_DESCRIPTION><loc_100><loc_200><loc_500><loc_700>",
]


def _images():
    return [make_test_image(w, h, seed=i) for i, (w, h) in enumerate(IMAGES)]


@pytest.fixture(scope="module")
def tiny_community_model(tiny_community_folder):
    return Florence2.from_pretrained(tiny_community_folder)


def _copy(folder, tmp_path, drop=(), rename=None):
    """A copy of ``folder`` without the ``onnx/`` files in ``drop``; ``rename(name)`` renames the others."""
    out = tmp_path / "model"
    shutil.copytree(folder, out)
    for name in drop:
        (out / "onnx" / name).unlink()
    if rename:
        for path in list((out / "onnx").iterdir()):
            path.rename(path.with_name(rename(path.name)))
    return out


def test_layout_detection(tiny_community_folder, tiny_folder, tmp_path):
    assert layout_of(tiny_community_folder).name == "onnx-community"
    assert layout_of(tiny_folder).name == "native"
    assert detect_layout(tmp_path) is None


def test_runtime_config_from_transformers_files(tiny_community_folder, tiny_folder):
    built = community_runtime_config(tiny_community_folder)
    native = RuntimeConfig.load(tiny_folder)
    same = [
        "d_model",
        "vocab_size",
        "encoder_layers",
        "decoder_layers",
        "encoder_heads",
        "decoder_heads",
        "max_position_embeddings",
        "num_image_tokens",
        "image_token_id",
        "bos_token_id",
        "pad_token_id",
        "eos_token_id",
        "decoder_start_token_id",
        "image_size",
        "image_mean",
        "image_std",
        "rescale_factor",
        "resample",
        "task_prompts_without_inputs",
        "task_prompts_with_input",
        "banned_grounding_tokens",
    ]
    assert {k: getattr(built, k) for k in same} == {k: getattr(native, k) for k in same}


def test_merged_decoder_alone(tiny_community_folder, tiny_community_model, tmp_path):
    """decoder_model_merged (the file transformers.js reads) gives the ids of the two-decoder pair."""
    folder = _copy(
        tiny_community_folder, tmp_path, drop=["decoder_model.onnx", "decoder_with_past_model.onnx"]
    )
    model = Florence2.from_pretrained(folder)
    assert model.engine.sessions.merged
    for num_beams in (1, 3):
        kwargs = dict(max_new_tokens=20, num_beams=num_beams)
        np.testing.assert_array_equal(
            model.generate(_images(), TEXTS, **kwargs),
            tiny_community_model.generate(_images(), TEXTS, **kwargs),
        )


def test_precision_suffixed_files_are_picked_up(tiny_community_folder, tiny_community_model, tmp_path):
    folder = _copy(tiny_community_folder, tmp_path, rename=lambda n: n.replace(".onnx", "_quantized.onnx"))
    model = Florence2.from_pretrained(folder)
    assert all(p.name.endswith("_quantized.onnx") for p in model.engine.sessions.files)
    kwargs = dict(max_new_tokens=15, num_beams=3)
    np.testing.assert_array_equal(
        model.generate(_images(), TEXTS, **kwargs), tiny_community_model.generate(_images(), TEXTS, **kwargs)
    )


@pytest.mark.parametrize(
    "drop, named",
    [
        (["embed_tokens.onnx"], "embed_tokens.onnx"),
        (["vision_encoder.onnx"], "vision_encoder.onnx"),
        (["decoder_with_past_model.onnx", "decoder_model_merged.onnx"], "decoder_with_past_model.onnx"),
        (["decoder_model.onnx", "decoder_model_merged.onnx"], "decoder_model.onnx"),
    ],
)
def test_missing_file_is_named(tiny_community_folder, tmp_path, drop, named):
    folder = _copy(tiny_community_folder, tmp_path, drop=drop)
    with pytest.raises(ModelFileError, match=named):
        Florence2.from_pretrained(folder)


def test_missing_config_is_named(tiny_community_folder, tmp_path):
    folder = _copy(tiny_community_folder, tmp_path)
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(ModelFileError, match=r"preprocessor_config.json"):
        Florence2.from_pretrained(folder)


@pytest.mark.parametrize("key, value", [("image_mean", [0.5, 0.5]), ("image_std", "0.5")])
def test_normalisation_that_is_not_three_numbers_is_named(tiny_community_folder, tmp_path, key, value):
    """Two means (or a string) would only fail at the first image, inside numpy; the load names the key."""
    folder = _copy(tiny_community_folder, tmp_path)
    path = folder / "preprocessor_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), key: value}))
    with pytest.raises(ModelFileError, match=rf"preprocessor_config.json: {key} must be three numbers"):
        community_runtime_config(folder)


def test_run_matches_the_native_export(tiny_community_model, tiny_model):
    image = make_test_image(211, 97, seed=3)
    for task, kwargs in [("<OD>", {}), ("<CAPTION_TO_PHRASE_GROUNDING>", {"text": "a red ball"})]:
        assert tiny_community_model.run(image, task, max_new_tokens=20, **kwargs) == tiny_model.run(
            image, task, max_new_tokens=20, **kwargs
        )
