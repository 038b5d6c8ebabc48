"""The offline demo: a toy Florence-2 that has been trained, exported and run on every task.

By default the demo exports the committed checkpoint ``models/florence2-tiny-shapes/`` (trained on
generated shapes and words by :mod:`florence2_export.toy.train_tiny`), generates fresh images it has never
seen, runs all 15 tasks with the torch-free runtime, prints each answer next to the generator's truth,
draws the answers on one picture and checks the runtime's tokens against transformers'. With
``random_weights=True`` (or when the checkpoint is absent) it builds a RANDOM-weight checkpoint instead,
whose answers are noise.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..pipeline import export
from ..verify import make_test_image
from .tiny import write_tiny_checkpoint

TINY_SHAPES = Path(__file__).resolve().parents[3] / "models" / "florence2-tiny-shapes"
DEMO_SEED = 2026  # the demo's scenes: never drawn by training (seed 0) nor by the model card's evaluation
PANEL = 256  # side of one answer's picture in the drawing (the model sees 128 px)

# the random-weight demo's inputs (also used by the parity tests)
DEMO_INPUTS: dict[str, dict[str, Any]] = {
    "<CAPTION>": {},
    "<DETAILED_CAPTION>": {},
    "<MORE_DETAILED_CAPTION>": {},
    "<OD>": {},
    "<DENSE_REGION_CAPTION>": {},
    "<REGION_PROPOSAL>": {},
    "<CAPTION_TO_PHRASE_GROUNDING>": {"text": "a red ball on a table"},
    "<REFERRING_EXPRESSION_SEGMENTATION>": {"text": "the red ball"},
    "<REGION_TO_SEGMENTATION>": {"region": (10, 12, 90, 70)},
    "<OPEN_VOCABULARY_DETECTION>": {"text": "ball"},
    "<REGION_TO_CATEGORY>": {"region": (10, 12, 90, 70)},
    "<REGION_TO_DESCRIPTION>": {"region": (10, 12, 90, 70)},
    "<REGION_TO_OCR>": {"region": (10, 12, 90, 70)},
    "<OCR>": {},
    "<OCR_WITH_REGION>": {},
}


def default_checkpoint() -> Path | None:
    """The committed trained checkpoint, when this is a source checkout that has it."""
    return TINY_SHAPES if (TINY_SHAPES / "model.safetensors").is_file() else None


def run_demo(
    workdir: Path,
    max_new_tokens: int | None = None,
    checkpoint: Path | None = None,
    random_weights: bool = False,
    seed: int = DEMO_SEED,
) -> dict:
    """Export, run every task, print one JSON line per task, draw, check tokens; returns the results."""
    workdir = Path(workdir)
    checkpoint = None if random_weights else (Path(checkpoint) if checkpoint else default_checkpoint())
    if checkpoint is None:
        return _run_random_demo(workdir, max_new_tokens or 24)
    return _run_trained_demo(workdir, checkpoint, max_new_tokens or 80, seed)


def _run_random_demo(workdir: Path, max_new_tokens: int) -> dict:
    from florence2_runtime import Florence2

    checkpoint = write_tiny_checkpoint(workdir / "tiny-random-checkpoint", size="tiny")
    export(checkpoint, workdir / "tiny-random-onnx", overwrite=True)
    model = Florence2.from_pretrained(workdir / "tiny-random-onnx")
    image_path = workdir / "demo.png"
    make_test_image(160, 120, seed=0).save(image_path)
    print("# RANDOM WEIGHTS: the answers below are noise; they show the pipeline runs end to end.")
    results = {}
    for task, inputs in DEMO_INPUTS.items():
        results[task] = model.run(image_path, task, max_new_tokens=max_new_tokens, **inputs)
        print(json.dumps(results[task], ensure_ascii=False))
    images = [Image.open(image_path).convert("RGB"), make_test_image(64, 200, seed=3)]
    _compare_with_transformers(
        checkpoint, model, images, ["<OD>", "<CAPTION_TO_PHRASE_GROUNDING>a red ball"], max_new_tokens
    )
    print(next_steps(workdir / "tiny-random-onnx", image_path))
    return results


# ----------------------------------------------------------------------------- the trained toy model


def demo_requests(seed: int = DEMO_SEED, size: int = 128) -> list[dict]:
    """Every task once, on two fresh scenes (shapes; words), with inputs taken from what is in them.

    Each entry: ``task``, ``image``, ``text`` / ``region`` (what ``Florence2.run`` takes), ``truth``
    (the answer the generator says is right, in the model's output format).
    """
    from . import shapes

    rng = np.random.default_rng(seed)
    scenes = {
        "shapes": shapes.make_shapes_scene(rng, size, count=3),
        "words": shapes.make_words_scene(rng, size, 2),
    }
    first_shape, first_word = scenes["shapes"].shapes[0], scenes["words"].words[0]
    inputs: dict[str, dict[str, Any]] = {
        "<CAPTION_TO_PHRASE_GROUNDING>": {"text": shapes.caption(scenes["shapes"])},
        "<REFERRING_EXPRESSION_SEGMENTATION>": {"text": f"the {first_shape.colour} {first_shape.name}"},
        "<OPEN_VOCABULARY_DETECTION>": {"text": f"{first_shape.colour} {first_shape.name}"},
        "<REGION_TO_SEGMENTATION>": {"region": first_shape.box},
        "<REGION_TO_CATEGORY>": {"region": first_shape.box},
        "<REGION_TO_DESCRIPTION>": {"region": first_shape.box},
        "<REGION_TO_OCR>": {"region": first_word.box},
    }
    requests = []
    for task, kind in shapes.TASK_SCENES.items():
        scene = scenes[kind]
        given: dict[str, Any] = {
            k: tuple(round(v) for v in val) if k == "region" else val
            for k, val in inputs.get(task, {}).items()
        }
        truth = shapes.answer_for(task, scene, size, given)
        sample = shapes.Sample(
            scene.image, task, shapes.processor_text(task, size, **given),
            shapes.target_for(task, scene, size, **given), scene, given,
        )  # fmt: skip
        requests.append({"task": task, "image": scene.image, **given, "truth": truth, "sample": sample})
    return requests


def _panel(image: Image.Image, result, title: str) -> Image.Image:
    """One answer drawn on a PANEL-px copy of its image, with the task written above it."""
    drawn = result.draw(image.resize((PANEL, PANEL), Image.Resampling.NEAREST))
    panel = Image.new("RGB", (PANEL, PANEL + 22), (255, 255, 255))
    panel.paste(drawn, (0, 22))
    ImageDraw.Draw(panel).text((4, 3), title, fill=(0, 0, 0), font=_font(13))
    return panel


def _font(px: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=px)


def draw_answers(
    requests: list[dict], results: list[dict], out: Path, columns: int = 5, note: str = ""
) -> Path:
    """All answers on one labelled picture (the README's): a grid of panels, one per task."""
    from florence2_runtime import Florence2Result

    panels = [
        _panel(r["image"], Florence2Result.from_dict(res, r["image"].size), r["task"])
        for r, res in zip(requests, results)
    ]
    rows = -(-len(panels) // columns)
    w, h = panels[0].size
    footer = 44
    sheet = Image.new("RGB", (columns * w, rows * h + footer), (255, 255, 255))
    for i, p in enumerate(panels):
        sheet.paste(p, ((i % columns) * w, (i // columns) * h))
    ImageDraw.Draw(sheet).text(
        (6, rows * h + 5),
        "Real output of a TOY model (florence2-tiny-shapes, 3.3 M parameters, trained on generated "
        f"shapes and words only), run by the torch-free ONNX runtime\n{note}",
        fill=(0, 0, 0),
        font=_font(14),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, optimize=True)
    return out


def _run_trained_demo(workdir: Path, checkpoint: Path, max_new_tokens: int, seed: int) -> dict:
    from florence2_runtime import Florence2

    onnx_dir = workdir / "tiny-shapes-onnx"
    export(checkpoint, onnx_dir, overwrite=True)
    model = Florence2.from_pretrained(onnx_dir)
    requests = demo_requests(seed)
    print(
        f"# {checkpoint.name}: a TOY model trained on generated shapes and words; fresh images (seed {seed})"
    )
    results, right = [], 0
    for r in requests:
        kwargs = {k: r[k] for k in ("text", "region") if k in r}
        result = model.run(r["image"], r["task"], max_new_tokens=max_new_tokens, **kwargs)
        ok = is_right(r["sample"], result[r["task"]])
        right += ok
        results.append(result)
        print(
            json.dumps(
                {**result, "input": kwargs or None, "truth": r["truth"][r["task"]], "right": ok},
                ensure_ascii=False,
            )
        )
    print(
        f"# {right} of {len(requests)} answers right, by the model card's measures (every box matched at IoU >= 0.5"
        " with its label and none extra, text exact, mask IoU >= 0.5)"
    )
    picture = draw_answers(requests, results, workdir / "demo_answers.png", note=_scores_note(checkpoint))
    print(f"# answers drawn in {picture}")
    for i, r in enumerate(requests):
        r["image"].save(workdir / f"demo_{i:02d}.png")
    pair = [requests[0], requests[-2]]  # <OD> on the shapes, <OCR_WITH_REGION> on the words
    _compare_with_transformers(
        checkpoint, model, [r["image"] for r in pair], [r["task"] for r in pair], max_new_tokens
    )
    print(next_steps(onnx_dir, workdir / "demo_00.png"))
    return {r["task"]: res for r, res in zip(requests, results)}


def next_steps(model_dir: Path, image: Path) -> str:
    """What the demo prints last: where its export is, and three commands to try next."""
    model, picture = shlex.quote(str(model_dir)), shlex.quote(str(image))
    return "\n".join(
        [
            f"# the exported model: {model_dir}",
            "# try next:",
            f"#   florence2 run {model} {picture} --task '<OD>' --scores --draw answer.png   # your own image",
            f"#   florence2 serve {model}   # then open http://127.0.0.1:8000/ (the try-it page; API at /docs)",
            "#   florence2 export microsoft/Florence-2-base-ft florence2-base-onnx   # a real checkpoint (hub access)",
        ]
    )


def _scores_note(checkpoint: Path) -> str:
    """The checkpoint's held-out headline numbers (its eval.json), to print under the picture."""
    path = checkpoint / "eval.json"
    if not path.is_file():
        return "no held-out evaluation in the checkpoint folder"
    s = json.loads(path.read_text())["summary"]
    return (
        f"its held-out scores (model card): <OD> box recall {s['od_box_recall@0.5']:.0%}, <CAPTION> exact match "
        f"{s['caption_exact_match']:.0%}, <OCR> character accuracy {s['ocr_char_accuracy']:.0%}"
    )


def is_right(sample, answer) -> bool:
    """Whether one post-processed answer is right by the held-out evaluation's measures (``tiny_eval``)."""
    from .tiny_eval import score_answer

    score = score_answer(sample, answer)
    if "matched" in score:
        return score["matched"] == score["truth"] == score["predicted"]
    if "hit" in score:
        return score["hit"] == 1.0
    return score["exact"] == 1.0


def _compare_with_transformers(checkpoint: Path, model, images, texts, max_new_tokens: int) -> None:
    """Print whether the runtime's ids equal transformers' for a batched beam-search request."""
    import torch
    from transformers import AutoProcessor, Florence2ForConditionalGeneration

    ref = Florence2ForConditionalGeneration.from_pretrained(checkpoint, attn_implementation="eager").eval()
    processor = AutoProcessor.from_pretrained(
        checkpoint, backend="pil"
    )  # the runtime reproduces the PIL backend
    batch = processor(text=texts, images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = ref.generate(**batch, max_new_tokens=max_new_tokens, num_beams=3).numpy()
    got = model.generate(images, texts, max_new_tokens=max_new_tokens, num_beams=3)
    same = expected.shape == got.shape and bool(np.array_equal(expected, got))
    print(f"# token ids equal to transformers' generate (batch 2, 3 beams): {same}")
    if not same:
        raise SystemExit("the runtime disagrees with transformers on the demo checkpoint")
