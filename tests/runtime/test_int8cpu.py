"""The int8 checks of ``florence2_runtime.engine.int8cpu`` without exported folders: the saturating product
against onnxruntime's kernel, the probe graph, malformed graph files, VNNI from CPU flags, and
onnx-community quantized files (quantised here with onnxruntime) whose recipe is read off the graph.

The saturation of onnxruntime's uint8 x int8 kernels on x86 CPUs without VNNI cannot happen on a CPU with
VNNI; these tests hold on both kinds: what depends on the CPU is asked of onnxruntime
(``u8s8_saturates``), and the branches for the other kind are exercised by patching that answer
(``saturating``). Folders of each recipe: tests/export/test_int8_recipes.py.
"""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import onnx
import pytest

from florence2_runtime import Florence2
from florence2_runtime.engine import int8cpu, onnxproto
from florence2_runtime.engine.providers import onnxruntime
from tests.helpers.int8 import saturating_u8s8_matmul


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


def test_the_saturating_product_clips_full_range_weights_only():
    rng = np.random.default_rng(0)
    a = rng.integers(200, 256, (3, 33), dtype=np.uint8)  # odd K: padded
    full = rng.integers(100, 128, (33, 5)).astype(np.int8)
    reduced = np.clip(full, -64, 64).astype(np.int8)
    exact = lambda x, w: x.astype(np.int64) @ w.astype(np.int64)  # noqa: E731
    assert np.array_equal(saturating_u8s8_matmul(a, reduced), exact(a, reduced))
    assert (saturating_u8s8_matmul(a, full) < exact(a, full)).all()  # every pair clipped at 32767


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
        assert np.array_equal(got, saturating_u8s8_matmul(a, w) if int8cpu.u8s8_saturates() else exact)
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


def test_community_quantized_files_are_read_off_the_graph(tiny_community_folder, saturating, tmp_path):
    """onnx-community ``_quantized`` / ``_int8`` files carry no record: their recipe is read off the graph."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    saturating(True)
    results = {}
    for suffix, reduce_range in (("_int8", False), ("_quantized", True)):
        out = tmp_path / suffix
        shutil.copytree(tiny_community_folder, out, ignore=shutil.ignore_patterns("*.onnx", "*.onnx_data"))
        for src in (tiny_community_folder / "onnx").glob("*.onnx"):
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
