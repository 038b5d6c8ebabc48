"""Fuzzed Florence-2 answers and the check that a ``Florence2Result`` reads what its dict says.

:func:`fuzzed_outputs` draws grammar-shaped generations for every task (labels with odd characters,
location runs of every length, polygons with separators) and post-processes them with the function it is
given: the runtime's ``post_process_generation`` in tests/runtime, transformers' processor in tests/parity.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from florence2_runtime import Florence2Result
from florence2_runtime.tasks.prompts import TASKS
from florence2_runtime.tasks.results import TASK_KINDS

SIZES = [(1, 1), (7, 3), (64, 64), (211, 97), (640, 480), (1001, 999)]
LABELS = ["cat", "a dog", "", "  spaced  ", "caf\u00e9", "\u6c34", "x" * 60]


def _locs(rng: random.Random, k: int) -> str:
    return "".join(f"<loc_{rng.randrange(1000)}>" for _ in range(k))


def _label(rng: random.Random) -> str:
    return rng.choice(LABELS)


def _poly_text(rng: random.Random) -> str:
    parts = "<sep>".join(_locs(rng, rng.choice([1, 2, 3, 5, 8, 13])) for _ in range(rng.randint(1, 3)))
    return f"{_label(rng)}<poly>{parts}</poly>" if rng.random() < 0.6 else _label(rng) + parts


_GENERATORS = {
    "text": lambda rng: " ".join(rng.choice(LABELS) for _ in range(rng.randint(0, 5))),
    "region_text": lambda rng: rng.choice(
        [
            _label(rng) + _locs(rng, 4),
            "No object detected.",
            _label(rng),
            _locs(rng, 4) + _label(rng),
            _label(rng) + _locs(rng, 8),
            _label(rng) + _locs(rng, 3),
        ]
    ),
    "boxes": lambda rng: "".join(
        _label(rng) + _locs(rng, rng.choice([4, 4, 8, 5])) for _ in range(rng.randint(0, 4))
    ),
    "quads": lambda rng: "".join(_label(rng) + _locs(rng, 8) for _ in range(rng.randint(0, 4))),
    "polygons": lambda rng: "".join(_poly_text(rng) for _ in range(rng.randint(0, 3))),
    "boxes_and_polygons": lambda rng: rng.choice([_GENERATORS["boxes"], _GENERATORS["polygons"]])(rng),
}


def fuzzed_outputs(post_process: Callable[[str, str, tuple], dict], n_per_task: int = 12, seed: int = 0):
    """(task, dict, image size) for every task: ``post_process(text, task, size)`` of random generations."""
    rng = random.Random(seed)
    cases = []
    for task in TASKS:
        for _ in range(n_per_task):
            size = rng.choice(SIZES)
            text = "</s><s>" + _GENERATORS[TASK_KINDS[task]](rng) + "</s>"
            cases.append((task, post_process(text, task, size), size))
    return cases


# --- the typed fields say what the dict says ------------------------------------------------------------
_LOC_RUN = re.compile(r"<loc_(\d+)>" * 4)


def assert_matches_dict(result: Florence2Result, d: dict, size) -> None:
    ((task, answer),) = d.items()
    assert result.task == task and result.image_size == tuple(size) and result.raw == d
    kind = TASK_KINDS[task]
    boxes = [(list(b.xyxy), b.label) for b in result.boxes]
    polygons = [([list(p) for p in g.parts], g.label) for g in result.polygons]
    if kind == "text":
        assert result.text == answer and len(result) == 0
    elif kind == "region_text":
        assert result.text == re.sub(r"<loc_\d+>", "", answer).strip()
        assert len(result.boxes) == len(_LOC_RUN.findall(answer)) and not result.quad_boxes
    elif kind == "boxes":
        assert boxes == list(zip(answer["bboxes"], answer["labels"])) and result.text is None
    elif kind == "quads":
        quads = [(list(q.points), q.label) for q in result.quad_boxes]
        assert quads == list(zip(answer["quad_boxes"], answer["labels"]))
    elif kind == "polygons":
        assert polygons == list(zip(answer["polygons"], answer["labels"]))
    else:
        assert boxes == list(zip(answer["bboxes"], answer["bboxes_labels"]))
        assert polygons == list(zip(answer["polygons"], answer["polygons_labels"]))
