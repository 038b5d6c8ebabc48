"""One image encoded once: the vision features every task on that image starts from.

``Florence2.encode_image(image)`` runs the vision encoder (about 70 % of a short request on a CPU) and
returns an :class:`EncodedImage`; every task-level call (``run``, ``predict``, ``predict_regions``,
``run_tasks``, the per-task methods) takes it wherever it takes an image, so several tasks, regions or
classes on one image pay for one vision encoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .image_size import ImageSize

__all__ = ["EncodedImage"]


@dataclass(frozen=True, eq=False)
class EncodedImage:
    """The vision features of one image and what they belong to; immutable.

    features: float [num_image_tokens, d_model] (read-only), the vision encoder's output for the image;
    image_size: the original image's size (region prompts and answers are in its pixels);
    model: the token of the model that made it (its folder and vision sizes): another model
    folder's features would give garbage, so task calls refuse them.
    """

    features: np.ndarray
    image_size: ImageSize
    model: str

    def __post_init__(self) -> None:
        features = np.asarray(self.features)
        if features.ndim != 2:
            raise ValueError(
                f"EncodedImage.features must be [image_tokens, d_model], got shape {features.shape}"
            )
        if features is self.features and features.flags.writeable:
            features = features.copy()  # never freeze an array the caller still writes to
        features.flags.writeable = False
        object.__setattr__(self, "features", features)
        object.__setattr__(self, "image_size", ImageSize.of(self.image_size))

    def __repr__(self) -> str:
        return (
            f"EncodedImage(features={list(self.features.shape)} {self.features.dtype}, "
            f"image_size={self.image_size}, model={self.model!r})"
        )
