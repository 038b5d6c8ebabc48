"""The IO-binding path (device-resident K/V) gives the same tokens as the plain path, on the CPU provider."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from florence2_runtime import Florence2
from florence2_runtime.engine.host import HostEngine
from florence2_runtime.engine.iobinding import BoundDecoderInference, DeviceEngine, device_of
from florence2_runtime.model import processor_inputs
from tests.helpers.images import make_test_image

IMAGES = [make_test_image(w, h, seed=i) for i, (w, h) in enumerate([(160, 120), (40, 200), (128, 128)])]
TEXTS = ["<OD>", "<CAPTION_TO_PHRASE_GROUNDING>a red ball", "<MORE_DETAILED_CAPTION>"]


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("batch", [1, 3])
def test_tokens_equal_the_plain_path(tiny_model, bound_model, num_beams, batch):
    kwargs = dict(max_new_tokens=20, num_beams=num_beams)
    expected = tiny_model.generate(IMAGES[:batch], TEXTS[:batch], **kwargs)
    got = bound_model.generate(IMAGES[:batch], TEXTS[:batch], **kwargs)
    np.testing.assert_array_equal(got, expected)


def test_the_bound_path_is_the_one_used(bound_model, tiny_model):
    assert isinstance(tiny_model.engine, HostEngine)  # CPU default: plain path
    assert isinstance(bound_model.engine, DeviceEngine) and bound_model.engine.gather is not None
    pixel_values, text_ids, text_mask = processor_inputs(bound_model, IMAGES[:1], TEXTS[:1])
    features = bound_model.engine.encode_images(pixel_values, to_host=False)
    assert type(features).__name__ == "OrtValue"
    inference = bound_model.engine.start(features, text_ids, text_mask, num_beams=2)
    assert isinstance(inference, BoundDecoderInference)
    # K/V live in OrtValues, never as numpy arrays
    assert all(type(v).__name__ == "OrtValue" for v in inference.past + list(inference.fixed.values()))
    logits = inference.logits(np.full((2, 1), bound_model.config.decoder_start_token_id))
    assert logits.shape == (2, bound_model.config.vocab_size) and inference.past_length == 1
    assert inference.past[0].shape()[2] == 1


def test_folder_without_kv_gather_falls_back_to_host_gathers(tiny_folder, tiny_model, tmp_path):
    old = tmp_path / "old-export"
    shutil.copytree(tiny_folder, old)
    (old / "onnx" / "kv_gather.onnx").unlink()
    model = Florence2.from_pretrained(old, io_binding=True)
    assert model.engine.gather is None
    kwargs = dict(max_new_tokens=16, num_beams=3)
    np.testing.assert_array_equal(
        model.generate(IMAGES[:2], TEXTS[:2], **kwargs), tiny_model.generate(IMAGES[:2], TEXTS[:2], **kwargs)
    )


@pytest.mark.parametrize(
    "providers, expected",
    [
        ([("CUDAExecutionProvider", {"device_id": 1}), ("CPUExecutionProvider", {})], ("cuda", 1)),
        ([("TensorrtExecutionProvider", {}), ("CUDAExecutionProvider", {})], ("cuda", 0)),
        ([("CPUExecutionProvider", {})], ("cpu", 0)),
    ],
)
def test_device_of_providers(providers, expected):
    assert device_of(providers) == expected


def test_device_of_unknown_provider_is_a_clear_error():
    with pytest.raises(ValueError, match="OpenVINOExecutionProvider"):
        device_of([("OpenVINOExecutionProvider", {})])


@pytest.mark.parametrize("format_version", [1, None])
def test_a_folder_of_an_older_format_is_one_error_naming_the_reexport(tiny_folder, tmp_path, format_version):
    """No release wrote a folder before format 2 (decoder fed token ids, cross K/V per beam): such a folder,
    or one without a format_version, is refused with the command that writes a current one."""
    import json

    from florence2_runtime.errors import ModelFileError

    old = tmp_path / "old"
    shutil.copytree(tiny_folder, old)
    cfg_path = old / "florence2_config.json"
    cfg = {k: v for k, v in json.loads(cfg_path.read_text()).items() if k != "format_version"}
    cfg_path.write_text(json.dumps(cfg if format_version is None else {**cfg, "format_version": 1}))
    with pytest.raises(
        ModelFileError, match=r"folder format 1 .* again with 'florence2 export CHECKPOINT OUT'"
    ):
        Florence2.from_pretrained(old)
