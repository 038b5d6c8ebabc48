"""The onnx-community layout: export, layout detection, file variants, and ids equal to transformers'."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from florence2_export.verify import make_test_image
from florence2_runtime import Florence2
from florence2_runtime.engine.config import RuntimeConfig
from florence2_runtime.engine.graphs import community_graphs, detect_layout
from florence2_runtime.engine.layouts import layout_of
from florence2_runtime.engine.onnx_community import community_runtime_config
from florence2_runtime.errors import ModelFileError

IMAGES = [(160, 120), (33, 200), (300, 31)]
TEXTS = [
    "<OD>",
    "<CAPTION_TO_PHRASE_GROUNDING>a red car",
    "<REGION_TO_DESCRIPTION><loc_100><loc_200><loc_500><loc_700>",
]


def _images():
    return [make_test_image(w, h, seed=i) for i, (w, h) in enumerate(IMAGES)]


def _reference(hf_model, hf_processor, **kwargs) -> np.ndarray:
    batch = hf_processor(text=TEXTS, images=_images(), return_tensors="pt", padding=True)
    with torch.no_grad():
        return hf_model.generate(**batch, **kwargs).numpy()


@pytest.fixture(scope="module")
def community_model(community_folder):
    return Florence2.from_pretrained(community_folder)


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


def test_export_writes_the_layout(community_folder):
    names = {p.name for p in (community_folder / "onnx").iterdir()}
    assert names == {
        spec.filename for spec in community_graphs(community_runtime_config(community_folder).dims).values()
    }
    for name in (
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
    ):
        assert (community_folder / name).is_file(), name
    assert not (
        community_folder / "florence2_config.json"
    ).exists()  # the runtime config comes from config.json & co


def test_layout_detection(community_folder, onnx_folder, tmp_path):
    assert layout_of(community_folder).name == "onnx-community"
    assert layout_of(onnx_folder).name == "native"
    assert detect_layout(tmp_path) is None


def test_runtime_config_from_transformers_files(community_folder, onnx_folder):
    built = community_runtime_config(community_folder)
    native = RuntimeConfig.load(onnx_folder)
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


@pytest.mark.parametrize("num_beams", [1, 3])
def test_ids_match_transformers(community_model, hf_model, hf_processor, num_beams):
    kwargs = dict(max_new_tokens=25, num_beams=num_beams)
    expected = _reference(hf_model, hf_processor, **kwargs)
    np.testing.assert_array_equal(community_model.generate(_images(), TEXTS, **kwargs), expected)
    assert not community_model.engine.sessions.merged


def test_merged_decoder_alone(community_folder, community_model, tmp_path):
    """decoder_model_merged (the file transformers.js reads) gives the ids of the two-decoder pair."""
    folder = _copy(community_folder, tmp_path, drop=["decoder_model.onnx", "decoder_with_past_model.onnx"])
    model = Florence2.from_pretrained(folder)
    assert model.engine.sessions.merged
    for num_beams in (1, 3):
        kwargs = dict(max_new_tokens=20, num_beams=num_beams)
        np.testing.assert_array_equal(
            model.generate(_images(), TEXTS, **kwargs), community_model.generate(_images(), TEXTS, **kwargs)
        )


def test_precision_suffixed_files_are_picked_up(community_folder, community_model, tmp_path):
    folder = _copy(community_folder, tmp_path, rename=lambda n: n.replace(".onnx", "_quantized.onnx"))
    model = Florence2.from_pretrained(folder)
    assert all(p.name.endswith("_quantized.onnx") for p in model.engine.sessions.files)
    kwargs = dict(max_new_tokens=15, num_beams=3)
    np.testing.assert_array_equal(
        model.generate(_images(), TEXTS, **kwargs), community_model.generate(_images(), TEXTS, **kwargs)
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
def test_missing_file_is_named(community_folder, tmp_path, drop, named):
    folder = _copy(community_folder, tmp_path, drop=drop)
    with pytest.raises(ModelFileError, match=named):
        Florence2.from_pretrained(folder)


def test_missing_config_is_named(community_folder, tmp_path):
    folder = _copy(community_folder, tmp_path)
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(ModelFileError, match=r"preprocessor_config.json"):
        Florence2.from_pretrained(folder)


@pytest.mark.parametrize("key, value", [("image_mean", [0.5, 0.5]), ("image_std", "0.5")])
def test_normalisation_that_is_not_three_numbers_is_named(community_folder, tmp_path, key, value):
    """Two means (or a string) would only fail at the first image, inside numpy; the load names the key."""
    folder = _copy(community_folder, tmp_path)
    path = folder / "preprocessor_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), key: value}))
    with pytest.raises(ModelFileError, match=rf"preprocessor_config.json: {key} must be three numbers"):
        community_runtime_config(folder)


def test_folder_like_the_published_ones(community_folder, community_model, tmp_path):
    """onnx-community/Florence-2-* ship the original remote-code config.json, a tokenizer without <image>
    and no prompt tables: the runtime builds the same config (default prompts) and gives the same ids."""
    from florence2_export.checkpoints.original import original_config_dict

    folder = _copy(community_folder, tmp_path)
    native = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(original_config_dict(native)))
    tok = json.loads((folder / "tokenizer.json").read_text())
    tok["added_tokens"] = [a for a in tok["added_tokens"] if a["content"] != "<image>"]
    (folder / "tokenizer.json").write_text(json.dumps(tok))
    pre = json.loads((folder / "preprocessor_config.json").read_text())
    for key in ("task_prompts_without_inputs", "task_prompts_with_input", "image_seq_length"):
        pre.pop(key)
    (folder / "preprocessor_config.json").write_text(json.dumps(pre))
    (folder / "processor_config.json").unlink()

    model = Florence2.from_pretrained(folder)
    assert model.tokenizer.image_token_id == model.config.vocab_size  # added after the original vocabulary
    assert model.config.num_image_tokens == community_model.config.num_image_tokens
    kwargs = dict(max_new_tokens=20, num_beams=3)
    np.testing.assert_array_equal(
        model.generate(_images(), TEXTS, **kwargs), community_model.generate(_images(), TEXTS, **kwargs)
    )


def test_run_matches_the_native_export(community_model, onnx_model):
    image = make_test_image(211, 97, seed=3)
    for task, kwargs in [("<OD>", {}), ("<CAPTION_TO_PHRASE_GROUNDING>", {"text": "a red ball"})]:
        assert community_model.run(image, task, max_new_tokens=20, **kwargs) == onnx_model.run(
            image, task, max_new_tokens=20, **kwargs
        )


def test_export_rejects_an_unknown_layout(tiny_checkpoint, tmp_path):
    from florence2_export import export

    with pytest.raises(ValueError, match="layout"):
        export(tiny_checkpoint, tmp_path / "out", layout="optimum")


def test_cli_takes_the_layout():
    from florence2_runtime.cli import build_parser

    args = build_parser().parse_args(["export", "src", "out", "--layout", "onnx-community"])
    assert args.layout == "onnx-community"
