"""GPU checks: run with ``bash scripts/gpu_check.sh`` on a machine with an NVIDIA GPU and onnxruntime-gpu.

Every test here skips without ``CUDAExecutionProvider``; CI (no GPU) runs none of them. The CPU
side of each comparison is the plain path that tests/parity prove equal to transformers (fp16 on CUDA:
tests/export/test_precision.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from florence2_runtime import Florence2
from tests.helpers.images import make_test_image

ort = pytest.importorskip("onnxruntime")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        "CUDAExecutionProvider" not in ort.get_available_providers(),
        reason="needs onnxruntime-gpu with CUDAExecutionProvider and an NVIDIA GPU",
    ),
]

IMAGES = [make_test_image(w, h, seed=i) for i, (w, h) in enumerate([(160, 120), (40, 200), (128, 128)])]
TEXTS = ["<OD>", "<CAPTION_TO_PHRASE_GROUNDING>a red ball", "<MORE_DETAILED_CAPTION>"]


@pytest.fixture(scope="module")
def cuda_model(tiny_folder):
    model = Florence2.from_pretrained(tiny_folder, providers="cuda")
    assert model.providers[0] == "CUDAExecutionProvider"
    assert type(model.engine).__name__ == "DeviceEngine" and model.engine.device == "cuda"
    return model


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("batch", [1, 3])
def test_cuda_tokens_equal_cpu(tiny_model, cuda_model, num_beams, batch):
    kwargs = dict(max_new_tokens=24, num_beams=num_beams)
    expected = tiny_model.generate(IMAGES[:batch], TEXTS[:batch], **kwargs)
    got = cuda_model.generate(IMAGES[:batch], TEXTS[:batch], **kwargs)
    # GPU kernels sum in another order: ids may differ where two logits tie to ~1e-6; random tiny
    # weights make near-ties rare, so require exact equality and report the first difference otherwise
    np.testing.assert_array_equal(got, expected)


def test_cuda_plain_path_equals_bound_path(tiny_folder, cuda_model):
    plain = Florence2.from_pretrained(tiny_folder, providers="cuda", io_binding=False)
    kwargs = dict(max_new_tokens=24, num_beams=3)
    np.testing.assert_array_equal(
        plain.generate(IMAGES, TEXTS, **kwargs), cuda_model.generate(IMAGES, TEXTS, **kwargs)
    )


@pytest.mark.skipif(
    "TensorrtExecutionProvider" not in ort.get_available_providers(),
    reason="needs onnxruntime with the TensorRT provider and TensorRT libraries",
)
def test_tensorrt_fp32_tokens_equal_cpu(tiny_folder, tiny_model, tmp_path):
    from florence2_runtime.engine.tensorrt import TensorRTLimits

    limits = TensorRTLimits(
        max_batch=3,
        max_beams=3,
        max_prompt_tokens=64,
        max_new_tokens=32,
        opt_batch=1,
        opt_beams=1,
        opt_prompt_tokens=12,
        opt_new_tokens=16,
    )
    model = Florence2.from_pretrained(
        tiny_folder,
        providers=[
            (
                "TensorrtExecutionProvider",
                {
                    "trt_fp16_enable": False,
                    "trt_layer_norm_fp32_fallback": False,
                    "trt_engine_cache_path": str(tmp_path),
                },
            )
        ],
        tensorrt_limits=limits,
    )
    kwargs = dict(max_new_tokens=24, num_beams=3)
    np.testing.assert_array_equal(
        model.generate(IMAGES, TEXTS, **kwargs), tiny_model.generate(IMAGES, TEXTS, **kwargs)
    )
