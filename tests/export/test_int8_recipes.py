"""int8 recipes and the CPUs they are right on (florence2_runtime.engine.int8cpu, the export's int8 check).

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
from florence2_runtime.engine import int8cpu, onnxproto
from florence2_runtime.engine.config import RuntimeConfig
from florence2_runtime.engine.providers import onnxruntime

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


@pytest.fixture
def saturating(monkeypatch):
    """Make this CPU look like one without VNNI (or with: ``saturating(False)``), warnings not yet given."""
    monkeypatch.setattr(int8cpu, "_warned", set())

    def set_to(value: bool = True):
        monkeypatch.setattr(int8cpu, "u8s8_saturates", lambda: value)
        monkeypatch.setattr("florence2_export.verify.u8s8_saturates", lambda: value)

    return set_to


def _ort_matmul_integer(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ort = onnxruntime()
    model = onnxproto.single_node_model(
        "MatMulInteger",
        [
            onnxproto.value_info("in0", onnxproto.UINT8, a.shape),
            onnxproto.value_info("in1", onnxproto.INT8, b.shape),
        ],
        [onnxproto.value_info("out0", onnxproto.INT32, (a.shape[0], b.shape[1]))],
    )
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"in0": a, "in1": b})[0]


# ----------------------------------------------------------------------------- the arithmetic


def test_the_saturating_product_clips_full_range_weights_only():
    rng = np.random.default_rng(0)
    a = rng.integers(200, 256, (3, 33), dtype=np.uint8)  # odd K: padded
    full = rng.integers(100, 128, (33, 5)).astype(np.int8)
    reduced = np.clip(full, -64, 64).astype(np.int8)
    exact = lambda x, w: x.astype(np.int64) @ w.astype(np.int64)  # noqa: E731
    assert np.array_equal(int8cpu.saturating_u8s8_matmul(a, reduced), exact(a, reduced))
    assert (int8cpu.saturating_u8s8_matmul(a, full) < exact(a, full)).all()  # every pair clipped at 32767


def test_onnxruntime_computes_the_exact_or_the_saturating_product_as_the_probe_says():
    """The probe's answer is the kernel's behaviour: exact where it says False, the emulation where True."""
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (4, 96), dtype=np.uint8)
    for w in (
        rng.integers(-127, 128, (96, 16)).astype(np.int8),
        rng.integers(-64, 65, (96, 16)).astype(np.int8),
    ):
        got = _ort_matmul_integer(a, w)
        exact = a.astype(np.int32) @ w.astype(np.int32)
        assert np.array_equal(
            got, int8cpu.saturating_u8s8_matmul(a, w) if int8cpu.u8s8_saturates() else exact
        )
    seven_bit = rng.integers(-64, 65, (96, 16)).astype(np.int8)  # never clipped, on any CPU
    assert np.array_equal(_ort_matmul_integer(a, seven_bit), a.astype(np.int32) @ seven_bit.astype(np.int32))


def test_the_probe_graph_is_a_valid_onnx_model():
    data = onnxproto.single_node_model(
        "MatMulInteger",
        [
            onnxproto.value_info("in0", onnxproto.UINT8, (4, 64)),
            onnxproto.value_info("in1", onnxproto.INT8, (64, 8)),
        ],
        [onnxproto.value_info("out0", onnxproto.INT32, (4, 8))],
    )
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["MatMulInteger"]
    assert [d.dim_value for d in model.graph.input[1].type.tensor_type.shape.dim] == [64, 8]


@pytest.mark.parametrize(
    "message",
    [
        onnxproto._field(onnxproto.MODEL_GRAPH, 5),  # a number where the graph message belongs
        # a node whose op_type is a number, and an initializer whose name is a number
        onnxproto._field(
            onnxproto.MODEL_GRAPH, onnxproto._field(onnxproto.GRAPH_NODE, onnxproto._field(4, 7))
        ),
        onnxproto._field(
            onnxproto.MODEL_GRAPH,
            onnxproto._field(onnxproto.GRAPH_INITIALIZER, onnxproto._field(onnxproto.TENSOR_NAME, 3)),
        ),
    ],
    ids=["graph", "op_type", "initializer-name"],
)
def test_a_malformed_graph_file_is_a_value_error(tmp_path, message):
    """A field of the wrong wire type (a corrupt or non-ONNX file) is a clear ValueError, not a TypeError."""
    path = tmp_path / "bad.onnx"
    path.write_bytes(message)
    with pytest.raises(ValueError, match="malformed ONNX protobuf"):
        onnxproto.GraphFile(path)


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


# ----------------------------------------------------------------------------- the CPU


@pytest.mark.parametrize(
    "flags, expected",
    [
        (frozenset({"avx2", "avx512f", "avx512_vnni"}), True),  # Cascade Lake and later Xeons, Zen 4
        (frozenset({"avx2", "avx_vnni"}), True),  # Alder Lake and later client chips
        (frozenset({"avx2", "fma"}), False),  # Zen 2/3, Haswell .. Coffee Lake
        (frozenset({"avx2", "avx512f", "avx512bw"}), False),  # Skylake-SP: AVX-512 without VNNI
    ],
)
def test_vnni_from_flags(monkeypatch, flags, expected):
    monkeypatch.setattr(int8cpu.platform, "machine", lambda: "x86_64")
    assert int8cpu.cpu_has_vnni(flags) is expected


def test_arm_has_no_vnni_question(monkeypatch):
    monkeypatch.setattr(int8cpu.platform, "machine", lambda: "aarch64")
    assert int8cpu.cpu_has_vnni(frozenset({"asimd", "asimddp"})) is None
    assert "without VNNI" not in int8cpu.cpu_description()


def test_this_cpu_gets_an_answer():
    assert isinstance(int8cpu.u8s8_saturates(), bool)
    assert int8cpu.cpu_description()


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


def test_community_quantized_files_are_read_off_the_graph(community_folder, saturating, tmp_path):
    """onnx-community ``_quantized`` / ``_int8`` files carry no record: their recipe is read off the graph."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    saturating(True)
    results = {}
    for suffix, reduce_range in (("_int8", False), ("_quantized", True)):
        out = tmp_path / suffix
        shutil.copytree(community_folder, out, ignore=shutil.ignore_patterns("*.onnx", "*.onnx_data"))
        for src in (community_folder / "onnx").glob("*.onnx"):
            quantize_dynamic(
                src,
                out / "onnx" / f"{src.stem}{suffix}.onnx",
                weight_type=QuantType.QInt8,
                reduce_range=reduce_range,
                op_types_to_quantize=["MatMul"],
            )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = Florence2.from_pretrained(out)
        assert all(f.stem.endswith(suffix) for f in model.engine.sessions.files)
        results[suffix] = [str(w.message) for w in caught if issubclass(w.category, int8cpu.Int8CpuWarning)]
    assert len(results["_int8"]) == 1 and "full-range" in results["_int8"][0]
    assert results["_quantized"] == []


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
