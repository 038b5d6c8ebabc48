"""Synthetic shapes-and-words images with the answer to every Florence-2 task, generated on the fly.

Two kinds of scene, both drawn with Pillow only and fully determined by a ``numpy`` generator:

- **shapes**: 1-4 filled, non-overlapping ``circle`` / ``square`` / ``triangle`` / ``star`` in one of six
  colours, small (16-28 px at 128 px) or large (38-56 px), on a plain or textured background; every
  (colour, shape) pair occurs at most once, so "the red circle" always names one shape;
- **words**: 1-2 short words or numbers written with Pillow's built-in font (``ImageFont.load_default``).

:func:`make_sample` turns a scene into one training example for a task: the image, the text given to
``Florence2Processor`` (task token plus its input, a region already written as ``<loc_>`` tokens) and
the target the decoder learns, in the format the published checkpoints answer (``circle<loc_..>x4``,
polygons as bare ``<loc_>`` runs, OCR quads as 8 ``<loc_>``). Boxes and polygons are quantised exactly
like transformers' ``Florence2PostProcessor.quantize`` (bin = floor(coordinate / size * 1000)).
Instances are listed left to right (by x1); captions name shapes in that order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SHAPES = ("circle", "square", "triangle", "star")
COLOURS = {
    "red": (215, 35, 35),
    "green": (40, 160, 50),
    "blue": (35, 70, 215),
    "yellow": (240, 215, 35),
    "black": (15, 15, 15),
    "white": (250, 250, 250),
}
BACKGROUNDS = ("plain", "striped", "checkered", "noisy")
COUNT_WORDS = ("one", "two", "three", "four")
WORDS = (
    "CAT", "DOG", "SUN", "MAP", "KEY", "BOX", "CUP", "PEN", "BUS", "CAR", "HAT", "TOY", "ICE", "JAM", "OWL",
    "FOX", "BIRD", "FISH", "TREE", "STOP", "OPEN", "EXIT", "SALE", "MILK", "BOOK", "DOOR", "LAMP", "STAR",
    "MOON", "RAIN", "SNOW", "WIND", "GOLD", "BLUE", "RED", "PARK", "SHOP", "CAFE", "TAXI", "HOTEL",
)  # fmt: skip
SMALL, LARGE = (16, 28), (38, 56)  # bounding-box side ranges, in pixels at 128 px (scaled with the image)
NUM_BINS = 1000
T = TypeVar("T")
CIRCLE_POINTS = 12  # vertices of a circle's polygon

# every task and the scene it is asked about; the sampling weights favour the tasks with the longest answers
TASK_SCENES = {
    "<OD>": "shapes",
    "<DENSE_REGION_CAPTION>": "shapes",
    "<REGION_PROPOSAL>": "shapes",
    "<CAPTION>": "shapes",
    "<DETAILED_CAPTION>": "shapes",
    "<MORE_DETAILED_CAPTION>": "shapes",
    "<CAPTION_TO_PHRASE_GROUNDING>": "shapes",
    "<OPEN_VOCABULARY_DETECTION>": "shapes",
    "<REGION_TO_CATEGORY>": "shapes",
    "<REGION_TO_DESCRIPTION>": "shapes",
    "<REFERRING_EXPRESSION_SEGMENTATION>": "shapes",
    "<REGION_TO_SEGMENTATION>": "shapes",
    "<OCR>": "words",
    "<OCR_WITH_REGION>": "words",
    "<REGION_TO_OCR>": "words",
}
TASK_WEIGHTS = {
    "<OD>": 2.0, "<DENSE_REGION_CAPTION>": 1.5, "<REGION_PROPOSAL>": 1.0, "<CAPTION>": 1.0,
    "<DETAILED_CAPTION>": 1.0, "<MORE_DETAILED_CAPTION>": 1.0, "<CAPTION_TO_PHRASE_GROUNDING>": 1.5,
    "<OPEN_VOCABULARY_DETECTION>": 1.0, "<REGION_TO_CATEGORY>": 0.7, "<REGION_TO_DESCRIPTION>": 0.7,
    "<REFERRING_EXPRESSION_SEGMENTATION>": 1.5, "<REGION_TO_SEGMENTATION>": 1.5, "<OCR>": 1.5,
    "<OCR_WITH_REGION>": 1.5, "<REGION_TO_OCR>": 1.0,
}  # fmt: skip


@dataclass(frozen=True)
class Shape:
    """One filled shape: its name, colour, polygon (pixels, flat x, y, ...) and tight box (x1, y1, x2, y2)."""

    name: str
    colour: str
    size: str  # "small" | "large"
    polygon: tuple[float, ...]
    box: tuple[float, float, float, float]

    @property
    def centre(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2


@dataclass(frozen=True)
class Word:
    """One rendered word: its text and tight box in pixels."""

    text: str
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class Scene:
    """A generated image and what is in it (``shapes`` or ``words``, sorted left to right)."""

    image: Image.Image
    background: str
    shapes: tuple[Shape, ...] = ()
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class Sample:
    """One example: ``text`` is what ``Florence2Processor(text=...)`` takes; ``target`` the decoder's answer."""

    image: Image.Image
    task: str
    text: str
    target: str
    scene: Scene
    inputs: dict = field(
        default_factory=dict
    )  # the task's input as Florence2.run takes it: text=, region= (pixels)


# ----------------------------------------------------------------------------- drawing


def _background(rng: np.random.Generator, size: int, kind: str) -> Image.Image:
    """A mid-tone background that every shape colour stands out from (black and white included)."""
    base = rng.uniform(95, 175, size=3)
    if kind == "plain":
        arr = np.broadcast_to(base, (size, size, 3)).copy()
    else:
        other = np.clip(base + rng.choice([-1, 1], size=3) * rng.uniform(20, 40, size=3), 70, 200)
        y, x = np.mgrid[0:size, 0:size]
        if kind == "striped":
            period = int(rng.integers(6, 16))
            angle = rng.uniform(0, math.pi)
            mask = (np.cos(angle) * x + np.sin(angle) * y) % period < period / 2
        elif kind == "checkered":
            period = int(rng.integers(8, 20))
            mask = ((x // period) + (y // period)) % 2 == 0
        else:  # noisy
            mask = rng.random((size, size)) < 0.5
        arr = np.where(mask[..., None], base, other)
        if kind == "noisy":
            arr = arr + rng.normal(0, 8, size=arr.shape)
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), mode="RGB")


def shape_polygon(name: str, cx: float, cy: float, side: float) -> tuple[float, ...]:
    """Vertices (flat x, y, ...) of a shape whose bounding box is ``side`` wide, centred at (cx, cy)."""
    r = side / 2
    if name == "square":
        pts = [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    elif name == "triangle":
        pts = [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    elif name == "circle":
        pts = [
            (
                cx + r * math.cos(2 * math.pi * k / CIRCLE_POINTS),
                cy + r * math.sin(2 * math.pi * k / CIRCLE_POINTS),
            )
            for k in range(CIRCLE_POINTS)
        ]
    elif name == "star":
        pts = []
        for k in range(10):
            a = -math.pi / 2 + k * math.pi / 5
            rr = r if k % 2 == 0 else r * 0.45
            pts.append((cx + rr * math.cos(a), cy + rr * 1.05 * math.sin(a) + 0.05 * r))
    else:
        raise ValueError(f"unknown shape {name!r}; known: {', '.join(SHAPES)}")
    return tuple(v for p in pts for v in p)


def _box_of(polygon: Sequence[float]) -> tuple[float, float, float, float]:
    xs, ys = polygon[0::2], polygon[1::2]
    return min(xs), min(ys), max(xs), max(ys)


def _overlaps(a: Sequence[float], b: Sequence[float], gap: float) -> bool:
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1])


def make_shapes_scene(rng: np.random.Generator, size: int = 128, count: int | None = None) -> Scene:
    """1-4 non-overlapping shapes (unique colour + name) on a plain or textured ``size`` x ``size`` background."""
    background = str(rng.choice(BACKGROUNDS))
    image = _background(rng, size, background)
    draw = ImageDraw.Draw(image)
    count = int(rng.integers(1, 5)) if count is None else count
    scale = size / 128
    shapes: list[Shape] = []
    used: set[tuple[str, str]] = set()
    for _ in range(200):  # rejection sampling; a few tries suffice for 4 shapes
        if len(shapes) == count:
            break
        name, colour = str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS)))
        size_word = "small" if rng.random() < 0.5 else "large"
        lo, hi = SMALL if size_word == "small" else LARGE
        side = rng.uniform(lo, hi) * scale
        cx, cy = rng.uniform(side / 2 + 2, size - side / 2 - 2, size=2)
        polygon = shape_polygon(name, float(cx), float(cy), float(side))
        box = _box_of(polygon)
        if (colour, name) in used or any(_overlaps(box, s.box, 3 * scale) for s in shapes):
            continue
        used.add((colour, name))
        shapes.append(Shape(name, colour, size_word, polygon, box))
    for s in shapes:
        fill = COLOURS[s.colour]
        if s.name == "circle":
            draw.ellipse(s.box, fill=fill)
        else:
            draw.polygon(list(zip(s.polygon[0::2], s.polygon[1::2])), fill=fill)
    return Scene(image, background, shapes=tuple(sorted(shapes, key=lambda s: (s.box[0], s.box[1]))))


def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=px)


def _random_word(rng: np.random.Generator) -> str:
    if rng.random() < 0.3:
        return str(int(rng.integers(10, 10000)))
    return str(rng.choice(WORDS))


def make_words_scene(rng: np.random.Generator, size: int = 128, count: int | None = None) -> Scene:
    """1-2 words or numbers (Pillow's built-in font, 18-30 px at 128 px) on one line each, top to bottom."""
    background = str(rng.choice(BACKGROUNDS))
    image = _background(rng, size, background)
    draw = ImageDraw.Draw(image)
    count = int(rng.integers(1, 3)) if count is None else count
    words: list[Word] = []
    for _ in range(100):
        if len(words) == count:
            break
        text = _random_word(rng)
        font = _font(int(rng.integers(18, 31) * size / 128))
        x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
        w, h = x1 - x0, y1 - y0
        if w > size - 6:
            continue
        px = float(rng.uniform(3, size - w - 3))
        py = float(rng.uniform(3, size - h - 3))
        box = (px, py, px + w, py + h)
        if any(_overlaps(box, o.box, 4) for o in words):
            continue
        colour = COLOURS[str(rng.choice(["black", "white", "red", "blue", "yellow"]))]
        draw.text((px - x0, py - y0), text, font=font, fill=colour)
        words.append(Word(text, box))
    return Scene(image, background, words=tuple(sorted(words, key=lambda w: (w.box[1], w.box[0]))))


# ----------------------------------------------------------------------------- answers


def loc(value: float, extent: float) -> str:
    """``<loc_b>`` for a pixel coordinate: transformers' quantize, floor(value / (extent / 1000)) in 0..999."""
    b = math.floor(value / (extent / NUM_BINS))
    return f"<loc_{min(max(b, 0), NUM_BINS - 1)}>"


def box_tokens(box: Sequence[float], size: int) -> str:
    return "".join(loc(v, size) for v in box)


def polygon_tokens(polygon: Sequence[float], size: int) -> str:
    return "".join(loc(v, size) for v in polygon)


def quad_tokens(box: Sequence[float], size: int) -> str:
    x1, y1, x2, y2 = box
    return "".join(loc(v, size) for v in (x1, y1, x2, y1, x2, y2, x1, y2))


def phrase(s: Shape, with_size: bool = False) -> str:
    return f"a {s.size} {s.colour} {s.name}" if with_size else f"a {s.colour} {s.name}"


def _relation(a: Shape, b: Shape) -> str:
    """How a (listed first, the left one) stands to b: above, below or to the left of."""
    (ax, ay), (bx, by) = a.centre, b.centre
    if abs(ay - by) > abs(ax - bx):
        return "above" if ay < by else "below"
    return "to the left of"


def _listing(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def caption(scene: Scene, detailed: bool = False) -> str:
    """ "a red circle above a blue square" (two shapes), else the shapes listed left to right."""
    shapes = scene.shapes
    parts = [phrase(s, detailed) for s in shapes]
    text = f"{parts[0]} {_relation(*shapes)} {parts[1]}" if len(shapes) == 2 else _listing(parts)
    return f"{text} on a {scene.background} background" if detailed else text


def position(s: Shape, size: int) -> str:
    """Where a shape's centre is, on a 3 x 3 grid: "top left", "center", "bottom", ..."""
    cx, cy = s.centre
    row = ("top", "", "bottom")[min(int(3 * cy / size), 2)]
    col = ("left", "", "right")[min(int(3 * cx / size), 2)]
    return " ".join(w for w in (row, col) if w) or "center"


def more_detailed_caption(scene: Scene, size: int) -> str:
    n = len(scene.shapes)
    noun = "shape" if n == 1 else "shapes"
    parts = [f"{phrase(s, True)} in the {position(s, size)}" for s in scene.shapes]
    return (
        f"The image shows {COUNT_WORDS[n - 1]} {noun} on a {scene.background} background: {_listing(parts)}."
    )


def _jitter(rng: np.random.Generator, box: Sequence[float], size: int) -> tuple[float, ...]:
    """A region a user might draw around an object: its box moved by up to 2 px per side, inside the image."""
    return tuple(float(np.clip(v + rng.uniform(-2, 2), 0, size - 1)) for v in box)


def _inputs(task: str, scene: Scene, rng: np.random.Generator, size: int) -> dict:
    """A random but valid input for the task (``text`` or a pixel ``region``), or none."""
    shapes, words = scene.shapes, scene.words
    if task == "<CAPTION_TO_PHRASE_GROUNDING>":
        chosen = shapes if rng.random() < 0.6 else (shapes[int(rng.integers(len(shapes)))],)
        return {"text": caption(Scene(scene.image, scene.background, shapes=tuple(chosen)))}
    if task == "<OPEN_VOCABULARY_DETECTION>":
        s = shapes[int(rng.integers(len(shapes)))]
        return {"text": s.name if rng.random() < 0.5 else f"{s.colour} {s.name}"}
    if task == "<REFERRING_EXPRESSION_SEGMENTATION>":
        s = shapes[int(rng.integers(len(shapes)))]
        return {"text": f"the {s.colour} {s.name}" if rng.random() < 0.5 else f"{s.colour} {s.name}"}
    if task in ("<REGION_TO_CATEGORY>", "<REGION_TO_DESCRIPTION>", "<REGION_TO_SEGMENTATION>"):
        return {"region": _jitter(rng, shapes[int(rng.integers(len(shapes)))].box, size)}
    if task == "<REGION_TO_OCR>":
        return {"region": _jitter(rng, words[int(rng.integers(len(words)))].box, size)}
    return {}


def _named(scene: Scene, query: str) -> list[Shape]:
    """The shapes a query names: "circle", "red circle" or "the red circle"."""
    query = query.removeprefix("the ")
    return [s for s in scene.shapes if query in (s.name, f"{s.colour} {s.name}")]


def _at(items: Sequence, region: Sequence[float]):
    """The item (shape or word) whose box is nearest to a region."""
    return min(items, key=lambda o: sum(abs(a - b) for a, b in zip(o.box, region)))


def _given(value: T | None, task: str) -> T:
    """A task's input, or a ValueError saying the task needs one."""
    if value is None:
        raise ValueError(f"{task} needs an input (text or region)")
    return value


def target_for(
    task: str, scene: Scene, size: int, text: str | None = None, region: Sequence[float] | None = None
) -> str:
    """The decoder's right answer for a task on a scene, given the task's input (ValueError if it is missing)."""
    shapes, words = scene.shapes, scene.words
    if task == "<OD>":
        return "".join(s.name + box_tokens(s.box, size) for s in shapes)
    if task == "<DENSE_REGION_CAPTION>":
        return "".join(f"{s.colour} {s.name}" + box_tokens(s.box, size) for s in shapes)
    if task == "<REGION_PROPOSAL>":
        return "".join(box_tokens(s.box, size) for s in shapes)
    if task == "<CAPTION>":
        return caption(scene)
    if task == "<DETAILED_CAPTION>":
        return caption(scene, detailed=True)
    if task == "<MORE_DETAILED_CAPTION>":
        return more_detailed_caption(scene, size)
    if task == "<CAPTION_TO_PHRASE_GROUNDING>":
        return "".join(phrase(s) + box_tokens(s.box, size) for s in shapes if phrase(s) in _given(text, task))
    if task == "<OPEN_VOCABULARY_DETECTION>":
        return "".join(
            _given(text, task) + box_tokens(s.box, size) for s in _named(scene, _given(text, task))
        )
    if task == "<REFERRING_EXPRESSION_SEGMENTATION>":
        return "".join(polygon_tokens(s.polygon, size) for s in _named(scene, _given(text, task))[:1])
    if task == "<REGION_TO_CATEGORY>":
        return _at(shapes, _given(region, task)).name
    if task == "<REGION_TO_DESCRIPTION>":
        return phrase(_at(shapes, _given(region, task)), True)
    if task == "<REGION_TO_SEGMENTATION>":
        return polygon_tokens(_at(shapes, _given(region, task)).polygon, size)
    if task == "<OCR>":
        return " ".join(w.text for w in words)
    if task == "<OCR_WITH_REGION>":
        return "".join(w.text + quad_tokens(w.box, size) for w in words)
    if task == "<REGION_TO_OCR>":
        return _at(words, _given(region, task)).text
    raise ValueError(f"unknown task {task!r}")


def processor_text(
    task: str, size: int, text: str | None = None, region: Sequence[float] | None = None
) -> str:
    """What ``Florence2Processor(text=...)`` is given: the task token, then its text or region tokens."""
    if region is not None:
        return task + box_tokens(region, size)
    return task + (text or "")


def answer_for(task: str, scene: Scene, size: int, inputs: dict) -> dict:
    """The right post-processed answer, ``{task: ...}`` as ``Florence2.run`` returns it."""
    from florence2_runtime.tasks.postprocess import post_process_generation

    return post_process_generation(target_for(task, scene, size, **inputs), task, (size, size))


def make_scene(kind: str, rng: np.random.Generator, size: int = 128) -> Scene:
    if kind == "shapes":
        return make_shapes_scene(rng, size)
    if kind == "words":
        return make_words_scene(rng, size)
    raise ValueError(f"unknown scene kind {kind!r}; known: shapes, words")


def make_sample(task: str, rng: np.random.Generator, size: int = 128, scene: Scene | None = None) -> Sample:
    """One example of ``task`` on a new scene (or on ``scene``, of the kind the task needs)."""
    if task not in TASK_SCENES:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASK_SCENES)}")
    scene = make_scene(TASK_SCENES[task], rng, size) if scene is None else scene
    inputs = _inputs(task, scene, rng, size)
    return Sample(
        scene.image,
        task,
        processor_text(task, size, **inputs),
        target_for(task, scene, size, **inputs),
        scene,
        inputs,
    )


CELL_CLASSES = 1 + len(SHAPES) * len(COLOURS) + 1  # background, every (shape, colour), text


def cell_labels(scene: Scene, size: int, grid: int, min_cover: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """What covers each cell of a ``grid`` x ``grid`` split of the image (row-major, like the vision tokens).

    Returns ``classes`` [grid*grid] int64 (0 background, 1 + shape * 6 + colour, last: text) of the object
    covering most of the cell (at least ``min_cover`` of it; each object also claims the cell it covers
    most, so small ones are not lost) and ``boxes`` [grid*grid, 4] float32, that
    object's box over ``size`` (zeros for background cells). The trainer's auxiliary loss reads these.
    """
    cell = size // grid
    classes = np.zeros(grid * grid, np.int64)
    boxes = np.zeros((grid * grid, 4), np.float32)
    best = np.zeros(grid * grid)
    objects = [
        (1 + SHAPES.index(s.name) * len(COLOURS) + list(COLOURS).index(s.colour), s.polygon, s.box)
        for s in scene.shapes
    ]
    objects += [
        (
            CELL_CLASSES - 1,
            (w.box[0], w.box[1], w.box[2], w.box[1], w.box[2], w.box[3], w.box[0], w.box[3]),
            w.box,
        )
        for w in scene.words
    ]
    for cls, polygon, box in objects:
        mask = Image.new("L", (size, size))
        ImageDraw.Draw(mask).polygon(list(polygon), fill=1)
        cover = (
            np.asarray(mask, np.float32)[: cell * grid, : cell * grid]
            .reshape(grid, cell, grid, cell)
            .mean((1, 3))
        )
        cover = cover.reshape(-1)
        take = ((cover >= min_cover) | (np.arange(cover.size) == cover.argmax())) & (cover > best)
        best[take] = cover[take]
        classes[take] = cls
        boxes[take] = np.asarray(box, np.float32) / size
    return classes, boxes


def sample_task(rng: np.random.Generator) -> str:
    tasks = list(TASK_WEIGHTS)
    p = np.array([TASK_WEIGHTS[t] for t in tasks])
    return tasks[int(rng.choice(len(tasks), p=p / p.sum()))]


def corpus() -> list[str]:
    """Every word the answers and prompts use, for the tokenizer's BPE training."""
    lines = [
        " ".join(SHAPES),
        " ".join(COLOURS),
        " ".join(BACKGROUNDS),
        " ".join(COUNT_WORDS),
        " ".join(WORDS),
        "a small large above below to the left of on background in the top bottom right center and",
        "The image shows shape shapes: , .",
        "0 1 2 3 4 5 6 7 8 9 10 42 123 2024",
    ]
    rng = np.random.default_rng(1234)
    for _ in range(40):
        scene = make_shapes_scene(rng, 128)
        lines += [caption(scene), caption(scene, True), more_detailed_caption(scene, 128)]
    return lines * 3
