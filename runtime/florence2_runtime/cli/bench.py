"""Per-stage timing of an exported model: ``florence2 bench MODEL``.

Every run generates exactly ``tokens`` new tokens (``min_new_tokens = max_new_tokens = tokens``), so
runs are comparable whatever the (random or real) weights would have said. Stages:

==============  ==============================================================================
preprocess      image resize + normalise and prompt tokenisation (``model.processor_inputs``)
vision_encoder  ``model.engine.encode_images`` (with IO binding the features stay on the device)
text_encoder    ``model.engine.encode_text`` (BART encoder + the decoder's cross-attention K/V)
first_step      the first decoder call and its bookkeeping (empty past, forced BOS)
per_token       each later step: decoder call, logit filters / beam bookkeeping, KV reorder
end_to_end      all of the above, one ``generate`` on ``batch`` images
==============  ==============================================================================

Torch-free, like the rest of the runtime.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..generation import Inference, generate_output
from ..tasks.batch import decoding_options

STAGES = ("preprocess", "vision_encoder", "text_encoder", "first_step", "per_token", "end_to_end")
DEFAULT_TASK = "<OD>"


@dataclass(frozen=True)
class BenchOptions:
    """What ``florence2 bench`` measures."""

    task: str = DEFAULT_TASK  # task token (with its input, if any) sent with every image
    tokens: int = 20  # new tokens per sequence, forced exactly
    beams: int = 1
    batch: int = 1  # images per generate call
    runs: int = 3  # measured runs
    warmup: int = 1  # unmeasured runs first
    scores: bool = False  # also keep the token scores (generate's output_scores)

    def __post_init__(self) -> None:
        for name, minimum in (("tokens", 2), ("beams", 1), ("batch", 1), ("runs", 1), ("warmup", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if not isinstance(self.scores, bool):
            raise ValueError(f"scores must be True or False, got {self.scores!r}")

    def generation_kwargs(self) -> dict[str, Any]:
        return {"max_new_tokens": self.tokens, "min_new_tokens": self.tokens, "num_beams": self.beams}


@dataclass
class StageTimes:
    """Seconds spent in each stage of one ``generate`` call (``per_token``: mean over steps 2..N)."""

    preprocess: float
    vision_encoder: float
    text_encoder: float
    first_step: float
    per_token: float
    end_to_end: float
    decoder_run: float  # per token: time inside the decoder graph (steps 2..N)
    kv_reorder: float  # per token: beam reordering of the KV cache (steps 2..N)
    tokens: int  # new tokens per sequence
    batch: int

    @property
    def bookkeeping(self) -> float:
        """Per token: neither the decoder graph nor the cache reorder (filters, beam search, copies)."""
        return self.per_token - self.decoder_run - self.kv_reorder

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens (all sequences of the batch) per second, end to end."""
        return self.batch * self.tokens / self.end_to_end

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "bookkeeping": self.bookkeeping, "tokens_per_second": self.tokens_per_second}


class _TimedInference:
    """Wraps an :class:`Inference`: when each decoder call starts, how long it and each reorder take."""

    def __init__(self, inner: Inference, clock: Callable[[], float]):
        self.inner, self.clock = inner, clock
        self.starts: list[float] = []
        self.run_seconds: list[float] = []
        self.reorder_seconds: list[float] = []

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        t = self.clock()
        self.starts.append(t)
        out = self.inner.logits(tokens)
        self.run_seconds.append(self.clock() - t)
        return out

    def rearrange_kv_cache(self, source_indices: np.ndarray) -> None:
        t = self.clock()
        self.inner.rearrange_kv_cache(source_indices)
        self.reorder_seconds.append(self.clock() - t)


def timed_generate(
    model,
    images: Sequence[Any],
    texts: Sequence[str],
    clock: Callable[[], float] = time.perf_counter,
    output_scores: bool = False,
    **generation_kwargs: Any,
) -> tuple[np.ndarray, StageTimes]:
    """``model.generate(images, texts, **generation_kwargs)`` with a per-stage breakdown; same ids.

    output_scores: keep the token scores as ``generate(..., output_scores=True,
    return_dict_in_generate=True)`` does (their cost lands in ``bookkeeping``).
    """
    from ..model import processor_inputs

    options = decoding_options(model, **generation_kwargs)
    t0 = clock()
    pixel_values, text_ids, text_mask = processor_inputs(model, images, texts)
    t1 = clock()
    engine = (
        model.engine
    )  # host sessions or IO binding: features and cross K/V stay where the engine keeps them
    features = engine.encode_images(pixel_values, to_host=False)
    t2 = clock()
    cross, mask = engine.encode_text(text_ids, text_mask, features, to_host=False)
    t3 = clock()
    inner = engine.decoder(cross, mask, options.num_beams)
    del cross, features  # as in Florence2.generate: only the decoder's (per-beam) copies stay alive
    inference = _TimedInference(inner, clock)
    ids = generate_output(inference, len(images), options, output_scores=output_scores).sequences
    t4 = clock()
    steps = len(inference.starts)
    later = max(steps - 1, 1)
    second = inference.starts[1] if steps > 1 else t4
    times = StageTimes(
        preprocess=t1 - t0,
        vision_encoder=t2 - t1,
        text_encoder=t3 - t2,
        first_step=second - t3,
        per_token=(t4 - second) / later if steps > 1 else 0.0,
        end_to_end=t4 - t0,
        decoder_run=sum(inference.run_seconds[1:]) / later if steps > 1 else 0.0,
        kv_reorder=sum(inference.reorder_seconds[1:]) / later
        if steps > 1
        else 0.0,  # first reorder is skipped
        tokens=ids.shape[1] - 1,
        batch=len(images),
    )
    return ids, times


def generated_image(width: int = 640, height: int = 480, seed: int = 0):
    """A deterministic colourful RGB PIL image (gradients and noise); content does not change the timing."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [
        0.5 + 0.5 * np.sin(x / width * f1 + y / height * f2 + p)
        for f1, f2, p in rng.uniform(1, 12, size=(3, 3))
    ]
    img = np.stack(channels, axis=-1) + rng.normal(0, 0.05, size=(height, width, 3))
    return Image.fromarray(np.clip(img * 255, 0, 255).astype(np.uint8), mode="RGB")


@dataclass
class BenchReport:
    """All measured runs of one configuration, plus summaries."""

    options: BenchOptions
    runs: list[StageTimes] = field(default_factory=list)
    providers: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        keys = (*STAGES, "decoder_run", "kv_reorder", "bookkeeping", "tokens_per_second")
        out: dict[str, Any] = {k: statistics.median(getattr(r, k) for r in self.runs) for k in keys}
        e2e = [r.end_to_end for r in self.runs]
        out["end_to_end_min"], out["end_to_end_max"] = min(e2e), max(e2e)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "options": asdict(self.options),
            "providers": self.providers,
            "median": self.summary(),
            "runs": [r.to_dict() for r in self.runs],
        }

    def table(self) -> str:
        """A readable text table: median, min and max of each stage in milliseconds."""
        o = self.options
        lines = [
            f"{o.task}  batch {o.batch}, {o.beams} beam(s), {o.tokens} new tokens, {len(self.runs)} run(s)"
            f"{', scores' if o.scores else ''}"
            f"  [{', '.join(self.providers)}]",
            f"{'stage':<16}{'median ms':>11}{'min ms':>10}{'max ms':>10}",
        ]
        for stage in (*STAGES, "decoder_run", "kv_reorder", "bookkeeping"):
            values = [getattr(r, stage) * 1e3 for r in self.runs]
            label = stage if stage in STAGES else f"  {stage}"
            lines.append(
                f"{label:<16}{statistics.median(values):>11.1f}{min(values):>10.1f}{max(values):>10.1f}"
            )
        tps = statistics.median(r.tokens_per_second for r in self.runs)
        lines.append(f"{'tokens/s':<16}{tps:>11.1f}")
        return "\n".join(lines)


def run_bench(
    model,
    options: BenchOptions,
    images: Sequence[Any] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> BenchReport:
    """Warm up, then time ``options.runs`` generate calls on ``options.batch`` images (default: generated).

    ``images``: one image, or a list cycled to fill the batch.
    """
    if images is None:
        images = [generated_image(seed=i) for i in range(options.batch)]
    elif not isinstance(images, (list, tuple)):
        images = [images]
    batch = [images[i % len(images)] for i in range(options.batch)]
    texts = [options.task] * options.batch
    report = BenchReport(options, providers=list(model.providers))
    for i in range(options.warmup + options.runs):
        _, times = timed_generate(
            model, batch, texts, clock=clock, output_scores=options.scores, **options.generation_kwargs()
        )
        if i >= options.warmup:
            report.runs.append(times)
    return report


def report_json(report: BenchReport) -> str:
    return json.dumps(report.to_dict(), indent=1)
