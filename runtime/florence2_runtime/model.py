"""The user-facing model: ``Florence2.from_pretrained(folder)``, the per-task methods
(:mod:`.tasks.methods`), ``run`` / ``run_tasks`` / ``predict`` and ``generate``.

The facade on top of every layer: it resolves the folder (:mod:`.engine.hub`), opens one
:class:`~.engine.interface.Engine` (host sessions or IO binding on the device) and runs every call
through it; prompts, post-processing, batching and typed results come from :mod:`.tasks`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, overload

import numpy as np

from .engine import openvino
from .engine.config import GENERATION_CONFIG_FILE, TOKENIZER_FILE, RuntimeConfig, read_json
from .engine.host import HostEngine
from .engine.hub import resolve_model
from .engine.int8cpu import check_model_files
from .engine.interface import Engine
from .engine.layouts import layout_of
from .engine.native import ProvidersFor, release_freed_memory, session_options
from .engine.providers import ProviderSpec, normalize_providers
from .errors import Florence2Error
from .generation import GenerateOutput, generate, generate_output
from .inputs.encoded import EncodedImage
from .inputs.image_size import ImageSize
from .inputs.images import ImageInput, load_image, preprocess
from .inputs.tokenizer import Florence2Tokenizer
from .tasks.batch import (
    PromptItem,
    TaskInput,
    answer_prompts,
    decoding_options,
    task_decoding_options,
    task_items,
)
from .tasks.methods import TaskMethods
from .tasks.prompts import build_task_texts, encode_prompts
from .tasks.results import Florence2Result

__all__ = ["Florence2", "processor_inputs"]


class Florence2(TaskMethods):
    """A Florence-2 model exported by ``florence2 export``, run with ONNX Runtime.

    Task-level calls (the per-task methods, ``run``, ``run_tasks``, ``predict``, ``predict_regions``)
    take an image or an :class:`~florence2_runtime.inputs.encoded.EncodedImage` and generate up to 1024 new
    tokens unless told otherwise; ``generate`` mirrors transformers' ``generate`` (20 by default) and
    ``tokenizer.batch_decode`` its ``processor.batch_decode``. ``close()`` (or ``with``) releases the sessions.
    """

    def __init__(
        self,
        folder: Path,
        config: RuntimeConfig,
        engine: Engine,
        tokenizer: Florence2Tokenizer,
        generation_config: Mapping[str, Any],
        *,
        name_or_path: str | None = None,
    ):
        self._folder = Path(folder)
        self._config = config
        self._engine: Engine | None = engine
        self._tokenizer = tokenizer
        self._generation_config = MappingProxyType(dict(generation_config))
        self._name_or_path = str(folder) if name_or_path is None else name_or_path

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

        precision: ``"fp32"``, ``"fp16"``, ``"int8"``, ``"q4"``, ... (:data:`.engine.hub.PRECISIONS`), or ``"bf16"``
        (the fp32 graphs computed in bfloat16 by OpenVINO where it is faster, :mod:`.engine.openvino`); default fp32 on
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
        # bf16: the fp32 files, OpenVINO first
        precision, provider_list = openvino.precision_plan(precision, provider_list)
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
        providers_for: ProvidersFor = provider_list
        if provider_list[0][0] == openvino.OPENVINO:  # the encoders on OpenVINO, the decoder on onnxruntime
            providers_for = openvino.graph_providers(provider_list)
        elif any(name == "TensorrtExecutionProvider" for name, _ in provider_list):
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
        return cls(folder, cfg, engine, tokenizer, generation_config, name_or_path=str(path))

    # --- read-only parts ---------------------------------------------------------------------------------
    @property
    def config(self) -> RuntimeConfig:
        """The folder's runtime config: sizes, token ids, preprocessing, prompt tables."""
        return self._config

    @property
    def generation_config(self) -> Mapping[str, Any]:
        """The checkpoint's generation defaults (``generation_config.json``, read-only)."""
        return self._generation_config

    @property
    def tokenizer(self) -> Florence2Tokenizer:
        """The tokenizer; ``tokenizer.batch_decode(generate(...))`` is ``processor.batch_decode``."""
        return self._tokenizer

    @property
    def engine(self) -> Engine:
        """The graphs' sessions behind one :class:`~.engine.interface.Engine` (benchmarks, stage timings)."""
        if self._engine is None:
            raise Florence2Error(f"this Florence2 model ({self._name_or_path}) is closed")
        return self._engine

    @property
    def providers(self) -> list[str]:
        """The execution providers onnxruntime actually runs the decoder on."""
        return self.engine.providers

    @property
    def folder(self) -> Path:
        """The model folder the graphs were loaded from."""
        return self._folder

    @property
    def name_or_path(self) -> str:
        """What ``from_pretrained`` was given: a folder, a hub id or an alias."""
        return self._name_or_path

    # --- closing -------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the onnxruntime sessions (and the memory they hold); later calls raise ``Florence2Error``.
        Closing twice is harmless."""
        if self._engine is None:
            return
        self._engine = None
        release_freed_memory()

    def __enter__(self) -> Florence2:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- inference -----------------------------------------------------------------------------------------
    def encode_image(self, image: ImageInput | EncodedImage) -> EncodedImage:
        """Run the vision encoder once: an :class:`EncodedImage` every task-level call accepts as its image."""
        return self.encode_images([image])[0]

    def encode_images(self, images: Sequence[ImageInput | EncodedImage]) -> list[EncodedImage]:
        """``encode_image`` for several images with one vision-encoder call (images already encoded are
        checked and passed through); one :class:`EncodedImage` per image, in order."""
        if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
            raise ValueError(f"images must be a list of images, got {type(images).__name__}")
        out: list[EncodedImage | None] = [
            self._check_encoded(im) if isinstance(im, EncodedImage) else None for im in images
        ]
        todo = [(i, im) for i, im in enumerate(images) if not isinstance(im, EncodedImage)]
        if todo:
            pils = [load_image(im) for _, im in todo]
            features = self.engine.encode_images(_pixel_values(self.config, pils))
            for row, ((i, _), pil) in enumerate(zip(todo, pils)):
                out[i] = EncodedImage(features[row], ImageSize.of(pil.size), self._encoding_token)
        return [e for e in out if e is not None]

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
        options = decoding_options(self, **generation_kwargs)
        pixel_values, text_ids, text_mask = processor_inputs(self, images, texts)
        engine = self.engine
        features = engine.encode_images(pixel_values, to_host=False)  # stays on the device with IO binding
        inference = engine.start(features, text_ids, text_mask, options.num_beams)
        del features, pixel_values
        if not return_dict_in_generate:
            return generate(inference, len(images), options)
        return generate_output(inference, len(images), options, output_scores=bool(output_scores))

    def run(
        self,
        image: ImageInput | EncodedImage,
        task: str,
        text: str | None = None,
        region: Sequence[float] | None = None,
        *,
        region_format: str = "pixels",
        scores: bool = False,
        **generation_kwargs: Any,
    ) -> dict:
        """Run one task on one image; returns ``Florence2Processor.post_process_generation``'s dict.

        image: an image or an :class:`EncodedImage` (``encode_image``); region: ``(x1, y1, x2, y2)`` in
        pixels, or fractions of width / height with ``region_format="normalized"``. Generation: up to 1024
        new tokens and the checkpoint's other settings unless given (transformers' names).
        scores: add each object's confidence (:mod:`.tasks.confidence`): a ``"scores"`` list parallel to
        ``bboxes`` / ``quad_boxes`` / ``polygons``; a text answer becomes ``{"text": ..., "scores": float}``.
        """
        return self.run_tasks(
            image,
            [TaskInput(task, text, region)],
            region_format=region_format,
            scores=scores,
            **generation_kwargs,
        )

    def run_tasks(
        self,
        image: ImageInput | EncodedImage,
        tasks: Sequence[Any],
        *,
        region_format: str = "pixels",
        scores: bool = False,
        **generation_kwargs: Any,
    ) -> dict:
        """Several tasks on one image with one vision encoding: ``{task: answer}`` for every task, each
        equal to its own ``run`` (``scores`` as there). Entries: ``"<OD>"``, ``(task, text)``,
        ``(task, region)`` or ``{"task", "text", "region"}``; the prompts share batched text encoding and
        decoding."""
        items = task_items(tasks, region_format)
        options = task_decoding_options(self, **generation_kwargs)
        image, size = _image_and_size(image)
        texts = [item.prompt(size, region_format) for item in items]  # every input checked before encoding
        encoded = self.encode_image(image)
        prompts = [PromptItem(encoded, item.task, text) for item, text in zip(items, texts)]
        return {
            item.task: answer[item.task]
            for item, answer in zip(items, answer_prompts(self, prompts, options, scores=scores))
        }

    def predict(
        self,
        image: ImageInput | EncodedImage,
        task: str,
        text: str | None = None,
        region: Sequence[float] | None = None,
        *,
        region_format: str = "pixels",
        scores: bool = False,
        **generation_kwargs: Any,
    ) -> Florence2Result:
        """``run`` as a typed :class:`~florence2_runtime.tasks.results.Florence2Result` (``.raw`` is run's
        dict); with ``scores`` every shape carries its ``score`` and a text answer its ``text_score``."""
        image, size = _image_and_size(image)
        answer = self.run(
            image, task, text, region, region_format=region_format, scores=scores, **generation_kwargs
        )
        return Florence2Result.from_dict(answer, size)

    def predict_regions(
        self,
        image: ImageInput | EncodedImage,
        task: str,
        regions: Sequence[Sequence[float]],
        *,
        region_format: str = "pixels",
        scores: bool = False,
        **generation_kwargs: Any,
    ) -> list[Florence2Result]:
        """A region task on several regions of one image: one vision encoding, batched prompts; one
        result per region. Florence-2 reads one region per prompt, so each region gets its own prompt.
        """
        return self._predict_prompts(
            image, task, regions=regions, region_format=region_format, scores=scores, **generation_kwargs
        )

    # --- internals -----------------------------------------------------------------------------------------
    def _predict_prompts(
        self,
        image: ImageInput | EncodedImage,
        task: str,
        *,
        texts: Sequence[str] | None = None,
        regions: Sequence[Sequence[float]] | None = None,
        region_format: str = "pixels",
        scores: bool = False,
        **generation_kwargs: Any,
    ) -> list[Florence2Result]:
        """One task with several inputs (texts, or regions) on one image: one vision encoding; one result each."""
        options = task_decoding_options(self, **generation_kwargs)
        image, size = _image_and_size(image)
        if texts is not None:
            if isinstance(texts, str) or not texts:
                raise ValueError(f"texts must be a non-empty list of strings, got {texts!r:.100}")
            prompts = [TaskInput(task, t).prompt(size) for t in texts]
        else:
            prompts = build_task_texts(task, regions=regions, image_size=size, region_format=region_format)
        encoded = self.encode_image(image)
        items = [PromptItem(encoded, task, p) for p in prompts]
        answers = answer_prompts(self, items, options, scores=scores)
        return [Florence2Result.from_dict(a, encoded.image_size) for a in answers]

    @property
    def _encoding_token(self) -> str:
        """What an :class:`EncodedImage` of this model carries: the model folder and its vision sizes."""
        cfg = self.config
        return f"{self._folder.resolve()}:{cfg.image_size.width}x{cfg.image_size.height}:{cfg.d_model}"

    def _check_encoded(self, encoded: EncodedImage) -> EncodedImage:
        if encoded.model != self._encoding_token:
            raise ValueError(
                f"this EncodedImage was made by another model ({encoded.model}); this model is "
                f"{self._encoding_token}: encode the image with this model's encode_image"
            )
        return encoded


def processor_inputs(
    model: Florence2, images: Sequence[ImageInput], texts: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What ``Florence2Processor(images=..., text=...)`` makes for ``model``: (pixel_values [B, 3, H, W]
    float32, text ids [B, T] int64, text mask [B, T] int64); refuses prompts too long for the encoder.
    For tools that run the engine's stages themselves (``florence2 bench``, ``florence2 compare``)."""
    pixel_values = _pixel_values(model.config, [load_image(im) for im in images])
    return (pixel_values, *encode_prompts(model.tokenizer, model.config, texts))


def _pixel_values(cfg: RuntimeConfig, images: Sequence) -> np.ndarray:
    """PIL images -> pixel_values [B, 3, H, W] float32, as the processor makes them."""
    return preprocess(
        images,
        size=cfg.image_size,
        mean=cfg.image_mean,
        std=cfg.image_std,
        resample=cfg.resample,
        rescale_factor=cfg.rescale_factor,
    )


def _image_and_size(image) -> tuple[Any, ImageSize]:
    """An EncodedImage as it is, anything else as a PIL image; and the size prompts refer to."""
    if isinstance(image, EncodedImage):
        return image, image.image_size
    pil = load_image(image)
    return pil, ImageSize.of(pil.size)


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
