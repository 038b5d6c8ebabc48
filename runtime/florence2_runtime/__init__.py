"""Florence-2 with ONNX Runtime and numpy: no PyTorch, no transformers.

    from florence2_runtime import Florence2
    model = Florence2.from_pretrained("florence2-base-onnx")
    model.run("photo.jpg", "<OD>")  # {"<OD>": {"bboxes": [...], "labels": [...]}}

Layers, lowest first; a layer imports only layers below it (``tests/runtime/test_layout.py`` checks it; the
last two share the top layer)::

    errors       project errors and ``require`` (optional dependencies with an install hint)
    generation   decoding options, logit filters, greedy and beam search (the ``Inference`` protocol)
    inputs       image sizes (``ImageSize``), images, tokenizer, ``EncodedImage``
    engine       graph declarations, runtime config, hub resolution, layouts, sessions, IO binding, providers
    tasks        the task table, prompts, post-processing, task-level generation, typed results, converters
    model        ``Florence2``, the facade: one ``engine.Engine`` per model
    (package)    this module: the public API
    cli          the ``florence2`` command (``server``, ``datasets``, ``florence2_export``: lazily, per sub-command)
    server       the HTTP server
    mcp          the MCP server: the tasks as tools for AI agents (beside ``server``; imports its image checks)
    datasets     ``florence2 label`` / ``eval``: folders, PDFs, videos -> COCO / YOLO / VOC datasets; mAP
"""

from .errors import Florence2Error, MissingDependencyError, ModelFileError
from .inputs.encoded import EncodedImage
from .model import Florence2
from .tasks.postprocess import post_process_generation
from .tasks.results import Florence2Result
from .tasks.shapes import BoundingBox, Polygon, QuadBox

__all__ = [
    "BoundingBox",
    "EncodedImage",
    "Florence2",
    "Florence2Error",
    "Florence2Result",
    "MissingDependencyError",
    "ModelFileError",
    "Polygon",
    "QuadBox",
    "post_process_generation",
]
__version__ = "0.1.0"
