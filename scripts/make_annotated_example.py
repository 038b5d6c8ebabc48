"""Write docs/annotated_example.png: what ``Florence2Result.draw`` produces.

ILLUSTRATION ONLY: the scene is synthetic and the results are hand-built dicts in the shape
``Florence2.run`` returns (no real weights are used here; a random-weight model's answers would be
noise). It shows boxes (<OD>), a quad box (<OCR_WITH_REGION>) and a polygon
(<REFERRING_EXPRESSION_SEGMENTATION>) drawn on one picture.

    python scripts/make_annotated_example.py [out.png]
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from florence2_runtime import Florence2Result

W, H = 640, 400


def scene() -> Image.Image:
    """Flat-coloured synthetic scene: sky, floor, a table, a ball and a sign with text."""
    im = Image.new("RGB", (W, H), (150, 195, 235))
    d = ImageDraw.Draw(im)
    d.rectangle([0, 260, W, H], fill=(120, 150, 90))
    d.rectangle([70, 210, 330, 232], fill=(130, 85, 45))  # table top
    for x in (90, 300):
        d.rectangle([x, 232, x + 14, 330], fill=(110, 70, 35))
    d.ellipse([150, 130, 230, 210], fill=(215, 40, 40))  # ball on the table
    d.rectangle([430, 70, 590, 150], fill=(250, 250, 240), outline=(60, 60, 60), width=3)  # sign
    d.rectangle([503, 150, 517, 300], fill=(90, 90, 90))
    d.text((446, 98), "FLORENCE-2", fill=(20, 20, 20), font=ImageFont.load_default(size=22))
    return im


def results() -> list[Florence2Result]:
    angles = [k * math.pi / 8 for k in range(16)]
    circle = [v for a in angles for v in (190 + 41 * math.cos(a), 170 + 41 * math.sin(a))]
    dicts = [
        {"<OD>": {"bboxes": [[68, 128, 332, 332], [428, 68, 592, 302]], "labels": ["table", "sign"]}},
        {
            "<OCR_WITH_REGION>": {
                "quad_boxes": [[444, 94, 578, 94, 578, 124, 444, 124]],
                "labels": ["FLORENCE-2"],
            }
        },
        {
            "<REFERRING_EXPRESSION_SEGMENTATION>": {
                "polygons": [[[round(v) for v in circle]]],
                "labels": ["the red ball"],
            }
        },
    ]
    return [Florence2Result.from_dict(d, (W, H)) for d in dicts]


def main(out: Path) -> None:
    image = scene()
    for result in results():
        image = result.draw(image)
    d = ImageDraw.Draw(image)
    d.text(
        (8, H - 22),
        "illustration: hand-built results drawn by Florence2Result.draw (not model output)",
        fill=(255, 255, 255),
        font=ImageFont.load_default(size=13),
        stroke_width=2,
        stroke_fill=(0, 0, 0),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, optimize=True)
    print(f"wrote {out} ({out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    default = Path(__file__).resolve().parent.parent / "docs" / "annotated_example.png"
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else default)
