"""HTTP serving for Florence-2 (the ``serve`` extra): FastAPI app, dynamic batching, Ray Serve deployment.

    from florence2_runtime.server import ServerLimits, create_app
    app = create_app(Florence2.from_pretrained("model"), ServerLimits(max_batch_size=8))

Importing this package needs no web framework; ``create_app`` imports FastAPI when called.

The top layer: the app and its routers (``app.py`` tells which module does what), batching over
``Florence2.encode_image`` and task-level generation, the settings and the ``serve`` sub-command's options. May import every layer below it (errors,
generation, inputs, engine, tasks, model, the package's ``__version__``, cli's argparse types).
"""

from __future__ import annotations

from .settings import ServerLimits


def create_app(model, limits: ServerLimits | None = None, model_name: str | None = None, **options):
    """See :func:`florence2_runtime.server.app.create_app` (options: ``ui``, ``docs``)."""
    from .app import create_app as _create_app

    return _create_app(model, limits, model_name, **options)


__all__ = ["ServerLimits", "create_app"]
