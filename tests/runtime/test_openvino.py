"""The OpenVINO engine (florence2_runtime.engine.openvino): the session, bf16, the graph choice and the clear
errors, on the committed tiny model (torch-free). Token parity with transformers through OpenVINO is in
tests/parity/test_openvino.py; bf16 is judged on a trained model in ``benchmarks/precision_tiny.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from florence2_runtime import Florence2, MissingDependencyError
from florence2_runtime.engine import openvino as ov_engine
from florence2_runtime.engine.openvino import OPENVINO, OpenVINOError, OpenVINOSession
from florence2_runtime.engine.providers import normalize_providers
from tests.helpers.images import make_test_image

pytest.importorskip("openvino")


def has_bf16() -> bool:
    return "BF16" in ov_engine.cpu_capabilities()


def test_openvino_session_acts_like_onnxruntime(tiny_folder):
    """Same outputs (float rounding apart), names and types as an onnxruntime session of the same file."""
    import onnxruntime

    path = tiny_folder / "onnx" / "vision_encoder.onnx"
    ort = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ov = OpenVINOSession(path, {"precision": "f32"}, threads=1)
    assert [(i.name, i.type) for i in ov.get_inputs()] == [(i.name, i.type) for i in ort.get_inputs()]
    assert [o.name for o in ov.get_outputs()] == [o.name for o in ort.get_outputs()]
    assert ov.get_providers() == [OPENVINO]
    x = np.random.default_rng(0).standard_normal((2, 3, 128, 128)).astype(np.float32)
    (a,), (b,) = ort.run(None, {"pixel_values": x}), ov.run(None, {"pixel_values": x})
    np.testing.assert_allclose(b, a, atol=1e-4)
    first = ov.run(["image_features"], {"pixel_values": x})[0]
    ov.run(None, {"pixel_values": x[:1] * 2})
    np.testing.assert_array_equal(first, b)  # outputs are copies: the next run does not overwrite them


@pytest.mark.skipif(not has_bf16(), reason="this CPU has no bf16 (OpenVINO's OPTIMIZATION_CAPABILITIES)")
def test_bf16_runs_the_encoders_on_openvino(tiny_folder):
    model = Florence2.from_pretrained(tiny_folder, precision="bf16", threads=2)
    sessions = model.engine.sessions
    assert sessions.vision.precision == sessions.text.precision == "bf16"
    # the decoder joins them on CPUs with AMX only
    on_openvino = "decoder" in ov_engine.default_graphs("bf16")
    assert model.providers == [OPENVINO if on_openvino else "CPUExecutionProvider"]
    ids = model.generate([make_test_image(160, 120)], ["<OD>"], max_new_tokens=8, min_new_tokens=8)
    assert ids.shape == (1, 9)


def test_bf16_on_a_cpu_without_it_is_one_clear_error(tiny_folder, monkeypatch):
    monkeypatch.setattr(ov_engine, "cpu_capabilities", lambda: frozenset({"FP32", "INT8"}))
    with pytest.raises(OpenVINOError, match=r"needs a CPU that computes in BF16.*FP32, INT8"):
        Florence2.from_pretrained(tiny_folder, precision="bf16")


def test_bf16_without_openvino_names_the_extra(tiny_folder, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    with pytest.raises(MissingDependencyError, match=r"'openvino' extra"):
        Florence2.from_pretrained(tiny_folder, precision="bf16")
    with pytest.raises(MissingDependencyError, match=r"'openvino' extra"):
        normalize_providers("openvino")


def test_bf16_on_a_gpu_provider_is_refused():
    with pytest.raises(OpenVINOError, match="runs on the CPU through OpenVINO"):
        ov_engine.precision_plan("bf16", [("CUDAExecutionProvider", {}), ("CPUExecutionProvider", {})])


def test_precision_plan_and_graph_choice():
    cpu = [("CPUExecutionProvider", {})]
    assert ov_engine.precision_plan("int8", cpu) == ("int8", cpu)
    assert ov_engine.precision_plan(None, cpu) == (None, cpu)
    if has_bf16():
        files, providers = ov_engine.precision_plan("bf16", cpu)
        assert files == "fp32" and providers[0] == (OPENVINO, {"precision": "bf16"})
    listed = normalize_providers([("openvino", {"graphs": ["decoder"]})])
    assert [name for name, _ in listed] == [OPENVINO, "CPUExecutionProvider"]
    pick = ov_engine.graph_providers(listed)
    spec = type("Spec", (), {"name": "decoder"})
    assert pick(spec)[0][0] == OPENVINO
    spec.name = "vision_encoder"
    assert pick(spec) == [("CPUExecutionProvider", {})]


@pytest.mark.parametrize(
    "precision, flags, decoder",
    [
        ("bf16", {"avx512_bf16", "amx_bf16", "amx_tile"}, True),  # Intel Xeon 4th generation and newer
        ("bf16", {"avx512_bf16", "avx512f"}, False),  # AMD Zen 4: the decoder stays on onnxruntime
        ("f32", {"avx512_bf16", "amx_bf16"}, False),
    ],
)
def test_default_graphs_follow_the_cpu(precision, flags, decoder):
    graphs = ov_engine.default_graphs(precision, frozenset(flags))
    assert {"vision_encoder", "text_encoder"} <= set(graphs)
    assert ("decoder" in graphs) == decoder


def test_unknown_openvino_precision_is_refused(tiny_folder):
    with pytest.raises(ValueError, match="OpenVINO precision must be one of"):
        Florence2.from_pretrained(tiny_folder, providers=[("openvino", {"precision": "fp8"})])


def test_cli_precision_bf16(tiny_folder, tmp_path, capsys, monkeypatch):
    """``florence2 run --precision bf16``: answers where the CPU has bf16, one line and exit code 2 where not."""
    import json

    from florence2_runtime.cli import main

    image = tmp_path / "im.png"
    make_test_image(90, 70).save(image)
    argv = ["run", str(tiny_folder), str(image), "--task", "<OD>", "--precision", "bf16"]
    if has_bf16():
        assert main([*argv, "--max-new-tokens", "5"]) == 0
        assert "<OD>" in json.loads(capsys.readouterr().out)
    monkeypatch.setattr(ov_engine, "cpu_capabilities", lambda: frozenset({"FP32"}))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "BF16" in err and len(err.splitlines()) == 1


def test_transposes_folded_into_matmuls_keep_the_outputs(tiny_folder):
    """The vision encoder's channel-attention permutes are rewritten (vision graph of the tiny checkpoint),
    and the float32 outputs stay those of the graph as written."""
    path = tiny_folder / "onnx" / "vision_encoder.onnx"
    core = ov_engine.core()
    x = np.random.default_rng(1).standard_normal((1, 3, 128, 128)).astype(np.float32)
    outputs = []
    for rewrite in (False, True):
        model = core.read_model(str(path))
        if rewrite:
            assert ov_engine.fold_transposes_into_matmuls(model) > 0
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        outputs.append(compiled({"pixel_values": x})[0])
    np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-5)
    assert OpenVINOSession(path, {}, threads=1).rewritten > 0


def test_concurrent_runs_take_turns(tiny_folder):
    """One infer request per session: runs from several threads (the server's) each get their own answer."""
    from concurrent.futures import ThreadPoolExecutor

    session = OpenVINOSession(tiny_folder / "onnx" / "vision_encoder.onnx", {}, threads=1)
    inputs = [np.full((1, 3, 128, 128), v, np.float32) for v in (-1.0, 0.0, 0.5, 1.0)]
    alone = [session.run(None, {"pixel_values": x})[0] for x in inputs]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda x: session.run(None, {"pixel_values": x})[0], inputs * 3))
    for got, want in zip(together, alone * 3):
        np.testing.assert_array_equal(got, want)
