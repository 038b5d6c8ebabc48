"""florence2_runtime.tasks.postprocess against transformers' own Florence2Processor.post_process_generation.

The reference is a real ``Florence2Processor`` (tiny word-level tokenizer, the published
post_processor_config from tests/data/florence2_configs.json), so every expected value below comes from transformers.
"""

from __future__ import annotations

import json
import random
import types
from typing import ClassVar

import numpy as np
import pytest

from florence2_runtime.tasks.postprocess import (
    DEFAULT_BANNED_GROUNDING_TOKENS,
    PARSE_TYPES,
    TASK_PARSE_TYPES,
    dequantize,
    parse,
    post_process_generation,
)
from tests.helpers.paths import DATA

torch = pytest.importorskip("torch")
processing = pytest.importorskip("transformers.models.florence2.processing_florence2")

pytestmark = pytest.mark.parity

CONFIGS = DATA / "florence2_configs.json"  # the published checkpoints' configs
UNKNOWN_TASK = "<NOT_A_TASK>"
SIZES = [
    (1, 1),
    (2, 2),
    (4, 4),
    (3, 7),
    (16, 16),
    (144, 144),
    (640, 480),
    (688, 577),
    (999, 1001),
    (1, 10000),
    (100000, 3),
    (65536, 65536),
    (2**20 + 1, 13),
    (304, 752),
    (640.0, 480.0),  # whole floats are whole numbers of pixels
]


def _post_processor_config() -> dict:
    return json.loads(CONFIGS.read_text())["post_processor_config"]


class _SpecialTokens:
    all_special_tokens: ClassVar[list[str]] = ["<s>", "</s>", "<pad>", "<unk>", "<image>"]


@pytest.fixture(scope="module")
def processor(word_level_processor):
    """A real Florence2Processor (cheap: word-level tokenizer, no weights)."""
    return word_level_processor(_post_processor_config())


def _reference(processor, text, task, size):
    return processor.post_process_generation(text=text, task=task, image_size=size)


def _reference_with_banned(processor, banned, text, task, size):
    """Unbound post_process_generation with a stand-in self whose post-processor bans ``banned``."""
    cfg = _post_processor_config()
    cfg["phrase_grounding"] = {"banned_grounding_tokens": list(banned)}
    stand_in = types.SimpleNamespace(
        tasks_answer_post_processing_type=processor.tasks_answer_post_processing_type,
        post_processor=processing.Florence2PostProcessor(config=cfg, tokenizer=_SpecialTokens()),
    )
    return processing.Florence2Processor.post_process_generation(
        stand_in, text=text, task=task, image_size=size
    )


def _assert_same(ours, ref):
    """Equal values *and* equal types all the way down (int is not float, list is not tuple)."""
    assert type(ours) is type(ref), (ours, ref)
    if isinstance(ref, dict):
        assert list(ours) == list(ref), (ours, ref)
        for k in ref:
            _assert_same(ours[k], ref[k])
    elif isinstance(ref, list):
        assert len(ours) == len(ref), (ours, ref)
        for a, b in zip(ours, ref):
            _assert_same(a, b)
    else:
        assert ours == ref, (ours, ref)


# --- the fuzz corpus ---------------------------------------------------------------------------------
WORDS = [
    "cat",
    "a dog",
    "person",
    "the image",
    "image",
    "I",
    "it",
    "a set",
    "each other",
    "other objects",
    "car ",
    " wheel",
    "café",
    "日本語",
    "Straße",
    "naïve cat",
    "😀",
    "\u00a0",
    "x" * 30,
    "1 2 3",
    "{input}",
    "<",
    ">",
    "<<",
    "loc_",
    "<loc_",
    "<loc_12",
    "<loc_>",
    "</s",
    "s>",
    "<p",
    "oly>",
    "<pa",
    "d>",
    "poly",
    "sep",
    "a<b",
    "the",
    "an",
    "Lots",
    "lots",
]
SPECIALS = [
    "<s>",
    "</s>",
    "<pad>",
    "<unk>",
    "<od>",
    "</od>",
    "<poly>",
    "</poly>",
    "<sep>",
    "<box>",
    "</box>",
    "<bbox>",
    "<ground>",
    "<obj>",
    "<ocr>",
]
SPACES = [" ", "  ", "\n", "\t", "\r", "\u2003", ""]


def _loc(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.6:
        n = str(rng.randrange(1000))
    elif r < 0.75:
        n = str(rng.choice([0, 999, 312, 812, 562, 687, 500, 1]))
    elif r < 0.85:
        n = str(rng.randrange(1000, 100000))
    elif r < 0.95:
        n = "0" * rng.randrange(1, 3) + str(rng.randrange(100))  # leading zeros
    else:
        n = rng.choice(["٣", "３", "1٢"])  # Unicode decimal digits: \d and int() accept them
    return f"<loc_{n}>"


def _locs(rng: random.Random, k: int | None = None) -> str:
    k = rng.choice([1, 2, 3, 4, 4, 4, 5, 6, 7, 8, 8, 8, 9, 12, 13]) if k is None else k
    return "".join(_loc(rng) for _ in range(k))


def _piece(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.3:
        return rng.choice(WORDS + list(DEFAULT_BANNED_GROUNDING_TOKENS[:20]))
    if kind < 0.55:
        return _locs(rng)
    if kind < 0.75:
        return rng.choice(SPECIALS)
    if kind < 0.9:
        return rng.choice(SPACES)
    return rng.choice(["<poly>" + _locs(rng) + "</poly>", "<sep>" + _locs(rng), _locs(rng, 4) + "<sep>"])


def _random_text(rng: random.Random) -> str:
    return "".join(_piece(rng) for _ in range(rng.randrange(0, 14)))


def _structured_text(rng: random.Random) -> str:
    """Shapes the model really emits: label + boxes, OCR lines, polygons with <sep>, grounding phrases."""

    def label():
        return rng.choice(WORDS + list(DEFAULT_BANNED_GROUNDING_TOKENS)) + rng.choice(["", " ", "\n"])

    shape = rng.randrange(4)
    parts = []
    for _ in range(rng.randrange(1, 5)):
        if shape == 0:
            parts.append(label() + _locs(rng, rng.choice([4, 8, 12, 5])))
        elif shape == 1:
            parts.append(label() + _locs(rng, 8))
        elif shape == 2:
            polys = "<sep>".join(_locs(rng, rng.randrange(1, 14)) for _ in range(rng.randrange(1, 4)))
            parts.append(rng.choice(["", label()]) + rng.choice(["<poly>" + polys + "</poly>", polys]))
        else:
            parts.append(label() + _locs(rng, 4) + rng.choice(["", _locs(rng, 4)]))
    return rng.choice(["</s><s>", "<s>", ""]) + "".join(parts) + rng.choice(["</s>", "</s><pad><pad>", ""])


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    rng = random.Random(20250601)
    texts = ["", " ", "<s></s>", "<</s>s>", "<pa<s>d>", "<loc_1>", "cat<loc_1><loc_2><loc_3>"]
    texts += [_random_text(rng) for _ in range(700)]
    texts += [_structured_text(rng) for _ in range(700)]
    return texts


ALL_TASKS = list(TASK_PARSE_TYPES) + [UNKNOWN_TASK]


def test_task_table_is_transformers(processor):
    assert dict(TASK_PARSE_TYPES) == processor.tasks_answer_post_processing_type
    assert set(PARSE_TYPES) == set(_post_processor_config())


def _kinds_of_output(task: str, answer) -> set[str]:
    """Labels for what a reference answer contains, to prove the corpus is not too easy."""
    if not isinstance(answer, dict):
        return set()
    kinds = {f"{task}:{k}" for k, v in answer.items() if v}
    if any(p == [] for ps in answer.get("polygons", []) for p in ps):
        kinds.add("empty polygon")
    labels = [lab for k, v in answer.items() if k.endswith("labels") for lab in v]
    if any(any(ord(c) > 127 for c in lab) for lab in labels):
        kinds.add(f"{task}:non-ascii label")
    return kinds


@pytest.mark.slow
def test_fuzz_every_task_matches_transformers(processor, corpus):
    rng = random.Random(7)
    checked, seen = 0, set()
    for text in corpus:
        for size in rng.sample(SIZES, 2):
            for task in ALL_TASKS:
                ref = _reference(processor, text, task, size)
                _assert_same(post_process_generation(text, task, size), ref)
                seen |= _kinds_of_output(task, ref[task])
                checked += 1
    assert checked >= 40000
    for key in [
        "<OD>:bboxes",
        "<REGION_PROPOSAL>:labels",
        "<CAPTION_TO_PHRASE_GROUNDING>:bboxes",
        "<OCR_WITH_REGION>:quad_boxes",
        "<REGION_TO_SEGMENTATION>:polygons",
        "<OPEN_VOCABULARY_DETECTION>:bboxes",
        "<OPEN_VOCABULARY_DETECTION>:polygons",
        "empty polygon",
        "<OCR_WITH_REGION>:non-ascii label",
        "<OPEN_VOCABULARY_DETECTION>:non-ascii label",
    ]:
        assert key in seen, f"the fuzz corpus never produced {key}"


def _float32_sensitive_pairs(limit: int = 40) -> list[tuple[int, int]]:
    """(bin, size) where int((bin + 0.5) * size / 1000) in float64 differs from transformers' float32."""
    bins = np.arange(1000)
    pairs = []
    for size in range(1, 1200):
        f64 = ((bins + 0.5) * (size / 1000)).astype(np.int64)
        f32 = ((bins.astype(np.float32) + np.float32(0.5)) * np.float32(size / 1000)).astype(np.int64)
        pairs += [(int(b), size) for b in bins[f64 != f32]]
    return pairs[:limit]


def test_float32_dequantisation_matches_where_float64_would_not(processor):
    pairs = _float32_sensitive_pairs()
    assert len(pairs) >= 20
    for b, size in pairs:
        text = f"<s>cat<loc_{b}><loc_{b}><loc_{b}><loc_{b}></s>"
        ours = post_process_generation(text, "<OD>", (size, size))
        _assert_same(ours, _reference(processor, text, "<OD>", (size, size)))
        assert ours["<OD>"]["bboxes"][0][0] != int((b + 0.5) * (size / 1000))  # float64 would be wrong
        poly = f"<poly><loc_{b}><loc_1><loc_2><loc_{b}></poly>"
        for task, txt in [
            ("<OCR_WITH_REGION>", "a" + f"<loc_{b}>" * 8),
            ("<REGION_TO_SEGMENTATION>", poly),
            ("<OPEN_VOCABULARY_DETECTION>", "cat" + poly),
        ]:
            _assert_same(
                post_process_generation(txt, task, (size, 7)), _reference(processor, txt, task, (size, 7))
            )


def test_dequantize_all_bins_many_sizes(processor):
    bins = list(range(1000))
    for size in [(1, 1), (3, 5), (144, 688), (577, 1001), (4096, 2160), (123457, 99991)]:
        ref = processor.post_processor.dequantize(torch.tensor(bins).reshape(-1, 2), size=size)
        assert dequantize(bins, size) == ref.flatten().tolist()


def test_custom_banned_list(processor):
    text = (
        "<s>cat<loc_1><loc_2><loc_3><loc_4>it<loc_5><loc_6><loc_7><loc_8>dog<loc_9><loc_9><loc_9><loc_9></s>"
    )
    task = "<CAPTION_TO_PHRASE_GROUNDING>"
    for banned in [["cat"], [], ["dog", "it"], ("cat", "dog", "it")]:
        ours = post_process_generation(text, task, (640, 480), banned_grounding_tokens=banned)
        _assert_same(ours, _reference_with_banned(processor, banned, text, task, (640, 480)))
    default = post_process_generation(text, task, (640, 480))
    assert default[task]["labels"] == ["cat", "dog"]


def test_quirks_spelled_out(processor):
    """Behaviours other modules may rely on, each checked against transformers too."""
    cases = [
        (
            "<OD>",
            "</s><s>café<loc_1><loc_2><loc_3><loc_4></s>",
            {"bboxes": [[0, 0, 2, 2]], "labels": ["caf"]},
        ),
        ("<OD>", "é cat<loc_1><loc_2><loc_3><loc_4>", {"bboxes": [[0, 0, 2, 2]], "labels": [" cat"]}),
        ("<OD>", "a\nb<loc_1><loc_2><loc_3><loc_4>", {"bboxes": [], "labels": []}),  # '.' stops at \n
        (
            "<OD>",
            "cat<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6>",
            {"bboxes": [[0, 0, 2, 2]], "labels": ["cat"]},
        ),
        ("<REGION_PROPOSAL>", "cat<loc_1><loc_2><loc_3><loc_4>", {"bboxes": [[0, 0, 2, 2]], "labels": [""]}),
        ("<REGION_TO_SEGMENTATION>", "<loc_1><loc_2><loc_3>", {"polygons": [[[0, 1]]], "labels": [""]}),
        (
            "<REGION_TO_SEGMENTATION>",
            "<loc_1><sep><loc_2><loc_3><loc_4>",
            {"polygons": [[[], [1, 2]]], "labels": ["<sep>"]},
        ),
        (
            "<OPEN_VOCABULARY_DETECTION>",
            "日本<poly><loc_1><loc_2><loc_3><loc_4></poly>",
            {"bboxes": [], "bboxes_labels": [], "polygons": [[[0, 1, 2, 3]]], "polygons_labels": ["日本"]},
        ),
        ("<CAPTION>", "<s><</s>s> hi <pad></s>", "<s> hi <pad>"),
        (
            "<OCR_WITH_REGION>",
            "<s>ünï" + "<loc_10>" * 8 + "\nx" + "<loc_20>" * 8,
            {"quad_boxes": [[10, 10, 10, 10, 10, 10, 10, 10], [20] * 8], "labels": ["ünï", "x"]},
        ),
    ]
    for task, text, _expected in cases:
        ours = post_process_generation(text, task, (1000, 1000) if "OCR" in task else (480, 640))
        ref = _reference(processor, text, task, (1000, 1000) if "OCR" in task else (480, 640))
        _assert_same(ours, ref)
    # the literal expectations, at a size where the numbers are easy to read
    assert post_process_generation(cases[0][1], "<OD>", (1000, 1000))["<OD>"]["labels"] == ["caf"]
    assert post_process_generation(cases[6][1], cases[6][0], (1000, 1000))[cases[6][0]] == {
        "polygons": [[[], [2, 3]]],
        "labels": ["<sep>"],
    }
    assert post_process_generation(cases[8][1], "<CAPTION>", None) == {"<CAPTION>": cases[8][2]}
    assert post_process_generation(cases[9][1], cases[9][0], (1000, 1000))[cases[9][0]] == cases[9][2]
    assert "scores" not in post_process_generation(cases[0][1], "<OD>", (9, 9))["<OD>"]


def test_unknown_task_is_pure_text(processor):
    text = "<s>cat<loc_1><loc_2><loc_3><loc_4></s>"
    assert post_process_generation(text, "<FOO>", None) == {"<FOO>": "cat<loc_1><loc_2><loc_3><loc_4>"}
    _assert_same(post_process_generation(text, "<FOO>", (5, 5)), _reference(processor, text, "<FOO>", (5, 5)))


def test_parse_by_type_includes_unused_description_with_polygons(processor):
    text = "cat<poly><loc_1><loc_2><loc_3><loc_4></poly>dog<loc_5><loc_6><loc_7><loc_8>"
    ref = processor.post_processor(
        text=text, image_size=(300, 200), parse_tasks=["description_with_polygons"]
    )["description_with_polygons"]
    ours = parse(text, "description_with_polygons", (300, 200))
    assert ours == {"polygons": [i["polygons"] for i in ref], "labels": [i["cat_name"] for i in ref]}
