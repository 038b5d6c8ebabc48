"""Export Florence-2 checkpoints (transformers + PyTorch) to ONNX model folders for ``florence2_runtime``."""

from .pipeline import ExportCheckError, ExportReport, export
from .checkpoints.errors import CheckpointError

__all__ = ["CheckpointError", "ExportCheckError", "ExportReport", "export"]
