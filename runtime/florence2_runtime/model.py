"""The user-facing model: ``Florence2.from_pretrained(folder)``, ``generate`` and ``run``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .config import GENERATION_CONFIG_FILE, TOKENIZER_FILE, RuntimeConfig, read_json
from .decoding import DecodingOptions, Inference, generate
from .hub import resolve_model
from .inference import Sessions, session_options
from .layouts import LAYOUTS, layout_of
from .postprocess import post_process_generation
from .preprocess import ImageInput, load_image, preprocess
from .prompts import build_task_text, build_task_texts, construct_prompt
from .providers import ProviderSpec, normalize_providers
from .results import Florence2Result
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
        self.layout = LAYOUTS["native"]  # from_pretrained sets the folder's layout (layouts.py)
        self.device_runner = None  # set when IO binding is on (iobinding.DeviceRunner)
        self.name_or_path = str(folder)  # what from_pretrained was given (a folder, hub id or alias)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        providers: Sequence[ProviderSpec] | str | None = None,
        *,
        precision: str | None = None,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool | None = None,
        token: str | bool | None = None,
        threads: int | None = None,
        session_options_=None,
        io_binding: bool | None = None,
        tensorrt_limits=None,
    ) -> "Florence2":
        """Load a model: an exported folder, a hub repository id or a short alias (:data:`.hub.ALIASES`).

        precision: ``"fp32"``, ``"fp16"``, ``"int8"``, ``"q4"``, ... (:data:`.hub.PRECISIONS`); default fp32 on
        the CPU, fp16 on a GPU where the repository has it. revision, cache_dir, local_files_only (None: follow
        ``HF_HUB_OFFLINE``), token: as in ``huggingface_hub.snapshot_download`` (:mod:`.hub`).
        providers: ``None`` (CPU), a short name (``"cpu"``, ``"cuda"``, ``"tensorrt"``) or a list of
        onnxruntime provider names / ``(name, options)`` pairs. threads: intra-op threads per session.
        io_binding: keep encoder outputs and KV caches on the device (:mod:`.iobinding`); default: on for
        CUDA/TensorRT, off for the CPU and other host-memory providers such as OpenVINO (where it is the
        same computation; ``True`` forces it, e.g. in tests).
        tensorrt_limits: :class:`~florence2_runtime.tensorrt.TensorRTLimits` sizing the TensorRT profiles.
        """
        provider_list = normalize_providers(providers)
        on_cpu = provider_list[0][0] == "CPUExecutionProvider"
        resolved = resolve_model(path, precision=precision, revision=revision, cache_dir=cache_dir,
                                 local_files_only=local_files_only, token=token, device="cpu" if on_cpu else "gpu")
        folder = resolved.folder
        layout = layout_of(folder)
        cfg = layout.load_config(folder)
        generation_config = read_json(folder / GENERATION_CONFIG_FILE)
        tokenizer = layout.load_tokenizer(folder / TOKENIZER_FILE)
        so = session_options_ if session_options_ is not None else session_options(threads)
        providers_for = provider_list
        if any(name == "TensorrtExecutionProvider" for name, _ in provider_list):
            from .tensorrt import graph_providers

            providers_for = graph_providers(provider_list, cfg.dims, tensorrt_limits)
        sessions = layout.sessions(folder, cfg, providers_for, so, precision=resolved.precision)
        model = cls(folder, cfg, sessions, tokenizer, generation_config)
        model.layout = layout
        model.name_or_path = str(path)
        if io_binding is None:
            from .iobinding import needs_device_buffers

            io_binding = needs_device_buffers(provider_list[0][0]) and layout.io_binding
        if io_binding and not layout.io_binding:
            raise ValueError(f"io_binding is not supported for {layout.name}-layout folders")
        if io_binding:
            from .iobinding import DeviceRunner

            model.device_runner = DeviceRunner(sessions, folder, providers_for, so)
        return model

    @property
    def providers(self) -> list[str]:
        """The execution providers onnxruntime actually runs the decoder on."""
        return self.sessions.providers

    def decoding_options(self, **generation_kwargs: Any) -> DecodingOptions:
        """The checkpoint's generation defaults overridden by ``generation_kwargs`` (transformers' names)."""
        options = DecodingOptions.from_generation_config(self.generation_config, **generation_kwargs)
        if options.max_length > self.config.max_position_embeddings:
            raise ValueError(f"max_new_tokens={options.max_new_tokens} is too large: the decoder has "
                             f"{self.config.max_position_embeddings} positions, so at most "
                             f"{self.config.max_position_embeddings - 1} new tokens")
        return options

    def prepare_inputs(self, images: Sequence[ImageInput], texts: Sequence[str]):
        """Images and processor-style texts -> (pixel_values [B, 3, H, W], text ids [B, T], text mask [B, T])."""
        cfg = self.config
        pil = [load_image(im) for im in images]
        pixel_values = preprocess(pil, size=cfg.image_size, mean=cfg.image_mean, std=cfg.image_std,
                                  resample=cfg.resample, rescale_factor=cfg.rescale_factor)
        prompts = [construct_prompt(t, cfg.task_prompts_without_inputs, cfg.task_prompts_with_input) for t in texts]
        text_ids, text_mask = self.tokenizer.encode_prompts(prompts)
        room = cfg.max_position_embeddings - cfg.num_image_tokens
        if text_ids.shape[1] > room:
            raise ValueError(f"the prompt is {text_ids.shape[1]} tokens long; this model takes at most {room} "
                             f"next to the image's {cfg.num_image_tokens} tokens")
        return pixel_values, text_ids, text_mask

    def encode(self, images: Sequence[ImageInput], texts: Sequence[str]):
        """Images and processor-style texts -> (cross K/V, encoder mask), batch-first."""
        pixel_values, text_ids, text_mask = self.prepare_inputs(images, texts)
        features = self.sessions.encode_images(pixel_values)
        return self.sessions.encode_text(text_ids, text_mask, features)

    def decoder_inference(self, cross: list[np.ndarray], mask: np.ndarray, num_beams: int = 1) -> Inference:
        """The decoder state for encoded inputs, ``num_beams`` rows per item (an item's beams contiguous).

        Exports with ``shared_cross_kv`` take one cross K/V per item; older ones get it repeated per beam."""
        if num_beams > 1 and not self.config.shared_cross_kv:
            cross = [np.repeat(c, num_beams, axis=0) for c in cross]
            mask = np.repeat(mask, num_beams, axis=0)
        if self.config.shared_cross_kv:
            return self.layout.inference(self.sessions, cross, mask, rows=mask.shape[0] * num_beams)
        return self.layout.inference(self.sessions, cross, mask)

    def generate(self, images: ImageInput | Sequence[ImageInput], texts: str | Sequence[str],
                 **generation_kwargs: Any) -> np.ndarray:
        """Token ids as ``Florence2ForConditionalGeneration.generate`` returns them: int64 [batch, length].

        images: PIL images, HWC uint8 arrays, paths or bytes; texts: what ``Florence2Processor(text=...)``
        takes (a task token, optionally followed by its input), one per image.
        """
        images, texts = _as_batch(images, texts)
        options = self.decoding_options(**generation_kwargs)
        if self.device_runner is not None:
            inference = self.device_runner.start(*self.prepare_inputs(images, texts), num_beams=options.num_beams)
        else:
            # no local reference: with beams the un-repeated cross K/V would stay alive during decoding
            inference = self.decoder_inference(*self.encode(images, texts), options.num_beams)
        return generate(inference, len(images), options)

    def decode(self, ids: np.ndarray) -> list[str]:
        """``processor.batch_decode(ids, skip_special_tokens=False)``."""
        return self.tokenizer.batch_decode(ids)

    def run(self, image: ImageInput, task: str, text: str | None = None, region: Sequence[float] | None = None,
            *, region_format: str = "pixels", **generation_kwargs: Any) -> dict:
        """Run one task on one image; returns ``Florence2Processor.post_process_generation``'s dict.

        region: ``(x1, y1, x2, y2)`` in pixels, or fractions of width / height with
        ``region_format="normalized"``.
        """
        pil = load_image(image)
        size = pil.size  # (width, height)
        prompt = build_task_text(task, text=text, region=region, image_size=size, region_format=region_format)
        return self._answers([pil], [prompt], task, size, generation_kwargs)[0]

    def predict(self, image: ImageInput, task: str, text: str | None = None,
                region: Sequence[float] | None = None, *, region_format: str = "pixels",
                **generation_kwargs: Any) -> Florence2Result:
        """``run`` as a typed :class:`~florence2_runtime.results.Florence2Result` (``.raw`` is run's dict)."""
        pil = load_image(image)
        answer = self.run(pil, task, text, region, region_format=region_format, **generation_kwargs)
        return Florence2Result.from_dict(answer, pil.size)

    def predict_regions(self, image: ImageInput, task: str, regions: Sequence[Sequence[float]], *,
                        region_format: str = "pixels", **generation_kwargs: Any) -> list[Florence2Result]:
        """A region task on several regions of one image, one batched ``generate``; one result per region.

        Florence-2 reads one region per prompt, so each region gets its own prompt in the batch.
        """
        pil = load_image(image)
        prompts = build_task_texts(task, regions=regions, image_size=pil.size, region_format=region_format)
        answers = self._answers([pil] * len(prompts), prompts, task, pil.size, generation_kwargs)
        return [Florence2Result.from_dict(a, pil.size) for a in answers]

    def _answers(self, images: list, prompts: list[str], task: str, size: tuple[int, int],
                 generation_kwargs: dict) -> list[dict]:
        """Generate for a batch of prompts of one task on images of one size; post-processed dicts."""
        ids = self.generate(images, prompts, **generation_kwargs)
        banned = self.config.banned_grounding_tokens or None
        return [post_process_generation(text, task, size, banned_grounding_tokens=banned)
                for text in self.decode(ids)]


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
