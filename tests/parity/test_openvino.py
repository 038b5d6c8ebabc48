"""OpenVINO in float32 is the same computation as onnxruntime's CPU provider up to float rounding: on the tiny
checkpoint its token ids equal transformers' generate(), whichever graphs it runs."""

from __future__ import annotations

import numpy as np
import pytest

from florence2_runtime import Florence2
from florence2_runtime.engine.openvino import OpenVINOSession
from tests.helpers.images import make_test_image

pytest.importorskip("openvino")
pytestmark = pytest.mark.parity

ALL_GRAPHS = ("vision_encoder", "text_encoder", "decoder")
IMAGES = [(160, 120), (33, 200), (300, 31), (128, 128)]
TASKS = ["<OD>", "<CAPTION_TO_PHRASE_GROUNDING>a cat", "<CAPTION>", "<OCR>"]


def reference_ids(hf_model, hf_processor, images, texts, **kwargs) -> np.ndarray:
    import torch

    batch = hf_processor(text=texts, images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        return hf_model.generate(**batch, **kwargs).numpy()


@pytest.mark.parametrize("graphs", [None, ALL_GRAPHS], ids=["default-graphs", "every-graph"])
@pytest.mark.parametrize("num_beams", [1, 3])
def test_fp32_through_openvino_gives_transformers_ids(onnx_folder, hf_model, hf_processor, graphs, num_beams):
    options = {} if graphs is None else {"graphs": graphs}
    model = Florence2.from_pretrained(onnx_folder, providers=[("openvino", options)], threads=2)
    sessions = model.engine.sessions
    assert isinstance(sessions.vision, OpenVINOSession) and sessions.vision.precision == "f32"
    assert isinstance(sessions.text, OpenVINOSession)
    assert isinstance(sessions.decoder, OpenVINOSession) == (graphs is not None)
    images = [make_test_image(w, h, seed=i) for i, (w, h) in enumerate(IMAGES)]
    kwargs = dict(max_new_tokens=24, num_beams=num_beams)
    expected = reference_ids(hf_model, hf_processor, images, TASKS, **kwargs)
    np.testing.assert_array_equal(model.generate(images, TASKS, **kwargs), expected)
