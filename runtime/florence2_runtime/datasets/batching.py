"""Pictures through the model in batches: :func:`answer_batch` (the one call below the public API) and
:func:`detect_batch` (a batch's detections, one image at a time when the batch fails).

A batch of images goes through the vision encoder together, then every prompt of every image through the
text encoder and decoder in batches (the server's batching: each row cut after its first EOS, so a
prompt's answer equals the answer of ``Florence2.run`` on that image and prompt; the vision features of
a batch equal those of one image up to float rounding).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from ..inputs.image_size import ImageSize
from .detections import Detection, LabelSpec

__all__ = ["answer_batch", "detect_batch"]


def answer_batch(
    model,
    images: Sequence[Image.Image],
    prompts: Sequence[tuple[str, str | None]],
    generation: Mapping[str, Any],
) -> list[list[dict]]:
    """Every (task, text) prompt on every RGB image: ``answers[i][j]`` is ``model.run(images[i], *prompts[j],
    scores=True, **generation)``'s ``{task: answer}``, from one vision-encoder call for the batch: each
    object with its confidence (:func:`.detections.answer_scores` reads them).

    The one function of this package that reaches below ``Florence2``'s public methods (the engine, the
    task-level batching of :mod:`florence2_runtime.tasks`); re-point it here when those move.
    """
    from ..tasks.batch import PromptItem, TaskInput, answer_prompts, task_decoding_options

    options = task_decoding_options(model, **generation)
    texts = [[TaskInput(task, text).prompt(ImageSize.of(im.size)) for task, text in prompts] for im in images]
    encoded = model.encode_images(list(images))
    items = [
        PromptItem(encoded[i], task, text)
        for i in range(len(images))
        for (task, _), text in zip(prompts, texts[i])
    ]
    answers = answer_prompts(model, items, options, scores=True)
    n = len(prompts)
    return [answers[i * n : (i + 1) * n] for i in range(len(images))]


def detect_batch(
    model, spec: LabelSpec, images: Sequence[Image.Image], generation: Mapping[str, Any]
) -> list[list[Detection] | Exception]:
    """Each image's detections; if the batch fails, each image alone, and an image that fails alone gets
    its exception (the others are kept)."""
    if len(images) > 1:
        try:
            answers = answer_batch(model, images, spec.prompts, generation)
            return [spec.detections(a, im.size) for a, im in zip(answers, images)]
        except Exception:  # find the image that fails: each alone
            pass
    out: list[list[Detection] | Exception] = []
    for im in images:
        try:
            out.append(spec.detections(answer_batch(model, [im], spec.prompts, generation)[0], im.size))
        except Exception as e:
            out.append(e)
    return out
