"""Provider selection: short names, availability errors, the check of what onnxruntime granted; IO binding
only for device-memory providers (a host-memory one such as OpenVINO takes the plain path)."""

from __future__ import annotations

import pytest

from florence2_runtime.engine import providers as prov
from florence2_runtime.engine.host import HostEngine
from florence2_runtime.engine.providers import ProviderError, create_session, normalize_providers


def test_short_names_expand_with_cpu_fallback(monkeypatch):
    class FakeOrt:
        @staticmethod
        def get_available_providers():
            return ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]

    monkeypatch.setattr(prov, "onnxruntime", lambda: FakeOrt)
    assert [n for n, _ in normalize_providers("tensorrt")] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert normalize_providers([("cuda", {"device_id": 1})])[0] == ("CUDAExecutionProvider", {"device_id": 1})
    assert normalize_providers(None) == [("CPUExecutionProvider", {})]


@pytest.mark.parametrize("name", ["cuda", "tensorrt", "NoSuchExecutionProvider"])
def test_unavailable_provider_is_one_clear_error(name):
    import onnxruntime

    if name != "NoSuchExecutionProvider" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(ProviderError, match="not available"):
        normalize_providers(name)


def test_fallback_to_cpu_warns(tiny_folder, monkeypatch):
    """When onnxruntime does not grant the provider asked for, the user hears about it."""
    import onnxruntime

    real = onnxruntime.InferenceSession

    class Session(real):
        def __init__(self, path, sess_options=None, providers=None):
            super().__init__(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(onnxruntime, "InferenceSession", Session)
    with pytest.warns(
        RuntimeWarning,
        match="asked for CUDAExecutionProvider but onnxruntime runs it on CPUExecutionProvider",
    ):
        create_session(
            tiny_folder / "onnx" / "decoder.onnx",
            [("CUDAExecutionProvider", {}), ("CPUExecutionProvider", {})],
        )


def test_corrupt_graph_names_the_file(tmp_path):
    bad = tmp_path / "decoder.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"decoder.onnx"):
        create_session(bad, [("CPUExecutionProvider", {})])


def test_io_binding_only_for_device_memory_providers():
    from florence2_runtime.engine.iobinding import needs_device_buffers

    assert needs_device_buffers("CUDAExecutionProvider") and needs_device_buffers("TensorrtExecutionProvider")
    for name in (
        "CPUExecutionProvider",
        "OpenVINOExecutionProvider",
        "CoreMLExecutionProvider",
        "SomethingNew",
    ):
        assert not needs_device_buffers(name)


def test_openvino_folder_loads_on_the_plain_path(tiny_folder, monkeypatch):
    """With a host-memory provider first (OpenVINO, faked here as onnxruntime has no such build on this
    machine), from_pretrained takes the plain numpy path instead of raising in IO binding."""
    from florence2_runtime import Florence2
    from florence2_runtime.engine import providers

    ort = providers.onnxruntime()
    real = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: [*real, "OpenVINOExecutionProvider"])
    with pytest.warns(RuntimeWarning):  # onnxruntime runs it on the CPU and says so
        model = Florence2.from_pretrained(
            tiny_folder, providers=["OpenVINOExecutionProvider", "CPUExecutionProvider"]
        )
    assert isinstance(model.engine, HostEngine)
