"""Native-layout graphs are stored split, NAME.onnx + NAME.onnx_data; single-file folders still load."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest

from florence2_export.graphs.onnxfile import MIN_EXTERNAL_BYTES, data_file
from florence2_runtime import Florence2
from tests.helpers.images import make_test_image

GRAPHS = ("vision_encoder", "text_encoder", "decoder")
IMAGES = [make_test_image(90, 70, seed=5), make_test_image(50, 120, seed=6)]
TEXTS = ["<OD>", "<CAPTION>"]


def _weight_bytes(path) -> int:
    model = onnx.load(str(path), load_external_data=False)
    return sum(len(t.raw_data) for t in model.graph.initializer)


def _fp16_folder(request):
    from florence2_export.precision import convert_folder

    out = request.getfixturevalue("tmp_path") / "fp16"
    convert_folder(request.getfixturevalue("onnx_folder"), out, "fp16")  # from a split fp32 folder
    return out


def _int8_folder(request):
    from florence2_export import export

    out = request.getfixturevalue("tmp_path") / "int8"
    return export(request.getfixturevalue("tiny_checkpoint"), out, dtype="int8", quiet=True).folder


FOLDERS = {
    "fp32": lambda request: request.getfixturevalue("onnx_folder"),
    "fp16": _fp16_folder,
    "int8": _int8_folder,
}


@pytest.mark.parametrize("variant", list(FOLDERS))
def test_every_graph_keeps_its_weights_beside_it(request, variant):
    onnx_dir = FOLDERS[variant](request) / "onnx"
    for graph in GRAPHS:
        path = onnx_dir / f"{graph}.onnx"
        assert data_file(path).stat().st_size > 0, graph
        assert _weight_bytes(path) < MIN_EXTERNAL_BYTES * 64, graph  # only small constants stay inside
    names = {p.name for p in onnx_dir.iterdir()}
    assert names == {f"{g}.onnx{s}" for g in GRAPHS for s in ("", "_data")} | {
        "embed_tokens.npy",
        "kv_gather.onnx",
    }


def test_single_file_folders_still_load(onnx_folder, onnx_model, tmp_path):
    """Folders exported before the split (each graph one .onnx file) give the same tokens."""
    old = tmp_path / "single-file"
    shutil.copytree(onnx_folder, old)
    for graph in GRAPHS:
        path = old / "onnx" / f"{graph}.onnx"
        model = onnx.load(str(path))
        data_file(path).unlink()
        onnx.save(model, str(path))
    assert not any(p.name.endswith("_data") for p in (old / "onnx").iterdir())
    kwargs = dict(max_new_tokens=12, num_beams=3)
    np.testing.assert_array_equal(
        Florence2.from_pretrained(old).generate(IMAGES, TEXTS, **kwargs),
        onnx_model.generate(IMAGES, TEXTS, **kwargs),
    )
