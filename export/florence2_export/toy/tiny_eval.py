"""Score a Florence-2 on a held-out generated shapes set, and write the tiny model's card.

:func:`held_out_set` draws ``per_task`` examples of every task from their own seed (never the training
stream). :func:`score_answers` compares post-processed answers (the dicts of
``Florence2Processor.post_process_generation`` / ``Florence2.run``) with the generator's ground truth:

=========================================  ==================================================================
boxes (OD, dense caption, proposals,       recall and precision at IoU >= 0.5, label equal where there is one
grounding, open-vocabulary, OCR quads)
captions, region category / description    exact match of the text
OCR, region OCR                            character accuracy: 1 - edit distance / length of the truth
segmentation                               mask IoU of the predicted polygon(s) with the shape (rasterised)
=========================================  ==================================================================

:func:`answers_agree` is the task-level agreement of two models' decoded answers (precision variants):
same text, same number of ``<loc_>`` tokens, each within ``max_bins`` bins.

Model-agnostic: a model is a function ``(images, texts) -> decoded strings``;
:func:`florence2_export.toy.train_tiny.evaluate_checkpoint` wraps transformers' ``generate`` (greedy), the
runtime's ``Florence2`` works the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from florence2_runtime.tasks.postprocess import post_process_generation

from . import shapes

BOX_TASKS = (
    "<OD>",
    "<DENSE_REGION_CAPTION>",
    "<REGION_PROPOSAL>",
    "<CAPTION_TO_PHRASE_GROUNDING>",
    "<OPEN_VOCABULARY_DETECTION>",
    "<OCR_WITH_REGION>",
)
EXACT_TASKS = (
    "<CAPTION>",
    "<DETAILED_CAPTION>",
    "<MORE_DETAILED_CAPTION>",
    "<REGION_TO_CATEGORY>",
    "<REGION_TO_DESCRIPTION>",
)
CHAR_TASKS = ("<OCR>", "<REGION_TO_OCR>")
MASK_TASKS = ("<REFERRING_EXPRESSION_SEGMENTATION>", "<REGION_TO_SEGMENTATION>")
IOU = 0.5
NUM_BINS = shapes.NUM_BINS
MAX_NEW_TOKENS = 80
Generate = Callable[[Sequence[Image.Image], Sequence[str]], list[str]]


def held_out_set(per_task: int, seed: int, size: int = 128) -> list[shapes.Sample]:
    """``per_task`` fresh examples of each of the 15 tasks, in task order."""
    rng = np.random.default_rng(seed)
    return [shapes.make_sample(task, rng, size) for task in shapes.TASK_SCENES for _ in range(per_task)]


# ----------------------------------------------------------------------------- metrics


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _matches(
    truth: Sequence[tuple[str, Sequence[float]]], pred: Sequence[tuple[str, Sequence[float]]]
) -> int:
    """Greedy one-to-one matching (best IoU first) of equal labels at IoU >= 0.5; the number matched."""
    pairs = sorted(
        (
            (box_iou(t[1], p[1]), i, j)
            for i, t in enumerate(truth)
            for j, p in enumerate(pred)
            if t[0] == p[0]
        ),
        reverse=True,
    )
    used_t, used_p = set(), set()
    for iou, i, j in pairs:
        if iou >= IOU and i not in used_t and j not in used_p:
            used_t.add(i)
            used_p.add(j)
    return len(used_t)


def _quad_box(q: Sequence[float]) -> tuple[float, ...]:
    return min(q[0::2]), min(q[1::2]), max(q[0::2]), max(q[1::2])


def truth_and_prediction(sample: shapes.Sample, answer) -> tuple[list, list]:
    """(label, box) pairs of the ground truth and the answer, for the box tasks."""
    task, scene = sample.task, sample.scene
    if task == "<OCR_WITH_REGION>":
        truth = [(w.text, w.box) for w in scene.words]
        return truth, [
            (t, _quad_box(q)) for t, q in zip(answer["labels"], answer["quad_boxes"]) if len(q) == 8
        ]
    labels_key = "bboxes_labels" if task == "<OPEN_VOCABULARY_DETECTION>" else "labels"
    pred = list(zip(answer[labels_key], answer["bboxes"]))
    if task == "<REGION_PROPOSAL>":
        return [("", s.box) for s in scene.shapes], [("", b) for _, b in pred]
    truth_labels = {"<OD>": lambda s: s.name, "<DENSE_REGION_CAPTION>": lambda s: f"{s.colour} {s.name}"}
    if task in truth_labels:
        return [(truth_labels[task](s), s.box) for s in scene.shapes], pred
    # grounding and open vocabulary: the target text lists the (label, box) pairs
    loc = re.compile(r"((?:<loc_\d+>){4})")
    parts = loc.split(sample.target)
    listed: list[tuple[str, Sequence[float]]] = []
    for label, boxes in zip(parts[0::2], parts[1::2]):
        bins = [int(b) for b in re.findall(r"<loc_(\d+)>", boxes)]
        listed.append((label.strip(), [(b + 0.5) * 128 / shapes.NUM_BINS for b in bins]))
    return listed, pred


def _mask(polygons: Sequence[Sequence[float]], size: int) -> np.ndarray:
    im = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(im)
    for poly in polygons:
        if len(poly) >= 6:
            draw.polygon([(poly[i], poly[i + 1]) for i in range(0, len(poly) - 1, 2)], fill=1)
    return np.asarray(im, bool)


def _edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def score_answer(sample: shapes.Sample, answer, size: int = 128) -> dict[str, float]:
    """The numbers one answer (``post_process_generation(...)[task]``) earns; summed over a set later."""
    task = sample.task
    if task in BOX_TASKS:
        truth, pred = truth_and_prediction(sample, answer)
        m = _matches(truth, pred)
        return {"truth": len(truth), "predicted": len(pred), "matched": m}
    if task in EXACT_TASKS:
        return {"n": 1, "exact": float(answer.strip() == sample.target)}
    if task in CHAR_TASKS:
        errors = _edit_distance(answer.strip(), sample.target)
        return {
            "n": 1,
            "chars": len(sample.target),
            "errors": min(errors, len(sample.target)),
            "exact": float(answer.strip() == sample.target),
        }
    if task in MASK_TASKS:
        polygons = [p for instance in answer["polygons"] for p in instance]
        shape = next(
            s for s in sample.scene.shapes if shapes.polygon_tokens(s.polygon, size) == sample.target
        )
        truth_mask, pred_mask = _mask([shape.polygon], size), _mask(polygons, size)
        union = np.logical_or(truth_mask, pred_mask).sum()
        iou = float(np.logical_and(truth_mask, pred_mask).sum() / union) if union else 0.0
        return {"n": 1, "iou": iou, "hit": float(iou >= IOU)}
    raise ValueError(f"no metric for task {task!r}")


def summarise(task: str, scores: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per-task figures from the per-answer numbers of :func:`score_answer`."""
    total = {k: float(sum(s[k] for s in scores)) for k in scores[0]}
    if task in BOX_TASKS:
        return {
            "box_recall@0.5": total["matched"] / max(total["truth"], 1),
            "box_precision@0.5": total["matched"] / max(total["predicted"], 1),
        }
    if task in EXACT_TASKS:
        return {"exact_match": total["exact"] / total["n"]}
    if task in CHAR_TASKS:
        return {
            "char_accuracy": 1 - total["errors"] / max(total["chars"], 1),
            "exact_match": total["exact"] / total["n"],
        }
    return {"mask_iou": total["iou"] / total["n"], "mask_iou>=0.5": total["hit"] / total["n"]}


def evaluate(
    generate: Generate, samples: Sequence[shapes.Sample], batch_size: int = 40, size: int = 128
) -> dict:
    """Run ``generate`` on every sample (batched per task) and score the post-processed answers."""
    decoded: list[str] = []
    for i in range(0, len(samples), batch_size):
        chunk = samples[i : i + batch_size]
        decoded += generate([s.image for s in chunk], [s.text for s in chunk])
    per_task: dict[str, list] = {}
    for sample, text in zip(samples, decoded):
        answer = post_process_generation(text, sample.task, (size, size))[sample.task]
        per_task.setdefault(sample.task, []).append(score_answer(sample, answer, size))
    tasks = {task: summarise(task, scores) for task, scores in per_task.items()}
    return {"tasks": tasks, "summary": headline(tasks), "decoded": decoded}


def headline(tasks: dict[str, dict[str, float]]) -> dict[str, float]:
    """The three numbers of the model card: <OD> box recall, caption exact match, OCR character accuracy."""
    return {
        "od_box_recall@0.5": round(tasks["<OD>"]["box_recall@0.5"], 3),
        "caption_exact_match": round(tasks["<CAPTION>"]["exact_match"], 3),
        "ocr_char_accuracy": round(tasks["<OCR>"]["char_accuracy"], 3),
    }


# ----------------------------------------------------------------------------- agreement of two models

_LOC = re.compile(r"<loc_(\d+)>")


def answers_agree(a: str, b: str, max_bins: int = 3) -> bool:
    """Same answer up to location noise: equal text between the ``<loc_>`` tokens, as many of them,
    each pair within ``max_bins`` bins (0.3 % of the image side for 3)."""
    if _LOC.sub("<loc>", a) != _LOC.sub("<loc>", b):
        return False
    return all(abs(int(x) - int(y)) <= max_bins for x, y in zip(_LOC.findall(a), _LOC.findall(b)))


# ----------------------------------------------------------------------------- model card

_CARD_HEAD = """\
---
library_name: transformers
pipeline_tag: image-text-to-text
tags: [florence2, toy-model, synthetic-data]
---

# florence2-tiny-shapes: a toy Florence-2 trained on generated shapes and words

A **toy** `Florence2ForConditionalGeneration` (transformers' own class and config, {params:.2f} M
parameters, 128 x 128 px, {image_tokens} image tokens) trained from scratch in this repository on
synthetic images only, so that the offline demo and the precision variants have a model whose answers
mean something. It knows nothing about real photographs.

{status}

- Trained by `bash scripts/train_tiny.sh` (`florence2_export.toy.train_tiny`): {steps_done} AdamW steps of
  {batch} examples generated on the fly (`florence2_export.toy.shapes`), seed {seed}, {threads} CPU threads,
  {minutes:.0f} min of training ({cpu}; {torch_version}); final training loss {loss}.
- Data: 1-4 filled `circle` / `square` / `triangle` / `star` shapes in `red`, `green`, `blue`, `yellow`,
  `black`, `white`, small (16-28 px) or large (38-56 px), on plain, striped, checkered or noisy
  backgrounds; or 1-2 short words / numbers in Pillow's built-in font. Every one of Florence-2's 15
  tasks is trained, with answers in the published checkpoints' formats.
- Tokenizer: the byte-level BPE of `florence2_export.toy.tiny` (Florence-2's special and `<loc_>` tokens)
  trained on the prompts and the dataset's words.
- Recipe: AdamW, warm-up then cosine decay; an auxiliary loss during training only (a linear probe on the
  vision tokens predicting what covers each of the 4 x 4 cells and its box; not in the checkpoint), and the
  decoder's cross-attention query/key weights initialised 4x larger than transformers' default. Without
  these two the decoder learned the answers' language prior and ignored the image (swapping images did not
  change the loss after 600 steps, and the vision tower collapsed to a constant output).

## Evaluation

Held-out generated set: {per_task} images per task (seed {eval_seed}, never drawn in training), greedy
decoding, up to {max_new_tokens} new tokens, answers post-processed like `Florence2Processor`.

| task | metric | value |
|---|---|---|
"""

_CARD_TAIL = """
Box metrics: one-to-one matches of equal labels at IoU >= 0.5 (recall: share of true objects found;
precision: share of predicted boxes that match). Exact match: the whole answer string. OCR: 1 - edit
distance / length of the true text. Segmentation: IoU of the rasterised predicted polygons with the shape.

## What it cannot do

- Anything outside its generator: real photographs, other objects, colours, fonts, more than 4 shapes or
  2 words, overlapping shapes, rotated shapes, images that are not square (they are resized to 128 px).
- Vocabulary: its tokenizer knows the dataset's words and digits; other text is split into bytes it was
  never trained to produce.
- Captions in free form: it has learned one template per caption task; an answer that is right in
  meaning but not the template's words counts as wrong above.
- Localisation is limited by 4 x 4 image tokens at 128 px: boxes are typically off by a few pixels.
- Reading text: the OCR tasks learned their answer format and the word list, not the words in the image
  (character accuracy about 5 %); whether more training or more image tokens would teach it was not tried.
- Whole captions: a caption names every shape's colour and kind (and position) in order, and one wrong word
  makes the answer wrong; the region tasks above show how often single shapes are named right.
- Firm decisions: many of its choices (which location bin, one more box or the end) are close calls, so a
  small change of its weights changes some answers without making them worse against the truth. It is a
  harsh judge of precision variants: the repository's README measures how many answers change when every
  weight is perturbed by 0.01 % to 1 % (`benchmarks/precision_tiny.py`, the `noise:EPS` control).
"""


def _headline(report: dict) -> dict[str, float]:
    """One number per task: box recall, exact match, character accuracy or mean mask IoU."""
    keys = ("box_recall@0.5", "exact_match", "char_accuracy", "mask_iou")
    out = {}
    for task, metrics in report["tasks"].items():
        key = "char_accuracy" if "char_accuracy" in metrics else next(k for k in keys if k in metrics)
        out[task] = metrics[key]
    return out


def _status(report: dict) -> str:
    """The card's verdict, read off the held-out numbers (never typed in)."""
    head = _headline(report)
    good = [t for t, v in head.items() if v >= 0.8]
    some = [t for t, v in head.items() if 0.2 <= v < 0.8]
    none = [t for t, v in head.items() if v < 0.2]
    if len(good) == len(head):
        return "**Status:** it answers most held-out questions right (numbers below)."
    names = lambda tasks: ", ".join(f"`{t}` {head[t]:.2f}" for t in tasks) or "none"  # noqa: E731
    return (
        "**Status: a weak toy, partly trained.** Its answers depend on the image (see `image_reliance` in "
        "`training_log.json`: the loss rises by that much when each image is swapped for another), but only "
        f"part of them are right. Mostly right (>= 0.8): {names(good)}. Partly right (0.2-0.8): {names(some)}. "
        f"Not learned (< 0.2): {names(none)}. (Headline per task: box recall at IoU 0.5, exact match, "
        "character accuracy or mask IoU; all numbers below.) Unlike random weights', its answers are stable "
        "enough to judge precision variants by, but many of its choices are close calls (see What it cannot do)."
    )


def write_model_card(out: Path, report: dict) -> None:
    """README.md of the checkpoint folder: what it is, how it was trained, the held-out numbers, its limits."""
    tr, ev = report["training"], report["eval"]
    phases = [*tr.get("earlier_phases", []), tr]
    steps_done = (
        f"{tr['stop_after']} (of a {tr['steps']}-step schedule, `--stop-after {tr['stop_after']}`)"
        if tr.get("stop_after")
        else str(tr["steps"])
    )
    if len(phases) > 1:
        steps_done = (
            " + ".join(str(p.get("stop_after") or p["steps"]) for p in phases)
            + " ("
            + "; ".join(
                f"phase {i + 1}: lr {p['lr']}, warm-up {p['warmup']}, seed {p['seed']}"
                + (f", continued from phase {i} with `--init`" if p.get("init") else ", from scratch")
                for i, p in enumerate(phases)
            )
            + ")"
        )
    tr = {
        **tr,
        "train_seconds": sum(p["train_seconds"] for p in phases),
        "train_cpu_seconds": sum(p.get("train_cpu_seconds", 0) for p in phases),
    }
    status = _status(report)
    if tr.get("note"):
        status += "\n\n" + tr["note"]
    head = _CARD_HEAD.format(
        status=status,
        steps_done=steps_done,
        params=tr["parameters"] / 1e6,
        image_tokens=report.get("image_tokens", 17),
        steps=tr["steps"],
        batch=tr["batch_size"],
        seed=" then ".join(str(p["seed"]) for p in phases),
        threads=tr["threads"],
        minutes=tr["train_seconds"] / 60,
        cpu=(
            f"{tr['train_cpu_seconds'] / 60:.0f} min of CPU time"
            if "train_cpu_seconds" in tr
            else "CPU time not recorded"
        ),
        torch_version=f"torch {tr['torch']}",
        loss=tr["final_loss"],
        per_task=ev["per_task"],
        eval_seed=ev["seed"],
        max_new_tokens=ev["max_new_tokens"],
    )
    rows = [
        f"| `{task}` | {metric} | {value:.3f} |"
        for task, metrics in report["tasks"].items()
        for metric, value in metrics.items()
    ]
    card = head + "\n".join(rows) + "\n" + _CARD_TAIL
    scores = out / "scores.json"  # benchmarks/scores_tiny.py: do its confidence scores mean something
    if scores.is_file():
        card += _scores_section(json.loads(scores.read_text(encoding="utf-8")))
    (out / "README.md").write_text(card, encoding="utf-8")


def _scores_section(result: dict) -> str:
    """The card's "Confidence scores" section, from ``benchmarks/scores_tiny.py``'s figures."""
    lines = [
        "",
        "## Confidence scores",
        "",
        f"`run(..., scores=True)` on {result['images']} held-out `<OD>` scenes "
        "(`python benchmarks/scores_tiny.py`; `benchmarks/results/scores_tiny.md` has every task):",
        "",
        "| search | AP@0.5, all scores equal | AP@0.5 ranked by score | mean score: right boxes | wrong boxes |",
        "|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        od = run["tasks"]["<OD>"]
        chosen = next(iter(od["definitions"].values()))
        search = "greedy" if run["num_beams"] == 1 else f"{run['num_beams']} beams"
        lines.append(
            f"| {search} | {od['AP, all scores equal']['AP@0.5']:.3f} | {chosen['AP']['AP@0.5']:.3f} | "
            f"{chosen['mean_score_right']:.3f} ({chosen['right']}) | {chosen['mean_score_wrong']:.3f} "
            f"({chosen['wrong']}) |"
        )
    lines += [
        "",
        "Right: IoU >= 0.5 with a true box of the same label. The scores rank boxes; they are not calibrated "
        "probabilities (`florence2_runtime/tasks/confidence.py`).",
        "",
    ]
    return "\n".join(lines)
