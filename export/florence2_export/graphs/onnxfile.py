"""How the native layout stores a graph: the graph in ``NAME.onnx``, its weights beside it in ``NAME.onnx_data``.

onnxruntime reads external weights straight into its tensors; a single-file graph is first parsed
whole into protobuf buffers and then copied, so loading it briefly takes twice its size (Florence-2-
large's 1.45 GB vision encoder: 2.33 GB peak against 1.54 GB split). onnxruntime finds the data file
from the graph's own path, so the runtime loads both forms alike (folders written before are
single-file).
"""

from __future__ import annotations

from pathlib import Path

DATA_SUFFIX = "_data"  # vision_encoder.onnx -> vision_encoder.onnx_data
MIN_EXTERNAL_BYTES = 1024  # smaller tensors (shapes, scalars) stay inside the graph


def data_file(path: str | Path) -> Path:
    """Where the weights of graph ``path`` live."""
    path = Path(path)
    return path.with_name(path.name + DATA_SUFFIX)


def save(model, path: str | Path) -> Path:
    """Write ``model`` (an ``onnx.ModelProto`` with its weights loaded) as ``path`` + its data file, replacing both."""
    import onnx

    path = Path(path)
    data = data_file(path)
    data.unlink(missing_ok=True)
    onnx.save(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data.name,
        size_threshold=MIN_EXTERNAL_BYTES,
    )
    if data.exists():
        data.chmod(path.stat().st_mode & 0o777)  # onnx creates it owner-only; match the graph file
    return path


def split(path: str | Path) -> Path:
    """Rewrite graph ``path`` (single-file or already split) in the split form."""
    import onnx

    return save(onnx.load(str(path)), path)
