"""The IO-binding path (device-resident K/V) gives the same tokens as the plain path, on the CPU provider."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from florence2_export.verify import make_test_image
from florence2_runtime import Florence2
from florence2_runtime.engine.host import HostEngine
from florence2_runtime.engine.iobinding import BoundDecoderInference, DeviceEngine, device_of
from florence2_runtime.model import processor_inputs

IMAGES = [make_test_image(w, h, seed=i) for i, (w, h) in enumerate([(160, 120), (40, 200), (128, 128)])]
TEXTS = ["<OD>", "<CAPTION_TO_PHRASE_GROUNDING>a red ball", "<MORE_DETAILED_CAPTION>"]


@pytest.fixture(scope="module")
def bound_model(onnx_folder):
    return Florence2.from_pretrained(onnx_folder, io_binding=True)


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("batch", [1, 3])
def test_tokens_equal_the_plain_path(onnx_model, bound_model, num_beams, batch):
    kwargs = dict(max_new_tokens=20, num_beams=num_beams)
    expected = onnx_model.generate(IMAGES[:batch], TEXTS[:batch], **kwargs)
    got = bound_model.generate(IMAGES[:batch], TEXTS[:batch], **kwargs)
    np.testing.assert_array_equal(got, expected)


def test_the_bound_path_is_the_one_used(bound_model, onnx_model):
    assert isinstance(onnx_model.engine, HostEngine)  # CPU default: plain path
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


def test_folder_without_kv_gather_falls_back_to_host_gathers(onnx_folder, onnx_model, tmp_path):
    old = tmp_path / "old-export"
    shutil.copytree(onnx_folder, old)
    (old / "onnx" / "kv_gather.onnx").unlink()
    model = Florence2.from_pretrained(old, io_binding=True)
    assert model.engine.gather is None
    kwargs = dict(max_new_tokens=16, num_beams=3)
    np.testing.assert_array_equal(
        model.generate(IMAGES[:2], TEXTS[:2], **kwargs), onnx_model.generate(IMAGES[:2], TEXTS[:2], **kwargs)
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


@pytest.mark.parametrize("io_binding", [False, True])
def test_exports_with_per_beam_cross_kv_still_work(onnx_folder, onnx_model, tmp_path, io_binding):
    """Folders from before ``shared_cross_kv`` feed the cross K/V repeated per beam; the tokens are the same."""
    import json

    old = tmp_path / "per-beam"
    shutil.copytree(onnx_folder, old)
    cfg_path = old / "florence2_config.json"
    cfg = json.loads(cfg_path.read_text())
    assert cfg["shared_cross_kv"] is True
    cfg_path.write_text(json.dumps({k: v for k, v in cfg.items() if k != "shared_cross_kv"}))
    model = Florence2.from_pretrained(old, io_binding=io_binding)
    assert model.config.shared_cross_kv is False
    kwargs = dict(max_new_tokens=16, num_beams=3)
    np.testing.assert_array_equal(
        model.generate(IMAGES, TEXTS, **kwargs), onnx_model.generate(IMAGES, TEXTS, **kwargs)
    )


def _format1_folder(onnx_folder: Path, out: Path) -> Path:
    """``onnx_folder`` as format 1 wrote it: the decoder takes ``input_ids`` and gathers the embeddings itself."""
    import json

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shutil.copytree(onnx_folder, out)
    path = out / "onnx" / "decoder.onnx"
    model = onnx.load(str(path))
    graph = model.graph
    embeds = next(i for i in graph.input if i.name == "inputs_embeds")
    position = list(graph.input).index(embeds)
    graph.input.remove(embeds)
    graph.input.insert(
        position, helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "step_length"])
    )
    table = np.load(out / "onnx" / "embed_tokens.npy")
    graph.initializer.append(numpy_helper.from_array(table, "embed_tokens.weight"))
    graph.node.insert(0, helper.make_node("Gather", ["embed_tokens.weight", "input_ids"], ["inputs_embeds"]))
    onnx.save(model, str(path))
    cfg_path = out / "florence2_config.json"
    cfg = json.loads(cfg_path.read_text())
    assert cfg["decoder_inputs_embeds"] is True and cfg["format_version"] == 2
    cfg = {k: v for k, v in cfg.items() if k != "decoder_inputs_embeds"}
    cfg_path.write_text(json.dumps({**cfg, "format_version": 1}))
    return out


@pytest.mark.parametrize("io_binding", [False, True])
def test_format1_exports_with_token_ids_still_work(onnx_folder, onnx_model, tmp_path, io_binding):
    """Folders of format 1 have a decoder that takes token ids; the runtime feeds them and gets the same tokens."""
    model = Florence2.from_pretrained(
        _format1_folder(onnx_folder, tmp_path / "format1"), io_binding=io_binding
    )
    assert model.config.decoder_inputs_embeds is False
    assert model.engine.sessions.decoder.get_inputs()[0].name == "input_ids"
    for kwargs in (dict(max_new_tokens=12), dict(max_new_tokens=12, num_beams=3)):
        np.testing.assert_array_equal(
            model.generate(IMAGES, TEXTS, **kwargs), onnx_model.generate(IMAGES, TEXTS, **kwargs)
        )
