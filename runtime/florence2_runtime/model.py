"""The user-facing model: ``Florence2.from_pretrained(folder)``, ``generate`` and ``run``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .config import GENERATION_CONFIG_FILE, TOKENIZER_FILE, RuntimeConfig, read_json
from .decoding import DecodingOptions, generate
from .errors import ModelFileError
from .inference import DecoderInference, Sessions, session_options
from .postprocess import post_process_generation
from .preprocess import ImageInput, load_image, preprocess
from .prompts import build_task_text, construct_prompt
from .providers import ProviderSpec, normalize_providers
from .tokenizer import Florence2Tokenizer


class Florence2:
    """A Florence-2 model exported by ``florence2 export``, run with ONNX Runtime."""

    def __init__(self, folder: Path, cfg: RuntimeConfig, sessions: Sessions, tokenizer: Florence2Tokenizer,
                 generation_config: dict):
        self.folder = folder
        self.config = cfg
        self.sessions = sessions
        self.tokenizer = tokenizer
        self.generation_config = generation_config

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        providers: Sequence[ProviderSpec] | str | None = None,
        *,
        threads: int | None = None,
        session_options_=None,
    ) -> "Florence2":
        """Load an exported model folder.

        providers: ``None`` (CPU), a short name (``"cpu"``, ``"cuda"``, ``"tensorrt"``) or a list of
        onnxruntime provider names / ``(name, options)`` pairs. threads: intra-op threads per session.
        """
        folder = Path(path)
        if not folder.is_dir():
            raise ModelFileError(folder, "not a folder (expected a model folder written by 'florence2 export')")
        cfg = RuntimeConfig.load(folder)
        generation_config = read_json(folder / GENERATION_CONFIG_FILE)
        tokenizer = Florence2Tokenizer.from_file(folder / TOKENIZER_FILE)
        so = session_options_ if session_options_ is not None else session_options(threads)
        sessions = Sessions(folder, cfg, normalize_providers(providers), so)
        return cls(folder, cfg, sessions, tokenizer, generation_config)

    @property
    def providers(self) -> list[str]:
        """The execution providers onnxruntime actually runs the decoder on."""
        return self.sessions.providers

    def decoding_options(self, **generation_kwargs: Any) -> DecodingOptions:
        """The checkpoint's generation defaults overridden by ``generation_kwargs`` (transformers' names)."""
        return DecodingOptions.from_generation_config(self.generation_config, **generation_kwargs)

    def encode(self, images: Sequence[ImageInput], texts: Sequence[str]):
        """Images and processor-style texts -> (cross K/V, encoder mask), batch-first."""
        cfg = self.config
        pil = [load_image(im) for im in images]
        pixel_values = preprocess(pil, size=cfg.image_size, mean=cfg.image_mean, std=cfg.image_std,
                                  resample=cfg.resample, rescale_factor=cfg.rescale_factor)
        prompts = [construct_prompt(t, cfg.task_prompts_without_inputs, cfg.task_prompts_with_input) for t in texts]
        text_ids, text_mask = self.tokenizer.encode_prompts(prompts)
        features = self.sessions.encode_images(pixel_values)
        return self.sessions.encode_text(text_ids, text_mask, features)

    def generate(self, images: ImageInput | Sequence[ImageInput], texts: str | Sequence[str],
                 **generation_kwargs: Any) -> np.ndarray:
        """Token ids as ``Florence2ForConditionalGeneration.generate`` returns them: int64 [batch, length].

        images: PIL images, HWC uint8 arrays, paths or bytes; texts: what ``Florence2Processor(text=...)``
        takes (a task token, optionally followed by its input), one per image.
        """
        images, texts = _as_batch(images, texts)
        options = self.decoding_options(**generation_kwargs)
        cross, mask = self.encode(images, texts)
        k = options.num_beams
        if k > 1:
            cross = [np.repeat(c, k, axis=0) for c in cross]
            mask = np.repeat(mask, k, axis=0)
        return generate(DecoderInference(self.sessions, cross, mask), len(images), options)

    def decode(self, ids: np.ndarray) -> list[str]:
        """``processor.batch_decode(ids, skip_special_tokens=False)``."""
        return self.tokenizer.batch_decode(ids)

    def run(self, image: ImageInput, task: str, text: str | None = None, region: Sequence[float] | None = None,
            **generation_kwargs: Any) -> dict:
        """Run one task on one image; returns ``Florence2Processor.post_process_generation``'s dict."""
        pil = load_image(image)
        size = pil.size  # (width, height)
        prompt = build_task_text(task, text=text, region=region, image_size=size)
        ids = self.generate([pil], [prompt], **generation_kwargs)
        decoded = self.decode(ids)[0]
        return post_process_generation(decoded, task, size,
                                       banned_grounding_tokens=self.config.banned_grounding_tokens or None)


def _as_batch(images, texts) -> tuple[list, list[str]]:
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(images, (list, tuple)):
        images = [images]
    texts = list(texts)
    if not texts or not images:
        raise ValueError("generate needs at least one image and one text")
    if len(texts) != len(images):
        raise ValueError(f"got {len(images)} images but {len(texts)} texts; pass one text per image")
    for t in texts:
        if not isinstance(t, str):
            raise ValueError(f"texts must be strings, got {type(t).__name__}")
    return list(images), texts
