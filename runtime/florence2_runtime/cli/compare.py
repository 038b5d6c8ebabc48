"""Agreement between two exported models on your own images: ``florence2 compare MODEL_A MODEL_B IMAGES``.

Meant for precision variants (fp32 vs int8 / fp16) and re-exports. Per image it measures:

==================  ===================================================================================
vision_features     |A - B| of the vision encoder outputs, both fed the same pixel values
cross_kv            |A - B| of the text encoder outputs (every layer's cross K/V), both fed A's features
first_logits        |A - B| of the first decoder step's logits, both fed A's cross K/V
tokens              each model's own ``generate`` (end to end): exact match, common prefix / longer length
result              the post-processed dicts (``Florence2.run``'s output) equal or not
==================  ===================================================================================

The three tensor rows isolate one graph each (same inputs on both sides); the token and result rows
are what a user sees. Differences are reported as max and mean absolute difference and, to judge
them, the max |A| of the reference side. Torch-free, like the rest of the runtime.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..generation import PROMPT_LENGTH, generate
from ..inputs.image_size import ImageSize
from ..inputs.images import load_image
from ..tasks.batch import task_decoding_options
from ..tasks.postprocess import post_process_generation
from ..tasks.prompts import build_task_text

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
TENSORS = ("vision_features", "cross_kv", "first_logits")


@dataclass(frozen=True)
class CompareOptions:
    """What both models are asked, per image."""

    task: str = "<MORE_DETAILED_CAPTION>"
    text: str | None = None  # the task's text input, if it takes one
    region: tuple[float, float, float, float] | None = None  # the task's region, if it takes one
    region_format: str = "pixels"  # the region's units: pixels, or "normalized" fractions
    max_new_tokens: int | None = None  # None: full answers, up to 1024 capped by the positions (as run)
    num_beams: int | None = None  # None: the models' generation_config.json

    def generation_kwargs(self) -> dict[str, int]:
        kwargs = {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams}
        return {k: v for k, v in kwargs.items() if v is not None}


@dataclass(frozen=True)
class TensorDiff:
    """How far B's tensors are from A's: max and mean |A - B| and max |A| (the scale to judge them by)."""

    max_abs: float
    mean_abs: float
    ref_max_abs: float

    @classmethod
    def of(cls, a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> TensorDiff:
        if len(a) != len(b):
            raise ValueError(
                f"the models return {len(a)} and {len(b)} tensors; they do not have the same graphs"
            )
        diffs = []
        for x, y in zip(a, b):
            if np.shape(x) != np.shape(y):
                raise ValueError(
                    f"the models return shapes {list(np.shape(x))} and {list(np.shape(y))}; "
                    "they are not exports of the same architecture"
                )
            diffs.append(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)).ravel())
        d = np.concatenate(diffs) if diffs else np.zeros(1)
        ref = max((float(np.max(np.abs(x))) for x in a if np.size(x)), default=0.0)
        return cls(float(np.max(d)), float(np.mean(d)), ref)

    @classmethod
    def worst(cls, diffs: Sequence[TensorDiff]) -> TensorDiff:
        """Max of the max, mean of the means, max of the scales."""
        return cls(
            max(d.max_abs for d in diffs),
            float(np.mean([d.mean_abs for d in diffs])),
            max(d.ref_max_abs for d in diffs),
        )


@dataclass(frozen=True)
class ImageComparison:
    """Both models on one image."""

    image: str
    tokens_a: list[int]  # generated ids (decoder start token and trailing padding removed)
    tokens_b: list[int]
    common_prefix: int  # leading tokens the two sequences share
    tensors: dict[str, TensorDiff]
    result_a: dict
    result_b: dict

    @property
    def exact(self) -> bool:
        return self.tokens_a == self.tokens_b

    @property
    def prefix_agreement(self) -> float:
        """Share of the longer sequence that both models produce before their first difference."""
        longest = max(len(self.tokens_a), len(self.tokens_b))
        return 1.0 if longest == 0 else self.common_prefix / longest

    @property
    def result_equal(self) -> bool:
        return self.result_a == self.result_b


@dataclass
class CompareReport:
    """``florence2 compare``'s findings: per image, and summed up by :meth:`summary`."""

    model_a: str
    model_b: str
    precision_a: str
    precision_b: str
    options: CompareOptions
    images: list[ImageComparison] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Rates over the images (exact sequences, equal results), token agreement, worst tensor differences."""
        n = len(self.images)
        prefix = sum(c.common_prefix for c in self.images)
        longest = sum(max(len(c.tokens_a), len(c.tokens_b)) for c in self.images)
        return {
            "images": n,
            "exact_match_rate": sum(c.exact for c in self.images) / n,
            "token_agreement": 1.0 if longest == 0 else prefix / longest,  # summed prefixes / summed lengths
            "mean_prefix_agreement": float(np.mean([c.prefix_agreement for c in self.images])),
            "result_equal_rate": sum(c.result_equal for c in self.images) / n,
            **{name: asdict(TensorDiff.worst([c.tensors[name] for c in self.images])) for name in TENSORS},
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_a": self.model_a,
            "model_b": self.model_b,
            "precision_a": self.precision_a,
            "precision_b": self.precision_b,
            "options": asdict(self.options),
            "summary": self.summary(),
            "images": [
                {
                    "image": c.image,
                    "exact": c.exact,
                    "common_prefix": c.common_prefix,
                    "length_a": len(c.tokens_a),
                    "length_b": len(c.tokens_b),
                    "prefix_agreement": c.prefix_agreement,
                    "result_equal": c.result_equal,
                    **{name: asdict(c.tensors[name]) for name in TENSORS},
                    "result_a": c.result_a,
                    "result_b": c.result_b,
                }
                for c in self.images
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False)

    def format_text(self) -> str:
        s = self.summary()
        lines = [
            f"A: {self.model_a} ({self.precision_a})",
            f"B: {self.model_b} ({self.precision_b})",
            f"task {self.options.task}, {s['images']} image(s)",
            f"  exact token sequences   {s['exact_match_rate']:7.1%}",
            f"  token agreement         {s['token_agreement']:7.1%}  (tokens before the first difference / longer length)",
            f"  equal results           {s['result_equal_rate']:7.1%}",
            f"  {'graph output':<22}{'max |A-B|':>11}{'mean |A-B|':>12}{'max |A|':>11}",
        ]
        for name in TENSORS:
            d = s[name]
            lines.append(f"  {name:<22}{d['max_abs']:11.3g}{d['mean_abs']:12.3g}{d['ref_max_abs']:11.3g}")
        for c in self.images:
            lines.append(
                f"  {c.image}: {'same tokens' if c.exact else f'first difference at token {c.common_prefix}'}"
                f" ({len(c.tokens_a)} vs {len(c.tokens_b)} tokens), results "
                f"{'equal' if c.result_equal else 'differ'}"
            )
        return "\n".join(lines)


def collect_images(paths: Sequence[str | Path]) -> list[Path]:
    """Image files named directly, plus the image files (by suffix) directly inside named folders, sorted."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            found.append(p)
        else:
            raise ValueError(f"image not found: {p}")
    if not found:
        raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, paths))}")
    return found


def generated_tokens(ids: np.ndarray, eos_token_id: int | None) -> list[int]:
    """One row of ``generate``'s output -> the generated ids up to and including the first EOS."""
    out = [int(t) for t in ids[PROMPT_LENGTH:]]
    if eos_token_id is not None and eos_token_id in out:
        out = out[: out.index(eos_token_id) + 1]
    return out


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _check_compatible(a, b) -> None:
    ca, cb = a.config, b.config
    for name in (
        "image_size",
        "num_image_tokens",
        "d_model",
        "vocab_size",
        "decoder_layers",
        "decoder_heads",
    ):
        if getattr(ca, name) != getattr(cb, name):
            raise ValueError(
                f"the models differ in {name} ({getattr(ca, name)} vs {getattr(cb, name)}); "
                "compare exports of the same checkpoint"
            )


def compare_image(a, b, image: Any, options: CompareOptions, name: str = "") -> ImageComparison:
    """Run models ``a`` and ``b`` (:class:`~florence2_runtime.Florence2`) on one image."""
    pil = load_image(image)
    prompt = build_task_text(
        options.task,
        text=options.text,
        region=options.region,
        image_size=ImageSize.of(pil.size),
        region_format=options.region_format,
    )
    from ..model import processor_inputs

    pixel_values, text_ids, text_mask = processor_inputs(a, [pil], [prompt])

    feats_a = a.engine.encode_images(pixel_values)
    feats_b = b.engine.encode_images(pixel_values)
    cross_a, mask = a.engine.encode_text(text_ids, text_mask, feats_a)
    cross_b_iso, _ = b.engine.encode_text(text_ids, text_mask, feats_a)
    cross_b, _ = b.engine.encode_text(text_ids, text_mask, feats_b)
    start = np.full((1, PROMPT_LENGTH), a.config.decoder_start_token_id, np.int64)
    logits_a = a.engine.decoder(cross_a, mask).logits(start)
    logits_b = b.engine.decoder(cross_a, mask).logits(start)
    tensors = {
        "vision_features": TensorDiff.of([feats_a], [feats_b]),
        "cross_kv": TensorDiff.of(cross_a, cross_b_iso),
        "first_logits": TensorDiff.of([logits_a], [logits_b]),
    }

    kwargs = options.generation_kwargs()
    tokens, results = [], []
    for model, cross in ((a, cross_a), (b, cross_b)):
        decoding = task_decoding_options(
            model, **kwargs
        )  # the task-level length default, as run and the server
        ids = generate(model.engine.decoder(cross, mask, decoding.num_beams), 1, decoding)[0]
        tokens.append(generated_tokens(ids, decoding.eos_token_id))
        text = model.tokenizer.batch_decode(ids[None])[0]
        results.append(
            post_process_generation(
                text,
                options.task,
                pil.size,
                banned_grounding_tokens=model.config.banned_grounding_tokens or None,
            )
        )
    return ImageComparison(
        name or "<image>", tokens[0], tokens[1], _common_prefix(*tokens), tensors, *results
    )


def compare_models(
    model_a: str | Path,
    model_b: str | Path,
    images: Sequence[str | Path],
    options: CompareOptions = CompareOptions(),
    *,
    providers=None,
    threads: int | None = None,
    options_a: dict | None = None,
    options_b: dict | None = None,
) -> CompareReport:
    """Load two models (folders, hub ids or aliases) and compare them on ``images`` (files, or folders of image
    files). options_a / options_b: ``Florence2.from_pretrained`` keywords (precision, revision) of each."""
    from ..model import Florence2

    paths = collect_images(images)
    options_a, options_b = options_a or {}, options_b or {}
    a = Florence2.from_pretrained(model_a, providers=providers, threads=threads, **options_a)
    b = Florence2.from_pretrained(model_b, providers=providers, threads=threads, **options_b)
    _check_compatible(a, b)
    report = CompareReport(
        str(model_a),
        str(model_b),
        options_a.get("precision") or a.config.precision,
        options_b.get("precision") or b.config.precision,
        options,
    )
    for path in paths:
        report.images.append(compare_image(a, b, path, options, name=str(path)))
    return report
