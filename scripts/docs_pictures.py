"""Draw the toy model's answer to each of the 15 tasks into ``docs/images/tasks/<slug>.png`` (the docs' pictures).

The toy model is ``models/florence2-tiny-shapes`` (3.3 M parameters, trained on generated shapes and words,
``florence2_export.toy.train_tiny``): these are ITS answers on its own kind of scene, not Florence-2 base's.
The script exports it (the ``export`` extra: torch, transformers) into a temporary folder, runs every task
with the torch-free runtime on the demo's scenes (``florence2_export.toy.demo.demo_requests``, fixed seed,
so the pictures are the same on every run of the same code) and draws each answer with
``Florence2Result.draw``; a region task's input region is drawn as a thin black box.

    python scripts/docs_pictures.py [OUT_DIR]     # default: docs/images/tasks
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "runtime"), str(ROOT / "export")]

from PIL import Image, ImageDraw, ImageFont

from florence2_runtime import Florence2, Florence2Result

SEED = 2026  # the demo's seed (florence2_export.toy.demo.DEMO_SEED): scenes training never drew
SIDE = 320  # pixels of the drawn scene (the model sees 128 px; nearest-neighbour upscaling keeps it crisp)
HEADER = 40  # the task and its input, above the scene


def slug(task: str) -> str:
    """``"<OCR_WITH_REGION>"`` -> ``"ocr_with_region"`` (the picture's file name, without .png)."""
    return task.strip("<>").lower()


def picture(request: dict, answer: dict) -> Image.Image:
    """One answer drawn on its scene, with the task and its input written above it."""
    image: Image.Image = request["image"]
    result = Florence2Result.from_dict(answer, image.size)
    scene = image.resize((SIDE, SIDE), Image.Resampling.NEAREST)
    if "region" in request:
        scale = SIDE / image.width
        x1, y1, x2, y2 = (v * scale for v in request["region"])
        ImageDraw.Draw(scene).rectangle([x1, y1, x2, y2], outline=(0, 0, 0), width=1)
    drawn = result.draw(scene)
    out = Image.new("RGB", (SIDE, SIDE + HEADER), (255, 255, 255))
    out.paste(drawn, (0, HEADER))
    given = (
        f'text: "{request["text"]}"'
        if "text" in request
        else f"region: {tuple(request['region'])} px of {image.width}"
        if "region" in request
        else "no input"
    )
    draw = ImageDraw.Draw(out)
    draw.text((6, 4), request["task"], fill=(0, 0, 0), font=ImageFont.load_default(size=15))
    draw.text((6, 22), given[:52], fill=(90, 90, 90), font=ImageFont.load_default(size=12))
    return out


def main(out_dir: Path) -> list[Path]:
    from florence2_export import export
    from florence2_export.toy.demo import TINY_SHAPES, demo_requests

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "tiny-shapes-onnx"
        export(TINY_SHAPES, folder, quiet=True)
        with Florence2.from_pretrained(folder) as model:
            for request in demo_requests(SEED):
                inputs = {k: request[k] for k in ("text", "region") if k in request}
                answer = model.run(request["image"], request["task"], **inputs)
                path = out_dir / f"{slug(request['task'])}.png"
                picture(request, answer).quantize(
                    96, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE
                ).save(path, optimize=True)
                written.append(path)
                print(f"{path}  {path.stat().st_size // 1024} KiB  {answer[request['task']]}")
    return written


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "images" / "tasks")
