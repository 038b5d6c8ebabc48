"""Checkpoints in the original remote-code layout: mapped onto the native model without running their code."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from florence2_export.checkpoints.loading import CheckpointError, load_checkpoint
from florence2_export.checkpoints.original import rename
from florence2_runtime import Florence2
from florence2_runtime.engine.config import RuntimeConfig
from tests.helpers.images import make_test_image
from tests.helpers.original_layout import write_original_checkpoint


@pytest.fixture(scope="module")
def original_checkpoint(tiny_checkpoint, tmp_path_factory):
    """The tiny native checkpoint rewritten in the original layout (pytorch_model.bin, no <image> token,
    remote-code files that raise when imported)."""
    return write_original_checkpoint(tiny_checkpoint, tmp_path_factory.mktemp("original") / "checkpoint")


@pytest.fixture(scope="module")
def original_export(original_checkpoint, tmp_path_factory):
    from florence2_export import export

    out = tmp_path_factory.mktemp("original-onnx") / "model"
    export(original_checkpoint, out, quiet=True)
    return out


def test_every_native_name_maps_back(tiny_checkpoint):
    from safetensors import safe_open

    with safe_open(str(tiny_checkpoint / "model.safetensors"), "pt") as f:
        names = list(f.keys())
    for name in names:
        original = rename(name, to_native=False)
        assert original is not None and not original.startswith("model."), name
        assert rename(original) == name


@pytest.mark.slow
def test_export_of_both_layouts_gives_the_same_tokens(original_export, onnx_folder, onnx_model):
    model = Florence2.from_pretrained(original_export)
    images = [make_test_image(w, h, seed=i) for i, (w, h) in enumerate([(160, 120), (33, 200), (90, 90)])]
    texts = ["<OD>", "<CAPTION_TO_PHRASE_GROUNDING>a red car", "<MORE_DETAILED_CAPTION>"]
    for num_beams in (1, 3):
        kwargs = dict(max_new_tokens=25, num_beams=num_beams)
        np.testing.assert_array_equal(
            model.generate(images, texts, **kwargs), onnx_model.generate(images, texts, **kwargs)
        )
    a, b = RuntimeConfig.load(original_export).to_dict(), RuntimeConfig.load(onnx_folder).to_dict()
    a.pop("source"), b.pop("source")
    assert a == b
    assert (original_export / "tokenizer.json").read_text() == (onnx_folder / "tokenizer.json").read_text()


@pytest.mark.parity
def test_loaded_model_equals_the_native_one(original_checkpoint, hf_model):
    model, processor = load_checkpoint(original_checkpoint)
    assert processor.tokenizer.image_token_id == hf_model.config.image_token_id
    native = hf_model.state_dict()
    for name, tensor in model.state_dict().items():
        if (
            name == "model.language_model.shared.weight"
            or name.endswith("embed_tokens.weight")
            or name == "lm_head.weight"
        ):
            rows = hf_model.config.image_token_id  # the <image> row is zero after the round trip
            torch.testing.assert_close(tensor[:rows], native[name][:rows], rtol=0, atol=0)
            assert not tensor[rows:].any()
        else:
            torch.testing.assert_close(tensor, native[name], rtol=0, atol=0, msg=name)


def _rewrite_bin(folder, edit):
    tensors = torch.load(folder / "pytorch_model.bin", weights_only=True)
    edit(tensors)
    torch.save(tensors, folder / "pytorch_model.bin")


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda t: t.__setitem__("vision_tower.extra.weight", torch.zeros(1)), "vision_tower.extra.weight"),
        (lambda t: t.pop("image_proj_norm.bias"), "image_proj_norm.bias"),
        (lambda t: t["language_model.final_logits_bias"].add_(1.0), "final_logits_bias"),
        (lambda t: t["language_model.lm_head.weight"].mul_(2.0), "lm_head"),
    ],
)
def test_bad_original_checkpoints_are_refused(tiny_checkpoint, tmp_path, edit, words):
    folder = write_original_checkpoint(tiny_checkpoint, tmp_path / "checkpoint")
    _rewrite_bin(folder, edit)
    with pytest.raises(CheckpointError, match=words.replace(".", r"\.")):
        load_checkpoint(folder)


def test_auto_map_without_davit_config_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"auto_map": {"AutoConfig": "x.Y"}, "model_type": "other"})
    )
    with pytest.raises(CheckpointError, match="original remote-code layout"):
        load_checkpoint(tmp_path)
