"""The user-facing model: ``Florence2.from_pretrained(folder)``, the per-task methods
(:mod:`.tasks.methods`), ``run`` / ``run_tasks`` and ``generate``.

The facade on top of every layer: it resolves the folder (:mod:`.engine.hub`), opens one
:class:`~.engine.interface.Engine` (host sessions or IO binding on the device) and runs every call
through it; prompts, post-processing and typed results come from :mod:`.tasks`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np

from .engine.config import GENERATION_CONFIG_FILE, TOKENIZER_FILE, RuntimeConfig, read_json
from .engine.host import HostEngine
from .engine.hub import resolve_model
from .engine.int8cpu import check_model_files
from .engine.interface import Engine
from .engine.layouts import LAYOUTS, layout_of
from .engine.native import session_options
from .engine.providers import ProviderSpec, normalize_providers
from .generation import DecodingOptions, GenerateOutput, generate, generate_output
from .inputs.encoded import EncodedImage
from .inputs.images import ImageInput, load_image, preprocess
from .inputs.tokenizer import Florence2Tokenizer
from .tasks.methods import TaskMethods
from .tasks.prompts import build_task_texts, construct_prompt
from .tasks.requests import PromptItem, TaskInput, answer_prompts, task_generation_kwargs, task_items
from .tasks.results import Florence2Result


class Florence2(TaskMethods):
    """A Florence-2 model exported by ``florence2 export``, run with ONNX Runtime.

    Task-level calls (the per-task methods, ``run``, ``run_tasks``, ``predict``, ``predict_regions``)
    take an image or an :class:`~florence2_runtime.inputs.encoded.EncodedImage` and generate up to 1024 new
    tokens unless told otherwise; ``generate`` mirrors transformers' ``generate`` (20 by default).
    """

    def __init__(
        self,
        folder: Path,
        cfg: RuntimeConfig,
        engine: Engine,
        tokenizer: Florence2Tokenizer,
        generation_config: dict,
    ):
        self.folder = folder
        self.config = cfg
        self.engine = engine  # the one route through the graphs: HostEngine or, with IO binding, DeviceEngine
        self.tokenizer = tokenizer
        self.generation_config = generation_config
        self.layout = LAYOUTS["native"]  # from_pretrained sets the folder's layout (engine/layouts.py)
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
    ) -> Florence2:
        """Load a model: an exported folder, a hub repository id or a short alias (:data:`.engine.hub.ALIASES`).

        precision: ``"fp32"``, ``"fp16"``, ``"int8"``, ``"q4"``, ... (:data:`.engine.hub.PRECISIONS`); default fp32 on
        the CPU and host-memory providers, fp16 on CUDA / TensorRT where the repository has it. revision, cache_dir, local_files_only (None: follow
        ``HF_HUB_OFFLINE``), token: as in ``huggingface_hub.snapshot_download`` (:mod:`.engine.hub`).
        providers: ``None`` (CPU), a short name (``"cpu"``, ``"cuda"``, ``"tensorrt"``) or a list of
        onnxruntime provider names / ``(name, options)`` pairs. threads: intra-op threads per session.
        io_binding: keep encoder outputs and KV caches on the device (:mod:`.engine.iobinding`); default: on for
        CUDA/TensorRT, off for the CPU and other host-memory providers such as OpenVINO (where it is the
        same computation; ``True`` forces it, e.g. in tests).
        tensorrt_limits: :class:`~florence2_runtime.engine.tensorrt.TensorRTLimits` sizing the TensorRT profiles.
        """
        from .engine.iobinding import needs_device_buffers

        provider_list = normalize_providers(providers)
        on_device = needs_device_buffers(
            provider_list[0][0]
        )  # CUDA / TensorRT; OpenVINO computes in host memory
        resolved = resolve_model(
            path,
            precision=precision,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            device="gpu" if on_device else "cpu",
        )
        folder = resolved.folder
        layout = layout_of(folder)
        cfg = layout.load_config(folder)
        generation_config = read_json(folder / GENERATION_CONFIG_FILE)
        tokenizer = layout.load_tokenizer(folder / TOKENIZER_FILE)
        so = session_options_ if session_options_ is not None else session_options(threads)
        providers_for = provider_list
        if any(name == "TensorrtExecutionProvider" for name, _ in provider_list):
            from .engine.tensorrt import graph_providers

            providers_for = graph_providers(provider_list, cfg.dims, tensorrt_limits)
        sessions = layout.sessions(folder, cfg, providers_for, so, precision=resolved.precision)
        check_model_files(folder, cfg, sessions.files)  # int8 graphs that saturate on this CPU: warns once
        if io_binding is None:
            io_binding = on_device and layout.io_binding
        if io_binding and not layout.io_binding:
            raise ValueError(f"io_binding is not supported for {layout.name}-layout folders")
        if io_binding:
            from .engine.iobinding import DeviceEngine

            engine: Engine = DeviceEngine(sessions, folder, providers_for, so)
        else:
            engine = HostEngine(sessions, layout.inference)
        model = cls(folder, cfg, engine, tokenizer, generation_config)
        model.layout = layout
        model.name_or_path = str(path)
        return model

    @property
    def sessions(self):
        """The layout's onnxruntime sessions (``engine.sessions``): graph files, raw sessions."""
        return self.engine.sessions

    @property
    def providers(self) -> list[str]:
        """The execution providers onnxruntime actually runs the decoder on."""
        return self.engine.providers

    def decoding_options(self, **generation_kwargs: Any) -> DecodingOptions:
        """The checkpoint's generation defaults overridden by ``generation_kwargs`` (transformers' names)."""
        options = DecodingOptions.from_generation_config(self.generation_config, **generation_kwargs)
        if options.max_length > self.config.max_position_embeddings:
            raise ValueError(
                f"max_new_tokens={options.max_new_tokens} is too large: the decoder has "
                f"{self.config.max_position_embeddings} positions, so at most "
                f"{self.config.max_position_embeddings - 1} new tokens"
            )
        return options

    def task_options(self, **generation_kwargs: Any) -> DecodingOptions:
        """``decoding_options`` with the task-level default ``max_new_tokens`` = min(1024, positions - 1)
        (:func:`~florence2_runtime.tasks.requests.task_generation_kwargs`)."""
        return self.decoding_options(
            **task_generation_kwargs(generation_kwargs, self.config.max_position_embeddings)
        )

    def prepare_inputs(self, images: Sequence[ImageInput], texts: Sequence[str]):
        """Images and processor-style texts -> (pixel_values [B, 3, H, W], text ids [B, T], text mask [B, T])."""
        return (self.pixel_values([load_image(im) for im in images]), *self.prepare_texts(texts))

    def pixel_values(self, images: Sequence) -> np.ndarray:
        """PIL images -> pixel_values [B, 3, H, W] float32, as the processor makes them."""
        cfg = self.config
        return preprocess(
            images,
            size=cfg.image_size,
            mean=cfg.image_mean,
            std=cfg.image_std,
            resample=cfg.resample,
            rescale_factor=cfg.rescale_factor,
        )

    def prepare_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Processor-style texts -> (text ids [B, T], text mask [B, T]); refuses prompts too long for the encoder."""
        cfg = self.config
        prompts = [
            construct_prompt(t, cfg.task_prompts_without_inputs, cfg.task_prompts_with_input) for t in texts
        ]
        text_ids, text_mask = self.tokenizer.encode_prompts(prompts)
        room = cfg.max_position_embeddings - cfg.num_image_tokens
        if text_ids.shape[1] > room:
            raise ValueError(
                f"the prompt is {text_ids.shape[1]} tokens long; this model takes at most {room} "
                f"next to the image's {cfg.num_image_tokens} tokens"
            )
        return text_ids, text_mask

    @property
    def encoding_token(self) -> str:
        """What an :class:`EncodedImage` of this model carries: the model folder and its vision sizes."""
        cfg = self.config
        return f"{Path(self.folder).resolve()}:{cfg.image_size[0]}x{cfg.image_size[1]}:{cfg.d_model}"

    def encode_image(self, image: ImageInput | EncodedImage) -> EncodedImage:
        """Run the vision encoder once: an :class:`EncodedImage` every task-level call accepts as its image."""
        if isinstance(image, EncodedImage):
            return self._check_encoded(image)
        pil = load_image(image)
        pixel_values = self.pixel_values([pil])
        features = self.engine.encode_images(pixel_values)
        return EncodedImage(features[0], pil.size, self.encoding_token)

    def _check_encoded(self, encoded: EncodedImage) -> EncodedImage:
        if encoded.model != self.encoding_token:
            raise ValueError(
                f"this EncodedImage was made by another model ({encoded.model}); this model is "
                f"{self.encoding_token}: encode the image with this model's encode_image"
            )
        return encoded

    def generate_encoded(
        self, features: np.ndarray, texts: Sequence[str], options: DecodingOptions
    ) -> np.ndarray:
        """``generate`` on vision features [B, I, D] (``EncodedImage.features`` stacked) instead of images."""
        text_ids, text_mask = self.prepare_texts(texts)
        return generate(
            self.engine.start(features, text_ids, text_mask, options.num_beams), len(texts), options
        )

    @overload
    def generate(
        self,
        images: ImageInput | Sequence[ImageInput],
        texts: str | Sequence[str],
        *,
        output_scores: bool = False,
        return_dict_in_generate: Literal[False] = False,
        **generation_kwargs: Any,
    ) -> np.ndarray: ...

    @overload
    def generate(
        self,
        images: ImageInput | Sequence[ImageInput],
        texts: str | Sequence[str],
        *,
        output_scores: bool = False,
        return_dict_in_generate: Literal[True],
        **generation_kwargs: Any,
    ) -> GenerateOutput: ...

    def generate(
        self,
        images: ImageInput | Sequence[ImageInput],
        texts: str | Sequence[str],
        *,
        output_scores: bool = False,
        return_dict_in_generate: bool = False,
        **generation_kwargs: Any,
    ) -> np.ndarray | GenerateOutput:
        """Token ids as ``Florence2ForConditionalGeneration.generate`` returns them: int64 [batch, length].

        images: PIL images, HWC uint8 arrays, paths or bytes; texts: what ``Florence2Processor(text=...)``
        takes (a task token, optionally followed by its input), one per image.
        return_dict_in_generate: return a :class:`~.generation.GenerateOutput` (``sequences``), which with
        ``output_scores`` also holds ``transition_scores`` [batch, length - 1] (transformers'
        ``compute_transition_scores``: ``normalize_logits=True`` for greedy search, False for beam
        search), and for beam search ``sequences_scores`` [batch] and ``beam_indices``.
        ``output_scores`` alone changes nothing, as in transformers.
        """
        images, texts = _as_batch(images, texts)
        options = self.decoding_options(**generation_kwargs)
        pixel_values, text_ids, text_mask = self.prepare_inputs(images, texts)
        features = self.engine.encode_images(
            pixel_values, to_host=False
        )  # stays on the device with IO binding
        inference = self.engine.start(features, text_ids, text_mask, options.num_beams)
        del features, pixel_values
        if not return_dict_in_generate:
            return generate(inference, len(images), options)
        return generate_output(inference, len(images), options, output_scores=bool(output_scores))

    def decode(self, ids: np.ndarray) -> list[str]:
        """``processor.batch_decode(ids, skip_special_tokens=False)``."""
        return self.tokenizer.batch_decode(ids)

    def run(
        self,
        image: ImageInput | EncodedImage,
        task: str,
        text: str | None = None,
        region: Sequence[float] | None = None,
        *,
        region_format: str = "pixels",
        **generation_kwargs: Any,
    ) -> dict:
        """Run one task on one image; returns ``Florence2Processor.post_process_generation``'s dict.

        image: an image or an :class:`EncodedImage` (``encode_image``); region: ``(x1, y1, x2, y2)`` in
        pixels, or fractions of width / height with ``region_format="normalized"``. Generation: up to 1024
        new tokens and the checkpoint's other settings unless given (transformers' names).
        """
        return self.run_tasks(
            image, [TaskInput(task, text, region)], region_format=region_format, **generation_kwargs
        )

    def run_tasks(
        self,
        image: ImageInput | EncodedImage,
        tasks: Sequence[Any],
        *,
        region_format: str = "pixels",
        **generation_kwargs: Any,
    ) -> dict:
        """Several tasks on one image with one vision encoding: ``{task: answer}`` for every task, each
        equal to its own ``run``. Entries: ``"<OD>"``, ``(task, text)``, ``(task, region)`` or
        ``{"task", "text", "region"}``; the prompts share batched text encoding and decoding."""
        items = task_items(tasks, region_format)
        options = self.task_options(**generation_kwargs)
        image, size = _image_and_size(image)
        texts = [item.prompt(size, region_format) for item in items]  # every input checked before encoding
        encoded = self.encode_image(image)
        prompts = [PromptItem(encoded, item.task, text) for item, text in zip(items, texts)]
        return {
            item.task: answer[item.task]
            for item, answer in zip(items, answer_prompts(self, prompts, options))
        }

    def predict(
        self,
        image: ImageInput | EncodedImage,
        task: str,
        text: str | None = None,
        region: Sequence[float] | None = None,
        *,
        region_format: str = "pixels",
        **generation_kwargs: Any,
    ) -> Florence2Result:
        """``run`` as a typed :class:`~florence2_runtime.tasks.results.Florence2Result` (``.raw`` is run's dict)."""
        image, size = _image_and_size(image)
        answer = self.run(image, task, text, region, region_format=region_format, **generation_kwargs)
        return Florence2Result.from_dict(answer, size)

    def predict_regions(
        self,
        image: ImageInput | EncodedImage,
        task: str,
        regions: Sequence[Sequence[float]],
        *,
        region_format: str = "pixels",
        **generation_kwargs: Any,
    ) -> list[Florence2Result]:
        """A region task on several regions of one image: one vision encoding, batched prompts; one
        result per region. Florence-2 reads one region per prompt, so each region gets its own prompt.
        """
        return self.predict_prompts(
            image, task, regions=regions, region_format=region_format, **generation_kwargs
        )

    def predict_prompts(
        self,
        image: ImageInput | EncodedImage,
        task: str,
        *,
        texts: Sequence[str] | None = None,
        regions: Sequence[Sequence[float]] | None = None,
        region_format: str = "pixels",
        **generation_kwargs: Any,
    ) -> list[Florence2Result]:
        """One task with several inputs (texts, or regions) on one image: one vision encoding; one result each."""
        options = self.task_options(**generation_kwargs)
        image, size = _image_and_size(image)
        if texts is not None:
            if isinstance(texts, str) or not texts:
                raise ValueError(f"texts must be a non-empty list of strings, got {texts!r:.100}")
            prompts = [TaskInput(task, t).prompt(size) for t in texts]
        else:
            prompts = build_task_texts(task, regions=regions, image_size=size, region_format=region_format)
        encoded = self.encode_image(image)
        answers = answer_prompts(self, [PromptItem(encoded, task, p) for p in prompts], options)
        return [Florence2Result.from_dict(a, encoded.image_size) for a in answers]


def _image_and_size(image) -> tuple[Any, tuple[int, int]]:
    """An EncodedImage as it is, anything else as a PIL image; and the (width, height) prompts refer to."""
    if isinstance(image, EncodedImage):
        return image, image.image_size
    pil = load_image(image)
    return pil, pil.size


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
