"""int8 recipes on exported folders: recorded and read back off the graphs, the load-time warning, the
export's int8 check. (The arithmetic, the CPU probe and graph parsing alone: tests/runtime/test_int8cpu.py.)

The saturation of onnxruntime's uint8 x int8 kernels on x86 CPUs without VNNI cannot happen on a CPU with
VNNI; these tests hold on both kinds: what depends on the CPU is asked of onnxruntime
(``u8s8_saturates``), and the branches for the other kind are exercised by patching that answer.
"""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import onnx
import pytest

from florence2_export.pipeline import ExportCheckError
from florence2_export.precision import Int8Options, convert_folder
from florence2_export.verify import variant_problems
from florence2_runtime import Florence2
from florence2_runtime.engine import int8cpu
from florence2_runtime.engine.config import RuntimeConfig

GRAPHS = ("vision_encoder", "text_encoder", "decoder")


def _graphs(folder):
    return [folder / "onnx" / f"{g}.onnx" for g in GRAPHS]


@pytest.fixture(scope="module")
def recipe_folders(onnx_folder, tmp_path_factory):
    """The fp32 tiny export converted with each int8 recipe (no PyTorch check)."""
    root = tmp_path_factory.mktemp("recipes")
    for recipe in int8cpu.RECIPES:
        convert_folder(onnx_folder, root / recipe, "int8", Int8Options(recipe=recipe))
    return {recipe: root / recipe for recipe in int8cpu.RECIPES}


# ----------------------------------------------------------------------------- recipes read off graphs


def test_weights_read_off_a_graph_equal_the_onnx_package(recipe_folders):
    path = recipe_folders["full-range"] / "onnx" / "decoder.onnx"  # weights in decoder.onnx_data
    model = onnx.load(str(path))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    wanted = {n.input[1] for n in model.graph.node if n.op_type in int8cpu.WEIGHT_INPUT}
    ours = sorted(int8cpu.quantized_weights(path), key=lambda w: (w.size, w.tobytes()))
    theirs = sorted((inits[n].ravel() for n in wanted), key=lambda w: (w.size, w.tobytes()))
    assert len(ours) == len(theirs) > 0
    assert all(np.array_equal(x, y) and x.dtype == y.dtype for x, y in zip(ours, theirs))


@pytest.mark.parametrize("recipe", list(int8cpu.RECIPES))
def test_each_recipe_is_recorded_and_reads_back_off_the_graphs(recipe_folders, recipe):
    folder = recipe_folders[recipe]
    assert RuntimeConfig.load(folder).int8_recipe == recipe
    assert int8cpu.recipe_of_graphs(_graphs(folder)) == recipe
    weights = [w for p in _graphs(folder) for w in int8cpu.quantized_weights(p)]
    if recipe == "7bit":
        assert all(w.dtype == np.int8 and np.abs(w.astype(int)).max() <= 64 for w in weights)


def test_an_fp32_graph_has_no_recipe(onnx_folder):
    assert int8cpu.recipe_of_graphs(_graphs(onnx_folder)) is None


def test_an_unknown_recipe_is_refused():
    with pytest.raises(ValueError, match="int8 recipe must be one of"):
        Int8Options(recipe="int4")


# ----------------------------------------------------------------------------- loading: the warning


def test_full_range_folder_warns_once_on_a_saturating_cpu(recipe_folders, saturating):
    saturating(True)
    with pytest.warns(int8cpu.Int8CpuWarning, match="RESULTS WILL BE WRONG"):
        Florence2.from_pretrained(recipe_folders["full-range"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Florence2.from_pretrained(recipe_folders["full-range"])  # once per folder


@pytest.mark.parametrize("recipe, saturates", [("7bit", True), ("u8u8", True), ("full-range", False)])
def test_right_folders_load_silently(recipe_folders, saturating, recipe, saturates):
    saturating(saturates)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Florence2.from_pretrained(recipe_folders[recipe])


def test_unrecorded_recipe_is_read_off_the_graphs(recipe_folders, saturating, tmp_path):
    """int8 folders exported before the record (full-range, the default then) are recognised by their weights."""
    saturating(True)
    for recipe in ("full-range", "7bit"):
        old = shutil.copytree(recipe_folders[recipe], tmp_path / recipe)
        cfg = RuntimeConfig.load(old).to_dict()
        del cfg["int8_recipe"]
        RuntimeConfig.from_dict(cfg).save(old)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert int8cpu.check_model_files(old, RuntimeConfig.load(old), _graphs(old)) == recipe
    int8cpu._warned.clear()
    with pytest.warns(int8cpu.Int8CpuWarning, match="full-range"):
        Florence2.from_pretrained(tmp_path / "full-range")


def test_unknown_recorded_recipe_is_a_model_file_error(recipe_folders, tmp_path):
    folder = shutil.copytree(recipe_folders["7bit"], tmp_path / "m")
    cfg = RuntimeConfig.load(folder).to_dict()
    RuntimeConfig.from_dict({**cfg, "int8_recipe": "int3"}).save(folder)
    with pytest.raises(ValueError, match="unknown int8_recipe 'int3'"):
        Florence2.from_pretrained(folder)


# ----------------------------------------------------------------------------- the export's check


def test_check_of_the_default_recipe_means_the_same_on_both_kinds_of_cpu(recipe_folders, saturating):
    for saturates in (False, True):
        saturating(saturates)
        assert variant_problems(recipe_folders["7bit"]) == []
        assert variant_problems(recipe_folders["u8u8"]) == []


def test_check_of_full_range_fails_where_it_cannot_be_checked(recipe_folders, saturating):
    saturating(False)
    assert variant_problems(recipe_folders["full-range"]) == []
    saturating(True)
    (problem,) = variant_problems(recipe_folders["full-range"])
    assert "cannot be checked on this CPU" in problem and "'7bit'" in problem


def test_check_fails_when_the_record_and_the_weights_disagree(recipe_folders, tmp_path):
    folder = shutil.copytree(recipe_folders["full-range"], tmp_path / "m")
    RuntimeConfig.from_dict({**RuntimeConfig.load(folder).to_dict(), "int8_recipe": "7bit"}).save(folder)
    assert any("records '7bit'" in p for p in variant_problems(folder))


@pytest.mark.slow
def test_full_range_export_passes_or_fails_as_this_cpu_computes(tiny_checkpoint, tmp_path):
    """The explicit full-range recipe: checked (and passing) where onnxruntime does not saturate; a failed
    check naming the cause where it does (the default recipe's export is tested in test_precision.py)."""
    from florence2_export import export

    options = Int8Options(recipe="full-range")
    if int8cpu.u8s8_saturates():
        with pytest.raises(ExportCheckError, match="cannot be checked on this CPU"):
            export(tiny_checkpoint, tmp_path / "m", dtype="int8", precision_options=options, quiet=True)
    else:
        report = export(tiny_checkpoint, tmp_path / "m", dtype="int8", precision_options=options, quiet=True)
        assert report.ok and report.variant_problems == []
        assert RuntimeConfig.load(report.folder).int8_recipe == "full-range"


@pytest.mark.parametrize(
    "argv, recipe",
    [([], "7bit"), (["--int8-recipe", "full-range"], "full-range"), (["--int8-recipe", "u8u8"], "u8u8")],
)
def test_cli_export_takes_the_recipe(monkeypatch, tmp_path, argv, recipe):
    import types

    import florence2_export
    from florence2_runtime.cli import main

    seen = {}
    fake = lambda src, out, **kw: seen.update(kw) or types.SimpleNamespace(ok=True)  # noqa: E731
    monkeypatch.setattr(florence2_export, "export", fake)
    assert main(["export", "ckpt", str(tmp_path / "out"), "--dtype", "int8", *argv]) == 0
    assert seen["precision_options"].recipe == recipe
