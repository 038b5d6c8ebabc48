"""Shared fixtures: one tiny random-weight checkpoint per session and its transformers reference.

Everything is session-scoped and built lazily: a test that asks for nothing pays nothing.
``tiny_checkpoint`` takes well under a second to write; the ONNX export is paid only by tests
that use ``onnx_model``.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A transformers-native tiny Florence-2 checkpoint folder (128 px, 17 image tokens)."""
    from florence2_export.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "checkpoint", size="tiny", seed=0)


@pytest.fixture(scope="session")
def hf_processor(tiny_checkpoint):
    """The checkpoint's ``Florence2Processor``, pinned to the PIL image backend.

    ``AutoProcessor`` picks the PIL backend by default only when torchvision is not installed;
    the runtime reproduces the PIL backend bit for bit, so the reference is pinned to it.
    """
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_checkpoint, backend="pil")


@pytest.fixture(scope="session")
def hf_model(tiny_checkpoint):
    """``Florence2ForConditionalGeneration`` in fp32 eval mode with eager attention."""
    import torch
    from transformers import Florence2ForConditionalGeneration

    model = Florence2ForConditionalGeneration.from_pretrained(
        tiny_checkpoint, attn_implementation="eager", dtype=torch.float32
    )
    return model.eval()


@pytest.fixture(scope="session")
def onnx_folder(tiny_checkpoint, tmp_path_factory) -> Path:
    """The tiny checkpoint exported by ``florence2_export.export`` (checked against PyTorch)."""
    from florence2_export import export

    out = tmp_path_factory.mktemp("tiny-onnx") / "model"
    export(tiny_checkpoint, out, quiet=True)
    return out


@pytest.fixture(scope="session")
def onnx_model(onnx_folder):
    """The exported tiny model loaded by the torch-free runtime (CPU)."""
    from florence2_runtime import Florence2

    return Florence2.from_pretrained(onnx_folder)


@pytest.fixture(scope="session")
def community_folder(tiny_checkpoint, tmp_path_factory) -> Path:
    """The tiny checkpoint exported in the onnx-community layout (``layout="onnx-community"``, checked)."""
    from florence2_export import export

    out = tmp_path_factory.mktemp("tiny-community") / "model"
    export(tiny_checkpoint, out, quiet=True, layout="onnx-community")
    return out
