"""Florence-2 with ONNX Runtime and numpy: no PyTorch, no transformers.

    from florence2_runtime import Florence2
    model = Florence2.from_pretrained("florence2-base-onnx")
    model.run("photo.jpg", "<OD>")  # {"<OD>": {"bboxes": [...], "labels": [...]}}
"""

from .inputs.encoded import EncodedImage
from .errors import Florence2Error, MissingDependencyError, ModelFileError
from .model import Florence2
from .tasks.postprocess import post_process_generation
from .tasks.results import Florence2Result
from .tasks.shapes import BoundingBox, Polygon, QuadBox

__all__ = ["BoundingBox", "EncodedImage", "Florence2", "Florence2Error", "Florence2Result", "MissingDependencyError",
           "ModelFileError", "Polygon", "QuadBox", "post_process_generation"]
__version__ = "0.1.0"
