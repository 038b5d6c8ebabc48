"""The dataset on disk: splits, image files and the annotation files, written with supervision's writers.

Layout of ``DIR`` for each split (``train`` unless ``--split`` names others):

=======  =====================================================================================
format   files
=======  =====================================================================================
coco     ``DIR/<split>/`` the images and ``_annotations.coco.json`` (Roboflow's COCO layout, what
         RF-DETR reads); polygons kept exactly as ``segmentation`` (no mask round trip)
yolo     ``DIR/<split>/images/``, ``DIR/<split>/labels/`` and ``DIR/data.yaml`` (class names and
         each split's images; ``val`` for a split named valid / val / validation)
voc      ``DIR/<split>/images/``, ``DIR/<split>/annotations/`` (one Pascal VOC XML per image)
=======  =====================================================================================

Image files are written while labelling (under a temporary name, fsynced, renamed): a JPEG or PNG shown
as stored is copied byte for byte, a video frame is saved as JPEG (quality 95), anything else (a PDF
page, a rotated photo, WebP, BMP, TIFF) as PNG. Names are the source key made file-safe plus 8 hex digits
of its hash, so no two images collide. Each image's split is drawn from a hash of its key and the seed:
proportions are those of the draw (as Ultralytics' ``autosplit``), and an image keeps its split in a
resumed or extended run. The annotation files are rewritten from the journal at the end of every run
(Ctrl-C included), ``--min-score`` applied there.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import require
from ..inputs.image_size import ImageSize
from ..tasks.masks import object_masks
from .detections import Detection
from .journal import Record, write_bytes_atomic
from .sources import Item, Picture

__all__ = ["FORMATS", "image_folder", "parse_split", "save_picture", "split_of", "write_dataset"]

FORMATS = ("coco", "yolo", "voc")
COCO_FILE = "_annotations.coco.json"
DATA_YAML = "data.yaml"
DEFAULT_SPLIT: tuple[tuple[str, float], ...] = (("train", 1.0),)
CHUNK = 256  # images per supervision dataset when writing YOLO / VOC (bounds the masks held in memory)
JPEG_QUALITY = 95
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_ULTRALYTICS_KEYS = {"train": "train", "valid": "val", "val": "val", "validation": "val", "test": "test"}
EXTRA = "label"


def supervision(what: str):
    """The supervision module (and its ``config``), without its warning that OpenCV is missing: its numpy
    fallback is all these writers need (the tests load what they write back)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"OpenCV .*is not installed", category=UserWarning)
        sv = require("supervision", EXTRA, what)
        require("supervision.config", EXTRA, what)  # sv.config: the data keys of its COCO writer
    return sv


# --- splits ------------------------------------------------------------------------------------------
def parse_split(text: str | Sequence[tuple[str, float]] | None) -> tuple[tuple[str, float], ...]:
    """``"train=0.8,valid=0.2"`` -> ``(("train", 0.8), ("valid", 0.2))``; fractions > 0 summing to 1."""
    if text is None:
        return DEFAULT_SPLIT
    if isinstance(text, str):
        pairs = []
        for part in text.split(","):
            name, sep, value = part.partition("=")
            try:
                pairs.append((name.strip(), float(value)))
            except ValueError:
                raise ValueError(
                    f"--split must be name=fraction pairs, e.g. train=0.8,valid=0.2; got {text!r}"
                ) from None
            if not sep:
                raise ValueError(
                    f"--split must be name=fraction pairs, e.g. train=0.8,valid=0.2; got {text!r}"
                )
    else:
        pairs = [(str(n), float(f)) for n, f in text]
    names = [n for n, _ in pairs]
    if not pairs or len(set(names)) != len(names):
        raise ValueError(f"--split needs distinct split names, got {text!r}")
    for name, fraction in pairs:
        if not _SPLIT_NAME.match(name):
            raise ValueError(f"split name {name!r} must be letters, digits, - and _ (it names a folder)")
        if not 0 < fraction <= 1:
            raise ValueError(f"split {name}: the fraction must be in (0, 1], got {fraction}")
    if abs(sum(f for _, f in pairs) - 1) > 1e-6:
        raise ValueError(f"--split fractions must add up to 1, got {sum(f for _, f in pairs):g}")
    return tuple(pairs)


def split_of(key: str, splits: Sequence[tuple[str, float]], seed: int) -> str:
    """The split of the picture ``key``: a uniform draw in [0, 1) from sha256(seed, key)."""
    if len(splits) == 1:
        return splits[0][0]
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    draw = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for name, fraction in splits:
        edge += fraction
        if draw < edge:
            return name
    return splits[-1][0]


# --- image files ---------------------------------------------------------------------------------------
def image_folder(fmt: str, split: str) -> str:
    """Where a split's images go, relative to DIR."""
    return split if fmt == "coco" else f"{split}/images"


def image_name(key: str, suffix: str) -> str:
    """A file-safe, collision-free name for the picture ``key``: ``sub_dir_photo.1a2b3c4d.jpg``."""
    stem = key.rsplit(".", 1)[0] if "#" not in key else key
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[-120:] or "image"
    return f"{safe}.{hashlib.sha256(key.encode()).hexdigest()[:8]}{suffix}"


def save_picture(root: Path, folder: str, item: Item, picture: Picture) -> str:
    """Write ``picture`` into ``root / folder``; its path relative to ``root`` (posix)."""
    source_suffix = item.file.path.suffix.lower()
    if picture.as_stored and item.page is None and item.time is None:
        suffix, data = source_suffix, [item.file.path.read_bytes()]
    else:
        as_jpeg = item.time is not None or source_suffix in (".jpg", ".jpeg")
        suffix = ".jpg" if as_jpeg else ".png"
        buffer = io.BytesIO()
        if as_jpeg:
            picture.image.save(buffer, "JPEG", quality=JPEG_QUALITY)
        else:
            picture.image.save(buffer, "PNG")
        data = [buffer.getvalue()]
    target = root / folder / image_name(item.key, suffix)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(target, data)
    return target.relative_to(root).as_posix()


# --- annotation files -------------------------------------------------------------------------------
def kept(detections: Sequence[Detection], min_score: float | None) -> list[Detection]:
    """The detections at or above ``min_score`` (one without a score is kept: the model gave none)."""
    if min_score is None:
        return list(detections)
    return [d for d in detections if d.score is None or d.score >= min_score]


def write_dataset(
    root: Path,
    fmt: str,
    records: Sequence[Record],
    classes: Sequence[str],
    splits: Sequence[tuple[str, float]],
    min_score: float | None = None,
) -> dict[str, int]:
    """(Re)write every split's annotation files from ``records``; images per split. Image files in the
    split folders that no record names (a kill between writing an image and journalling it) are removed."""
    sv = supervision("Writing datasets")
    by_split: dict[str, list[Record]] = {name: [] for name, _ in splits}
    for r in records:
        by_split.setdefault(r.split, []).append(r)
    for split, rows in by_split.items():
        _remove_strays(root / image_folder(fmt, split), {Path(r.file).name for r in rows})
        _WRITERS[fmt](sv, root, split, rows, list(classes), min_score)
    if fmt == "yolo":
        _write_data_yaml(root, list(classes), [name for name, _ in splits])
    return {split: len(rows) for split, rows in by_split.items()}


def _remove_strays(folder: Path, names: set[str]) -> None:
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if (
            path.is_file()
            and path.name not in names
            and (path.suffix.lower() in _IMAGE_SUFFIXES or path.name.endswith(".tmp"))
        ):
            path.unlink()


_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})


def _detections(sv, record: Record, index: Mapping[str, int], min_score: float | None, masks: bool):
    """A record as ``supervision.Detections`` (class ids from ``index``); ``masks``: polygons as masks
    (boxes as filled rectangles where an image mixes both), else polygons in ``data["segmentation"]``."""
    found = [d for d in kept(record.detections, min_score) if d.label in index]
    if not found:
        return sv.Detections.empty()
    xyxy = np.array([d.xyxy for d in found], dtype=np.float32).reshape(-1, 4)
    class_id = np.array([index[d.label] for d in found], dtype=int)
    scores = [d.score for d in found]
    confidence = None if any(s is None for s in scores) else np.array(scores, dtype=np.float32)
    has_polygons = any(d.polygons for d in found)
    if masks:
        mask = np.stack([_mask(d, record.size) for d in found]) if has_polygons else None
        return sv.Detections(xyxy=xyxy, mask=mask, class_id=class_id, confidence=confidence)
    data: dict[str, Any] = {}
    if has_polygons:  # supervision's COCO writer passes these through as they are (no mask round trip)
        segmentation = np.empty(len(found), dtype=object)  # one list of parts per detection
        for i, d in enumerate(found):
            segmentation[i] = [list(p) for p in d.polygons]
        data[sv.config.COCO_RAW_SEGMENTATION] = segmentation
        data[sv.config.AREA_DATA_FIELD] = np.array([_area(d) for d in found], dtype=np.float64)
    return sv.Detections(xyxy=xyxy, class_id=class_id, confidence=confidence, data=data)


def _mask(d: Detection, size: tuple[int, int]) -> np.ndarray:
    """bool [height, width]: the detection's polygons (Florence2Result.masks: supervision's rule) or box."""
    if d.polygons:
        return object_masks([d.polygons], ImageSize.of(size))[0][0]
    mask = np.zeros((size[1], size[0]), dtype=bool)
    x1, y1, x2, y2 = (round(v) for v in d.xyxy)
    mask[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = True
    return mask


def _area(d: Detection) -> float:
    if not d.polygons:
        x1, y1, x2, y2 = d.xyxy
        return float((x2 - x1) * (y2 - y1))
    total = 0.0
    for p in d.polygons:
        xs, ys = np.asarray(p[0::2]), np.asarray(p[1::2])
        total += abs(float(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1)))) / 2
    return total


def _dataset(sv, root: Path, rows: Sequence[Record], classes: list[str], min_score, masks: bool):
    index = {name: i for i, name in enumerate(classes)}
    paths = [str(root / r.file) for r in rows]
    annotations = {p: _detections(sv, r, index, min_score, masks) for p, r in zip(paths, rows)}
    return sv.DetectionDataset(classes=classes, images=paths, annotations=annotations)


def _chunks(rows: Sequence[Record]) -> Iterator[Sequence[Record]]:
    for start in range(0, len(rows), CHUNK):
        yield rows[start : start + CHUNK]


def _write_coco(sv, root: Path, split: str, rows, classes, min_score) -> None:
    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (COCO_FILE + ".tmp")
    _dataset(sv, root, rows, classes, min_score, masks=False).as_coco(annotations_path=str(tmp))
    tmp.replace(folder / COCO_FILE)


def _write_yolo(sv, root: Path, split: str, rows, classes, min_score) -> None:
    labels = root / split / "labels"
    for chunk in _chunks(rows):
        _dataset(sv, root, chunk, classes, min_score, masks=True).as_yolo(
            annotations_directory_path=str(labels)
        )
    labels.mkdir(parents=True, exist_ok=True)


def _write_voc(sv, root: Path, split: str, rows, classes, min_score) -> None:
    annotations = root / split / "annotations"
    for chunk in _chunks(rows):
        _dataset(sv, root, chunk, classes, min_score, masks=True).as_pascal_voc(
            annotations_directory_path=str(annotations)
        )
    annotations.mkdir(parents=True, exist_ok=True)


def _write_data_yaml(root: Path, classes: list[str], splits: list[str]) -> None:
    yaml = require("yaml", EXTRA, "Writing YOLO datasets")
    data: dict[str, Any] = {}
    for name in splits:
        data.setdefault(_ULTRALYTICS_KEYS.get(name.lower(), name), f"{name}/images")
    data["nc"] = len(classes)
    data["names"] = classes
    tmp = root / (DATA_YAML + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    tmp.replace(root / DATA_YAML)


_WRITERS = {"coco": _write_coco, "yolo": _write_yolo, "voc": _write_voc}
