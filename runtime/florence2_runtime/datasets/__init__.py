"""Datasets (the ``label`` extra): label a folder, list, PDF or video into a COCO / YOLO / VOC dataset
(:func:`label`, ``florence2 label``), and measure a model on a labelled dataset (:func:`evaluate`,
``florence2 eval``: mAP with pycocotools).

    from florence2_runtime.datasets import evaluate, label
    label(model, "photos/", "dataset/", classes="cat,dog", format="yolo", split="train=0.8,valid=0.2")
    print(evaluate(model, coco="dataset/valid/_annotations.coco.json", images="dataset/valid").format_text())

Modules: :mod:`.sources` (what to label), :mod:`.detections` (what to ask, answers -> labelled objects),
:mod:`.batching` (images through the model in batches: the one call below ``Florence2``'s public methods),
:mod:`.journal` (the output folder, resumable), :mod:`.writers` (splits, image files, supervision's
writers), :mod:`.progress`, :mod:`.labelling`, :mod:`.evaluation`, :mod:`.cli` (the two sub-commands).

The top layer, beside ``server``. May import every layer below it (errors, the package's public API,
inputs, tasks, model, cli's argparse types, engine's model options). supervision, pycocotools, tqdm,
pypdfium2 and av are imported when used, through ``errors.require`` (extra ``label``); importing this
package needs none of them.
"""

from __future__ import annotations

from .detections import LABEL_TASKS, Detection, LabelSpec
from .evaluation import ClassFigures, EvalReport, evaluate
from .labelling import LabelReport, label

__all__ = [
    "LABEL_TASKS",
    "ClassFigures",
    "Detection",
    "EvalReport",
    "LabelReport",
    "LabelSpec",
    "evaluate",
    "label",
]
