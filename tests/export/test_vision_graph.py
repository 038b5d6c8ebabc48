"""The exported vision encoder (florence2_export.graphs.vision.DaViTEncoder) computes transformers' function.

The export already checks its ONNX graph against transformers' ``get_image_features``; these tests pin
the torch rewrite itself on grids that need window padding (the tiny 128 px model: 32/16/8/4 tokens a
side, window 12) and grids that need none (384 px: 96/48/24/12).
"""

from __future__ import annotations

import pytest
import torch

from florence2_export.graphs.modules import VisionEncoder
from florence2_export.graphs.vision import DaViTEncoder, ResidualDepthwise
from florence2_export.toy.tiny import write_tiny_checkpoint
from florence2_runtime.inputs.image_size import ImageSize


def _model(folder):
    from transformers import Florence2ForConditionalGeneration

    return Florence2ForConditionalGeneration.from_pretrained(folder, attn_implementation="eager").eval()


@pytest.mark.parity
@pytest.mark.parametrize("image_size", [128, 384])
def test_rewrite_equals_transformers(tmp_path, image_size):
    model = _model(write_tiny_checkpoint(tmp_path / "ckpt", size="tiny", image_size=image_size, seed=3))
    pixels = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = VisionEncoder(model)(pixels)
        got = DaViTEncoder(model, ImageSize(image_size, image_size))(pixels)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_residual_is_folded_into_the_depthwise_kernel():
    conv = torch.nn.Conv2d(6, 6, 3, padding=1, groups=6)
    x = torch.randn(2, 5, 7, 6)  # channels-last
    with torch.no_grad():
        expected = conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1) + x
        torch.testing.assert_close(ResidualDepthwise(conv)(x), expected)
    with pytest.raises(ValueError, match="depthwise"):
        ResidualDepthwise(torch.nn.Conv2d(6, 6, 3, padding=1))  # not depthwise


def test_exported_graph_has_no_split_and_no_shape_arithmetic(onnx_folder):
    """q, k, v are separate projections (no Split copy) and every size is a constant (no Shape subgraphs)."""
    import onnx

    ops = {n.op_type for n in onnx.load(str(onnx_folder / "onnx" / "vision_encoder.onnx")).graph.node}
    assert not {"Split", "Shape", "Gather"} & ops
