"""Fixtures that tests in several folders use, the suite's order, and the torch blocker.

Models, all session-scoped and built lazily (a test that asks for nothing pays nothing):

- ``tiny_folder`` / ``tiny_model`` / ``tiny_community_folder``: the model folders committed under
  ``tests/data/models`` (``scripts/make_test_models.py``), loaded by the runtime alone: no torch needed.
- ``tiny_checkpoint`` (the same random-weight checkpoint, written in this run), its transformers reference
  ``hf_processor`` / ``hf_model``, and its fresh exports ``onnx_folder`` / ``onnx_model`` /
  ``community_folder`` / ``community_model``: for the exporter's and the parity tests (the ``export``
  extra: torch, transformers).
- ``shapes_checkpoint`` / ``shapes_onnx_folder`` / ``shapes_model``: the committed trained toy model and its
  export, for tests whose answers must depend on the image (precision, datasets, MCP).

``FLORENCE2_TESTS_BLOCK_TORCH=1`` makes torch, torchvision, transformers and optimum unimportable in this
process before any test module is imported (``scripts/test.sh`` runs ``tests/runtime`` so). ``tests/runtime``
runs first in every run, so a broken runtime shows before the slow exports start.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import blocked_imports
from tests.helpers.paths import DATA, TESTS

if os.environ.get(blocked_imports.ENV) == "1":
    blocked_imports.install()

FIRST = TESTS / "runtime"
PARITY = TESTS / "parity"


def pytest_report_header(config) -> str | None:
    if os.environ.get(blocked_imports.ENV) == "1":
        return f"{blocked_imports.ENV}=1: {', '.join(blocked_imports.TORCH)} cannot be imported"
    return None


def pytest_collection_modifyitems(config, items) -> None:
    """tests/runtime first (a stable sort: the order within each part stays as collected); every test in
    tests/parity must carry the ``parity`` marker (its module's ``pytestmark``)."""
    items.sort(key=lambda item: FIRST not in item.path.parents)
    unmarked = sorted(
        {
            str(i.path.relative_to(TESTS))
            for i in items
            if PARITY in i.path.parents and not i.get_closest_marker("parity")
        }
    )
    if unmarked:
        raise pytest.UsageError(f"tests in tests/parity without the parity marker: {', '.join(unmarked)}")


# --- the committed model folders: the runtime alone ------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_folder() -> Path:
    """``tests/data/models/tiny``: the tiny checkpoint's native export, committed (128 px, 17 image tokens)."""
    return DATA / "models" / "tiny"


@pytest.fixture(scope="session")
def tiny_model(tiny_folder):
    """``tiny_folder`` loaded by the runtime (CPU)."""
    from florence2_runtime import Florence2

    return Florence2.from_pretrained(tiny_folder)


@pytest.fixture(scope="session")
def tiny_community_folder() -> Path:
    """``tests/data/models/tiny-community``: the same checkpoint in the onnx-community layout, committed."""
    return DATA / "models" / "tiny-community"


# --- the checkpoint built in this run, its reference and its exports (torch, transformers) ---------------
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
    """The fresh export loaded by the torch-free runtime (CPU)."""
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
def community_model(community_folder):
    """The fresh onnx-community export loaded by the runtime (CPU)."""
    from florence2_runtime import Florence2

    return Florence2.from_pretrained(community_folder)


# --- the trained toy model (models/florence2-tiny-shapes): answers that depend on the image --------------
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


# --- int8: make this CPU look like one that saturates uint8 x int8 products (or not) ---------------------
@pytest.fixture
def saturating(monkeypatch):
    """``saturating(True)``: this CPU looks like one without VNNI (``saturating(False)``: with), for the
    runtime's load-time check and, where the export package is loaded, the export's int8 check; warnings
    already given are forgotten."""
    import sys

    from florence2_runtime.engine import int8cpu

    monkeypatch.setattr(int8cpu, "_warned", set())

    def set_to(value: bool = True):
        monkeypatch.setattr(int8cpu, "u8s8_saturates", lambda: value)
        verify = sys.modules.get("florence2_export.verify")  # imported by the tests that check exports
        if verify is not None:
            monkeypatch.setattr(verify, "u8s8_saturates", lambda: value)

    return set_to
