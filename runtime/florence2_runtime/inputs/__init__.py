"""Model inputs: image sizes (:class:`~.image_size.ImageSize`, width first), image loading and preprocessing
(:mod:`.images`), the tokenizer (:mod:`.tokenizer`) and :class:`~.encoded.EncodedImage` (vision features
computed once, reused by every task).

May import: :mod:`florence2_runtime.errors` only.
"""
