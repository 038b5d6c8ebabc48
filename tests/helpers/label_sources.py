"""Generated sources for the ``florence2 label`` / ``eval`` tests: shapes pictures as image files of every
supported kind, a PDF, a video, a corrupt file, and COCO ground truth (``florence2_export.toy.shapes``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from florence2_export.toy.shapes import SHAPES, make_shapes_scene

EXTENSIONS = (".jpg", ".JPG", ".png", ".PNG", ".jpeg", ".webp", ".bmp", ".tif", ".TIFF")
VIDEO_FPS, VIDEO_FRAMES = 4, 12  # 3 seconds: frames at 0, 1 and 2 s with --every 1
PDF_PAGES = 2


def write_images(root: Path, count: int, seed: int = 0, nested: bool = True) -> list[Path]:
    """``count`` shapes pictures under ``root``, in three folder depths, with every extension in turn."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        folder = root / (("", "a", "a/b")[i % 3] if nested else "")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img{i:02d}{EXTENSIONS[i % len(EXTENSIONS)]}"
        make_shapes_scene(rng, 128).image.save(path)
        paths.append(path)
    return paths


def write_pdf(path: Path, seed: int = 1) -> Path:
    """A PDF of PDF_PAGES pages (Pillow's PDF writer), each a shapes picture."""
    rng = np.random.default_rng(seed)
    pages = [make_shapes_scene(rng, 128).image for _ in range(PDF_PAGES)]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    return path


def write_video(path: Path, seed: int = 2) -> Path:
    """A VIDEO_FRAMES-frame MPEG-4 video at VIDEO_FPS (PyAV), a new scene every second."""
    import av

    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=VIDEO_FPS)
        stream.width = stream.height = 128
        stream.pix_fmt = "yuv420p"
        for k in range(VIDEO_FRAMES):
            if k % VIDEO_FPS == 0:
                image = make_shapes_scene(rng, 128).image
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_source(root: Path, images: int = 9) -> dict[str, int]:
    """A source folder with everything: nested images, a corrupt file, a PDF and a video. Returns how many
    pictures each kind should give."""
    write_images(root, images)
    (root / "a" / "broken.jpg").write_bytes(b"this is not a JPEG")
    write_pdf(root / "a" / "doc.pdf")
    write_video(root / "clip.mp4")
    return {"images": images, "pages": PDF_PAGES, "frames": VIDEO_FRAMES // VIDEO_FPS, "broken": 1}


def write_truth(root: Path, count: int, seed: int = 3) -> Path:
    """``count`` shapes pictures with their true boxes as a COCO file (``root/truth.json``)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        scene = make_shapes_scene(rng, 128)
        name = f"s{i:03d}.png"
        scene.image.save(root / name)
        images.append({"id": i + 1, "file_name": name, "width": 128, "height": 128})
        for shape in scene.shapes:
            x1, y1, x2, y2 = shape.box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": SHAPES.index(shape.name) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(SHAPES)]
    path = root / "truth.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path
