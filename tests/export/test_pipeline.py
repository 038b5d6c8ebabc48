"""``florence2_export.export`` as a whole: checkpoints it refuses before writing anything (with a message
naming the problem), and a finished folder moved into place whole."""

from __future__ import annotations

import json

import pytest


def test_a_non_square_checkpoint_is_refused_at_export(tmp_path):
    from florence2_export import export
    from florence2_export.checkpoints.errors import CheckpointError
    from florence2_export.toy.tiny import write_tiny_checkpoint

    checkpoint = write_tiny_checkpoint(tmp_path / "checkpoint", size="tiny", seed=0)
    pre_path = checkpoint / "preprocessor_config.json"
    pre = json.loads(pre_path.read_text())
    pre["size"] = {"height": 128, "width": 96}
    pre_path.write_text(json.dumps(pre))
    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match=r"preprocessor_config.json.*96x128 \(width x height\).*square"):
        export(checkpoint, out, quiet=True)
    assert not out.exists()


def test_export_moves_the_finished_folder_into_place(onnx_folder):
    """The session's export (conftest) went through the temporary folder: the result is whole and readable."""
    from florence2_runtime.engine.config import RuntimeConfig

    assert RuntimeConfig.load(onnx_folder).precision == "fp32"
    assert not [p for p in onnx_folder.parent.iterdir() if p.name.startswith(".")]
    assert (onnx_folder / "onnx" / "decoder.onnx").is_file()
