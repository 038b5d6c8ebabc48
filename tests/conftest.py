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
    from florence2_export.toy.tiny import write_tiny_checkpoint

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


@pytest.fixture(scope="session")
def word_level_processor():
    """``make(post_processor_config)``: a real ``Florence2Processor`` with a word-level tokenizer and no
    weights, for tests of the processor's text side (prompts, post-processing)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast
    from transformers.models.florence2 import processing_florence2 as processing

    try:
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor  # no torchvision warning
    except ImportError:
        from transformers import CLIPImageProcessor

    def make(post_processor_config: dict):
        vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<image>": 4}
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
            bos_token="<s>",
            eos_token="</s>",
            pad_token="<pad>",
            unk_token="<unk>",
            extra_special_tokens={"image_token": "<image>"},
        )
        image_processor = CLIPImageProcessor(size={"height": 768, "width": 768}, do_center_crop=False)
        image_processor.image_seq_length = 577
        return processing.Florence2Processor(
            image_processor=image_processor, tokenizer=tokenizer, post_processor_config=post_processor_config
        )

    return make


# --- the trained toy model (models/florence2-tiny-shapes): answers that depend on the image, for precision and batching tests ---
@pytest.fixture(scope="session")
def shapes_checkpoint() -> Path:
    """The committed checkpoint trained on generated shapes and words (``florence2_export.toy.train_tiny``)."""
    from florence2_export.toy.demo import TINY_SHAPES

    assert (TINY_SHAPES / "model.safetensors").is_file(), f"the trained checkpoint is missing: {TINY_SHAPES}"
    return TINY_SHAPES


@pytest.fixture(scope="session")
def shapes_onnx_folder(shapes_checkpoint, tmp_path_factory) -> Path:
    """Its fp32 export (checked against PyTorch)."""
    from florence2_export import export

    out = tmp_path_factory.mktemp("shapes-onnx") / "model"
    export(shapes_checkpoint, out, quiet=True)
    return out


@pytest.fixture(scope="session")
def shapes_model(shapes_onnx_folder):
    from florence2_runtime import Florence2

    return Florence2.from_pretrained(shapes_onnx_folder)


# --- the server tests: one app, one loopback server and one client per test module ---------------------------
@pytest.fixture(scope="module")
def server_app(request, onnx_model):
    """``create_app(onnx_model, LIMITS)`` with the test module's ``LIMITS`` (default: ServerLimits())."""
    from florence2_runtime.server import ServerLimits, create_app

    return create_app(onnx_model, getattr(request.module, "LIMITS", None) or ServerLimits())


@pytest.fixture(scope="module")
def server_url(server_app):
    """``server_app`` served by uvicorn on a free loopback port, for the whole module."""
    from florence2_runtime.server.background import BackgroundServer

    with BackgroundServer(server_app) as url:
        yield url


@pytest.fixture(scope="module")
def client(request, server_url):
    """An httpx client of ``server_url``, sending the test module's ``CLIENT_HEADERS`` (e.g. its API key)."""
    httpx = pytest.importorskip(
        "httpx", reason="the server tests need httpx (pip install 'florence2-onnx[dev]')"
    )
    headers = getattr(request.module, "CLIENT_HEADERS", None)
    with httpx.Client(base_url=server_url, timeout=60, headers=headers) as c:
        yield c
