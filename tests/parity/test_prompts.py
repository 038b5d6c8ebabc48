"""florence2_runtime.tasks.prompts against transformers' Florence2Processor._construct_prompts and quantize.

The rules spelled out, and what they refuse: tests/runtime/test_prompts.py.
"""

from __future__ import annotations

import math
import random
import types
from typing import ClassVar

import numpy as np
import pytest

from florence2_runtime.tasks.prompts import (
    TASK_PROMPTS_WITH_INPUT,
    TASK_PROMPTS_WITHOUT_INPUTS,
    TASKS,
    build_task_text,
    construct_prompt,
    format_region,
    quantize_region,
)

torch = pytest.importorskip("torch")
processing = pytest.importorskip("transformers.models.florence2.processing_florence2")

pytestmark = pytest.mark.parity

REGION_TASKS = [
    "<REGION_TO_SEGMENTATION>",
    "<REGION_TO_CATEGORY>",
    "<REGION_TO_DESCRIPTION>",
    "<REGION_TO_OCR>",
]


class _SpecialTokens:
    all_special_tokens: ClassVar[list[str]] = ["<s>", "</s>", "<pad>", "<unk>", "<image>"]


@pytest.fixture(scope="module")
def processor(word_level_processor):
    """A real Florence2Processor (cheap: word-level tokenizer, no weights)."""
    return word_level_processor({"pure_text": {}})


@pytest.fixture(scope="module")
def quantizer():
    return processing.Florence2PostProcessor(config={}, tokenizer=_SpecialTokens())


def _reference_prompt(owner, text):
    """``Florence2Processor._construct_prompts`` unbound: the prompt, or ("ValueError", message)."""
    try:
        return processing.Florence2Processor._construct_prompts(owner, text)[0]
    except ValueError as e:
        return ("ValueError", str(e))


def _our_prompt(text, *tables):
    try:
        return construct_prompt(text, *tables)
    except ValueError as e:
        return ("ValueError", str(e))


def _reference_quantize(quantizer, region, size) -> tuple[int, ...]:
    return tuple(quantizer.quantize(torch.tensor([list(region)]), size=size)[0].tolist())


# --- tables ------------------------------------------------------------------------------------------
def test_tables_are_transformers(processor):
    assert list(TASK_PROMPTS_WITHOUT_INPUTS.items()) == list(processor.task_prompts_without_inputs.items())
    assert list(TASK_PROMPTS_WITH_INPUT.items()) == list(processor.task_prompts_with_input.items())
    assert set(TASKS) == set(processor.tasks_answer_post_processing_type)
    assert [t for t, s in TASKS.items() if s.region_input] == REGION_TASKS


# --- construct_prompt --------------------------------------------------------------------------------
PIECES = list(TASKS) + [
    "<FOO>",
    "<od>",
    "<OD",
    "OD>",
    "<ocr>",
    "<CAPTION_TO_PHRASE_GROUNDING",
    "<s>",
    "</s>",
    "<loc_5>",
    "<loc_12><loc_40><loc_999><loc_0>",
    "a cat",
    "green car",
    "日本",
    "{input}",
    "{}",
    "{0}",
    "{",
    "}",
    " ",
    "  ",
    "\n",
    "\t",
    "",
    "?",
]


@pytest.fixture(scope="module")
def prompt_corpus() -> list[str]:
    rng = random.Random(11)
    texts = list(PIECES) + [t + " " for t in TASKS] + [" " + t for t in TASKS] + [t + t for t in TASKS]
    texts += ["".join(rng.choice(PIECES) for _ in range(rng.randrange(1, 6))) for _ in range(3000)]
    return texts


def test_construct_prompt_matches_transformers(processor, prompt_corpus):
    outcomes = set()
    for text in prompt_corpus:
        ours, ref = _our_prompt(text), _reference_prompt(processor, text)
        assert ours == ref, text
        outcomes.add("error" if isinstance(ref, tuple) else "changed" if ref != text else "unchanged")
    assert outcomes == {"error", "changed", "unchanged"}


def test_construct_prompt_custom_tables(prompt_corpus):
    without = {"<CAPTION>": "Say what you see.", "<OD>": "Find {input} things."}
    with_input = {
        "<REGION_TO_OCR>": "Read {input} please",
        "<CAPTION>": "never used: {input}",
        "<X>": "x={input}",
    }
    owner = types.SimpleNamespace(task_prompts_without_inputs=without, task_prompts_with_input=with_input)
    for text in prompt_corpus[:1500] + ["<X> 1 <X>", "Say what you see.<X>"]:
        assert _our_prompt(text, without, with_input) == _reference_prompt(owner, text), text


# --- quantisation ------------------------------------------------------------------------------------
SIZES = [
    (1, 1),
    (2, 2),
    (4, 8),
    (3, 7),
    (16, 16),
    (144, 688),
    (640, 480),
    (577, 1001),
    (4096, 2160),
    (12345, 99991),
]


def _random_region(rng: random.Random, size, integer: bool):
    w, h = size
    xs = sorted(rng.uniform(-0.9, w + 0.9) for _ in range(2))
    ys = sorted(rng.uniform(-0.9, h + 0.9) for _ in range(2))
    if integer:
        xs = sorted(min(max(round(v), 0), math.floor(w)) for v in xs)
        ys = sorted(min(max(round(v), 0), math.floor(h)) for v in ys)
    return (xs[0], ys[0], xs[1], ys[1])


def test_quantize_matches_transformers_random(quantizer):
    rng = random.Random(3)
    for size in SIZES:
        for i in range(300):
            region = _random_region(rng, size, integer=i % 2 == 0)
            expected = _reference_quantize(quantizer, region, size)
            assert quantize_region(region, size) == expected, (region, size)


def test_quantize_matches_transformers_on_every_integer_pixel(quantizer):
    for size in [(1, 3), (2, 4), (8, 16), (125, 250), (1000, 1000), (1001, 999), (1600, 1200)]:
        w, h = size
        xs = list(range(0, w + 1))
        ys = [round(v * h / max(w, 1)) for v in xs]
        ref = quantizer.quantize(torch.tensor([[x, y, x, y] for x, y in zip(xs, ys)]), size=size).tolist()
        ours = [list(quantize_region((x, y, x, y), size)) for x, y in zip(xs, ys)]
        assert ours == ref, size


def test_quantize_float32_cases_where_float64_differs(quantizer):
    """e.g. the centre of a 2-px-wide image: float64 floor(1 / 0.002) = 500, transformers gives 499."""
    cases = []
    for w in range(1, 600):
        for x in range(w + 1):
            f64 = min(999, math.floor(x / (w / 1000)))
            f32 = min(999, int(np.floor(np.float32(x) / np.float32(w / 1000))))
            if f64 != f32:
                cases.append((x, w))
    assert len(cases) > 50
    for x, w in cases[:400]:
        region, size = (x, 0, x, 1), (w, 1)
        ours = quantize_region(region, size)
        assert ours == _reference_quantize(quantizer, region, size)
        assert ours[0] != min(999, math.floor(x / (w / 1000)))
    assert quantize_region((1, 0, 1, 0), (2, 2)) == (499, 0, 499, 0)


def test_quantize_clamps_and_tolerates_small_overshoot(quantizer):
    region, size = (-0.5, -1.0, 640.9, 481.0), (640, 480)
    assert quantize_region(region, size) == _reference_quantize(quantizer, region, size) == (0, 0, 999, 999)


# --- build_task_text ---------------------------------------------------------------------------------
def test_build_task_text_without_input(processor):
    for task, spec in TASKS.items():
        if not spec.takes_input:
            assert build_task_text(task) == task
            assert build_task_text(task, text="  ") == task
            assert construct_prompt(build_task_text(task)) == processor._construct_prompts(task)[0]


def test_build_task_text_with_text(processor):
    for task, spec in TASKS.items():
        if spec.takes_input and not spec.region_input:
            built = build_task_text(task, text="  a green car ")
            assert built == task + "a green car"
            assert construct_prompt(built) == processor._construct_prompts(task + " a green car")[0]
            assert "a green car" in construct_prompt(built)


def test_build_task_text_regions(processor, quantizer):
    rng = random.Random(5)
    for task in REGION_TASKS:
        for size in SIZES:
            region = _random_region(rng, size, integer=False)
            built = build_task_text(task, region=region, image_size=size)
            assert built == task + format_region(_reference_quantize(quantizer, region, size))
            assert construct_prompt(built) == processor._construct_prompts(built)[0]
        locs = "<loc_0><loc_1><loc_999><loc_999>"
        assert build_task_text(task, text=f" {locs} ") == task + locs
    built = build_task_text("<REGION_TO_CATEGORY>", region=(0, 0, 100, 50), image_size=(200, 100))
    assert construct_prompt(built) == "What is the region <loc_0><loc_0><loc_500><loc_500>?"


def test_numpy_numbers_are_accepted(quantizer):
    region = tuple(np.float64(v) for v in (1.5, 2.25, 30.0, 40.75))
    # transformers would see these as Python floats (float32 tensor), like the user's list of numbers
    expected = _reference_quantize(quantizer, [float(v) for v in region], (64, 48))
    assert quantize_region(region, (np.int64(64), np.int64(48))) == expected
