"""``evaluate``: a model's detections on a labelled dataset, scored with pycocotools (torch-free).

    report = evaluate(model, coco="valid/_annotations.coco.json", images="valid/")  # or yolo="valid/"
    report.mAP, report.mAP50, report.per_class[0].AP; print(report.format_text())

The ground truth is a COCO file with its images folder, or a YOLO split folder (``images/``, ``labels/``
and a ``data.yaml`` in it or its parent, read with supervision). Every image goes through the model in
batches (:mod:`.batching`); a detection's label is matched to a class by exact name, after the optional
``label_map`` (model label -> dataset class, for synonyms); labels that match no class are dropped and
counted. ``open_vocabulary``: the model is asked for each class by name instead
(``<OPEN_VOCABULARY_DETECTION>`` or ``task``), so every detection is labelled by its class.

The figures are COCOeval's for boxes: mAP@0.5:0.95, mAP@0.5 and mAP@0.75, and per class AP, AP50 and
recall (the mean over IoU 0.5:0.95 and at 0.5, up to 100 detections an image). COCO ranks detections by
score: each detection's confidence (``run(..., scores=True)``), so AP is that of a ranked list; a
detection without one would count 1.0 (``scored`` says whether any had a score).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import require
from .batching import detect_batch
from .detections import DEFAULT_CLASSES_TASK, DEFAULT_TASK, LabelSpec
from .progress import Progress
from .sources import Picture, read_image
from .writers import supervision

__all__ = ["ClassFigures", "EvalReport", "evaluate", "load_ground_truth"]

EXTRA = "label"
DEFAULT_BATCH = 8


@dataclass(frozen=True)
class ClassFigures:
    """One class: ground-truth boxes, predictions, AP (0.5:0.95), AP50, recall (0.5:0.95) and recall50;
    None where the class has no ground truth."""

    name: str
    ground_truth: int
    predictions: int
    AP: float | None
    AP50: float | None
    recall: float | None
    recall50: float | None


@dataclass(frozen=True)
class EvalReport:
    """The figures of one evaluation (COCOeval, boxes)."""

    images: int
    predictions: int
    mAP: float
    mAP50: float
    mAP75: float
    per_class: tuple[ClassFigures, ...]
    unmatched_labels: Mapping[str, int] = field(default_factory=dict)
    failed: Mapping[str, str] = field(default_factory=dict)  # image file name -> why it was not run
    scored: bool = False  # the model gave scores (else every detection counted 1.0)
    task: str = DEFAULT_TASK

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    def format_text(self) -> str:
        lines = [
            f"{self.images} images, {self.predictions} detections ({self.task}"
            + ("" if self.scored else "; no scores: each counted 1.0")
            + ")",
            f"mAP@0.5:0.95 {self.mAP:.4f}   mAP@0.5 {self.mAP50:.4f}   mAP@0.75 {self.mAP75:.4f}",
            "",
            f"{'class':<24} {'truth':>6} {'found':>6} {'AP':>7} {'AP50':>7} {'recall':>7} {'rec50':>7}",
        ]
        for c in self.per_class:
            cells = [_cell(v) for v in (c.AP, c.AP50, c.recall, c.recall50)]
            lines.append(f"{c.name[:24]:<24} {c.ground_truth:>6} {c.predictions:>6} " + " ".join(cells))
        if self.unmatched_labels:
            top = ", ".join(
                f"{k!r} {v}" for k, v in sorted(self.unmatched_labels.items(), key=lambda kv: -kv[1])[:10]
            )
            lines.append(f"labels matching no class (dropped; --map FILE maps synonyms): {top}")
        if self.failed:
            lines.append(
                f"{len(self.failed)} images failed: "
                + "; ".join(f"{k}: {v}" for k, v in list(self.failed.items())[:5])
            )
        return "\n".join(lines)


def _cell(v: float | None) -> str:
    return f"{v:>7.4f}" if v is not None else f"{'-':>7}"


# --- ground truth --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroundTruth:
    """A COCO ground-truth dict (ids, areas and iscrowd filled in) and each image id's file."""

    coco: dict
    files: Mapping[int, Path]

    @property
    def classes(self) -> dict[str, int]:
        return {c["name"]: c["id"] for c in self.coco["categories"]}


def load_ground_truth(
    coco: str | os.PathLike | None = None,
    images: str | os.PathLike | None = None,
    yolo: str | os.PathLike | None = None,
    data_yaml: str | os.PathLike | None = None,
) -> GroundTruth:
    """A COCO file and its images folder, or a YOLO split folder; ValueError names what is wrong."""
    if (coco is None) == (yolo is None):
        raise ValueError("give the ground truth as --coco ANNOTATIONS.json --images DIR, or as --yolo DIR")
    if coco is not None:
        if images is None:
            raise ValueError("--coco needs --images: the folder holding the images it lists")
        return _from_coco(Path(coco), Path(images))
    if images is not None:
        raise ValueError("--images goes with --coco; a YOLO split folder holds its images in images/")
    assert yolo is not None
    return _from_yolo(Path(yolo), None if data_yaml is None else Path(data_yaml))


def _from_coco(path: Path, images: Path) -> GroundTruth:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the COCO file ({e})") from None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise ValueError(f"{path}: not a COCO file (needs lists 'images', 'annotations' and 'categories')")
    if not images.is_dir():
        raise ValueError(f"--images {images} is not a folder")
    data = copy.deepcopy(data)
    names = [c.get("name") for c in data["categories"]]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: two categories share a name; classes are matched by name")
    for i, ann in enumerate(data["annotations"], start=1):
        ann.setdefault("id", i)
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
    files = {img["id"]: images / img["file_name"] for img in data["images"]}
    missing = sorted(str(p.name) for p in files.values() if not p.is_file())
    if missing:
        raise ValueError(f"{len(missing)} images of {path} are not in {images}: {', '.join(missing[:5])}")
    return GroundTruth(data, files)


def _from_yolo(folder: Path, data_yaml: Path | None) -> GroundTruth:
    sv = supervision("Reading YOLO datasets")
    if data_yaml is None:
        candidates = [folder / "data.yaml", folder.parent / "data.yaml"]
        data_yaml = next((c for c in candidates if c.is_file()), None)
        if data_yaml is None:
            raise ValueError(f"no data.yaml in {folder} or its parent (--data-yaml names it)")
    for sub in ("images", "labels"):
        if not (folder / sub).is_dir():
            raise ValueError(
                f"--yolo {folder}: a YOLO split folder holds images/ and labels/; {sub}/ is missing"
            )
    dataset = sv.DetectionDataset.from_yolo(
        images_directory_path=str(folder / "images"),
        annotations_directory_path=str(folder / "labels"),
        data_yaml_path=str(data_yaml),
    )
    coco: dict[str, Any] = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(dataset.classes)],
    }
    files: dict[int, Path] = {}
    for image_id, path in enumerate(sorted(dataset.image_paths), start=1):
        with Image.open(path) as im:
            width, height = im.size
        coco["images"].append(
            {"id": image_id, "file_name": Path(path).name, "width": width, "height": height}
        )
        files[image_id] = Path(path)
        found = dataset.annotations[path]
        for xyxy, class_id in zip(found.xyxy, found.class_id if found.class_id is not None else []):
            x1, y1, x2, y2 = (float(v) for v in xyxy)
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": int(class_id) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    return GroundTruth(coco, files)


def read_label_map(path: str | os.PathLike | None) -> dict[str, str]:
    """A JSON object ``{"model label": "dataset class", ...}``; ValueError if it is not one."""
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"--map {path}: cannot read it as JSON ({e})") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ValueError(f'--map {path}: must be a JSON object of names, e.g. {{"automobile": "car"}}')
    return data


# --- evaluation --------------------------------------------------------------------------------------
def evaluate(
    model,
    *,
    coco: str | os.PathLike | None = None,
    images: str | os.PathLike | None = None,
    yolo: str | os.PathLike | None = None,
    data_yaml: str | os.PathLike | None = None,
    task: str | None = None,
    open_vocabulary: bool = False,
    label_map: Mapping[str, str] | None = None,
    batch_size: int = DEFAULT_BATCH,
    save: str | os.PathLike | None = None,
    progress: str | None = None,
    model_options: Mapping[str, Any] | None = None,
    **generation: Any,
) -> EvalReport:
    """Run ``model`` (a ``Florence2``, or a name loaded with ``model_options``) on the dataset's images and
    score its boxes; ``save``: write the predictions as a COCO results file (what pycocotools' ``loadRes``
    reads). Generation keywords as ``run``."""
    truth = load_ground_truth(coco, images, yolo, data_yaml)
    classes = truth.classes
    mapping = dict(label_map or {})
    unknown = sorted(set(mapping.values()) - set(classes))
    if unknown:
        raise ValueError(f"the label map names classes the dataset lacks: {', '.join(unknown[:5])}")
    if open_vocabulary:
        spec = LabelSpec.make(task or DEFAULT_CLASSES_TASK, list(classes))
    else:
        spec = LabelSpec.make(task or DEFAULT_TASK)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(model, (str, os.PathLike)):
        from ..model import Florence2

        model = Florence2.from_pretrained(os.fspath(model), **dict(model_options or {}))
    results, unmatched, failed, scored = _predict(
        model, spec, truth, classes, mapping, batch_size, progress, generation
    )
    if save is not None:
        Path(save).write_text(json.dumps(results) + "\n", encoding="utf-8")
    return _score(truth, results, unmatched, failed, scored, spec.task)


def _predict(model, spec, truth: GroundTruth, classes, mapping, batch_size, progress, generation):
    """COCO results (one dict per kept detection), unmatched label counts, failed images, any scores."""
    results: list[dict] = []
    unmatched: Counter[str] = Counter()
    failed: dict[str, str] = {}
    scored = False
    ids = list(truth.files)
    meter = Progress(len(ids), what="eval", mode=progress)
    try:
        for start in range(0, len(ids), batch_size):
            batch = ids[start : start + batch_size]
            pictures = [(i, read_image(truth.files[i])) for i in batch]
            good = [(i, p) for i, p in pictures if isinstance(p, Picture)]
            for i, p in pictures:
                if isinstance(p, Exception):
                    failed[truth.files[i].name] = str(p)
            found = detect_batch(model, spec, [p.image for _, p in good], generation) if good else []
            for (image_id, _), detections in zip(good, found):
                if isinstance(detections, Exception):
                    failed[truth.files[image_id].name] = f"{type(detections).__name__}: {detections}"
                    continue
                for d in detections:
                    name = mapping.get(d.label, d.label)
                    if name not in classes:
                        unmatched[d.label] += 1
                        continue
                    x1, y1, x2, y2 = d.xyxy
                    scored = scored or d.score is not None
                    results.append(
                        {
                            "image_id": image_id,
                            "category_id": classes[name],
                            "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": 1.0 if d.score is None else d.score,
                        }
                    )
            meter.update(len(batch), len(batch) - len(good))
    finally:
        meter.close()
    return results, dict(unmatched), failed, scored


def coco_eval(ground_truth: Mapping[str, Any], results: Sequence[Mapping[str, Any]]):
    """pycocotools' COCOeval for boxes, evaluated, accumulated and summarised (its printing swallowed)."""
    coco_mod = require("pycocotools.coco", EXTRA, "Scoring detections")
    cocoeval_mod = require("pycocotools.cocoeval", EXTRA, "Scoring detections")
    with contextlib.redirect_stdout(io.StringIO()):
        gt = coco_mod.COCO()
        gt.dataset = copy.deepcopy(dict(ground_truth))
        gt.createIndex()
        if results:
            dt = gt.loadRes([dict(r) for r in results])
        else:  # loadRes refuses an empty list: no detections at all
            dt = coco_mod.COCO()
            dt.dataset = {
                "images": gt.dataset["images"],
                "categories": gt.dataset["categories"],
                "annotations": [],
            }
            dt.createIndex()
        evaluator = cocoeval_mod.COCOeval(gt, dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def _score(truth: GroundTruth, results, unmatched, failed, scored, task) -> EvalReport:
    evaluator = coco_eval(truth.coco, results)
    precision = evaluator.eval["precision"]  # [IoU thresholds, recall points, classes, areas, max dets]
    recall = evaluator.eval["recall"]  # [IoU thresholds, classes, areas, max dets]
    truth_counts = Counter(a["category_id"] for a in truth.coco["annotations"] if not a.get("iscrowd"))
    found_counts = Counter(r["category_id"] for r in results)
    per_class = []
    for k, category_id in enumerate(evaluator.params.catIds):
        name = next(c["name"] for c in truth.coco["categories"] if c["id"] == category_id)
        per_class.append(
            ClassFigures(
                name,
                truth_counts[category_id],
                found_counts[category_id],
                _mean(precision[:, :, k, 0, -1]),
                _mean(precision[0, :, k, 0, -1]),
                _mean(recall[:, k, 0, -1]),
                _mean(recall[0, k, 0, -1]),
            )
        )
    stats = evaluator.stats
    return EvalReport(
        images=len(truth.files),
        predictions=len(results),
        mAP=float(stats[0]),
        mAP50=float(stats[1]),
        mAP75=float(stats[2]),
        per_class=tuple(per_class),
        unmatched_labels=unmatched,
        failed=failed,
        scored=scored,
        task=task,
    )


def _mean(values: np.ndarray) -> float | None:
    """The mean of COCOeval's entries, -1 (no ground truth) left out; None if all are -1."""
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else None
