"""Export Florence-2 checkpoints (transformers + PyTorch) to ONNX model folders for ``florence2_runtime``."""

from .checkpoints.errors import CheckpointError
from .pipeline import ExportCheckError, ExportReport, export

__all__ = ["CheckpointError", "ExportCheckError", "ExportReport", "export"]
