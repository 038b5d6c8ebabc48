"""``florence2 eval`` (florence2_runtime.datasets.evaluation): the trained toy model measured on generated
shapes pictures with their true boxes; the figures are pycocotools' own on the saved predictions, torch-free."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("supervision", reason="the label extra: pip install -e '.[label]'")
pytest.importorskip("pycocotools", reason="the label extra: pip install -e '.[label]'")

from florence2_runtime.cli import main
from florence2_runtime.datasets import evaluate
from tests.helpers.label_sources import write_truth

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")

BLOCKED = ("torch", "transformers", "torchvision")
TORCH_FREE_MAIN = textwrap.dedent(
    """
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {blocked!r}:
                raise ImportError(f"{{name}} is blocked in this test")

    sys.meta_path.insert(0, Block())
    from florence2_runtime.cli import main
    code = main(sys.argv[1:])
    assert not [m for m in sys.modules if m.split(".")[0] in {blocked!r}]
    sys.exit(code)
    """
).format(blocked=BLOCKED)


@pytest.fixture(scope="module")
def truth(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval") / "valid"
    return write_truth(root, 16), root


def _pycocotools(truth_file, predictions_file) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO(str(truth_file))
    evaluator = COCOeval(gt, gt.loadRes(str(predictions_file)), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return [float(v) for v in evaluator.stats]


def test_eval_prints_what_pycocotools_computes_on_the_saved_predictions(shapes_onnx_folder, truth, tmp_path):
    """Run as the command, in a process where torch and transformers cannot be imported."""
    truth_file, images = truth
    saved = tmp_path / "pred.json"
    cmd = [sys.executable, "-c", TORCH_FREE_MAIN, "eval", str(shapes_onnx_folder), "--coco", str(truth_file)]
    proc = subprocess.run(
        [*cmd, "--images", str(images), "--save", str(saved), "--json", "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    stats = _pycocotools(truth_file, saved)
    assert (report["mAP"], report["mAP50"], report["mAP75"]) == (stats[0], stats[1], stats[2])
    assert report["mAP50"] > 0.3  # the toy finds shapes (its card: OD box recall 83 % at IoU 0.5)
    predictions = json.loads(saved.read_text())
    assert report["predictions"] == len(predictions) > 0
    assert set(predictions[0]) == {"image_id", "category_id", "bbox", "score"}
    names = [c["name"] for c in report["per_class"]]
    assert names == ["circle", "square", "triangle", "star"] and report["images"] == 16
    assert report["scored"] and len({p["score"] for p in predictions}) > 1  # ranked by the model's scores
    text = subprocess.run(
        [*cmd, "--images", str(images), "-q"], capture_output=True, text=True, timeout=300
    ).stdout
    assert f"mAP@0.5:0.95 {stats[0]:.4f}" in text and "circle" in text and "no scores" not in text


def test_per_class_figures_and_synonyms(shapes_model, truth, tmp_path):
    truth_file, images = truth
    plain = evaluate(shapes_model, coco=truth_file, images=images, progress="off")
    renamed = json.loads(truth_file.read_text())
    renamed["categories"][0]["name"] = "round"  # circle
    renamed_file = tmp_path / "renamed.json"
    renamed_file.write_text(json.dumps(renamed))
    unmapped = evaluate(shapes_model, coco=renamed_file, images=images, progress="off")
    assert unmapped.per_class[0].name == "round" and unmapped.per_class[0].predictions == 0
    assert unmapped.per_class[0].AP == 0.0 and unmapped.unmatched_labels["circle"] > 0
    mapped = evaluate(
        shapes_model, coco=renamed_file, images=images, label_map={"circle": "round"}, progress="off"
    )
    assert mapped.mAP == plain.mAP and mapped.per_class[0].AP == plain.per_class[0].AP
    assert "circle" not in mapped.unmatched_labels
    for c in plain.per_class:
        assert c.ground_truth > 0 and 0 <= c.AP <= c.AP50 <= 1 and 0 <= c.recall <= c.recall50 <= 1
    # the classes asked for by name
    asked = evaluate(shapes_model, coco=truth_file, images=images, open_vocabulary=True, progress="off")
    assert asked.task == "<OPEN_VOCABULARY_DETECTION>" and not asked.unmatched_labels


def test_yolo_ground_truth(shapes_model, truth, tmp_path):
    """The same truth as a YOLO split folder (written by supervision) gives the same figures, up to the
    rounding of YOLO's normalised coordinates."""
    import supervision as sv

    truth_file, images = truth
    dataset = sv.DetectionDataset.from_coco(str(images), str(truth_file))
    split = tmp_path / "valid"
    dataset.as_yolo(str(split / "images"), str(split / "labels"), str(tmp_path / "data.yaml"))
    from_coco = evaluate(shapes_model, coco=truth_file, images=images, progress="off")
    from_yolo = evaluate(shapes_model, yolo=split, progress="off")
    assert from_yolo.images == 16 and from_yolo.predictions == from_coco.predictions
    assert from_yolo.mAP50 == pytest.approx(from_coco.mAP50, abs=0.05)
    assert [c.ground_truth for c in from_yolo.per_class] == [c.ground_truth for c in from_coco.per_class]


def test_bad_ground_truth_is_one_line_and_exit_2(shapes_onnx_folder, truth, tmp_path, capsys):
    truth_file, images = truth
    base = ["eval", str(shapes_onnx_folder)]
    not_coco = tmp_path / "x.json"
    not_coco.write_text('{"images": []}')
    bad_map = tmp_path / "map.json"
    bad_map.write_text('{"circle": "no such class"}')
    for args, message in [
        (["--coco", str(truth_file)], "needs --images"),
        (["--coco", str(truth_file), "--images", str(tmp_path)], "are not in"),
        (["--coco", str(not_coco), "--images", str(images)], "not a COCO file"),
        (["--yolo", str(tmp_path)], "data.yaml"),
        ([], "--coco"),
        (["--coco", str(truth_file), "--images", str(images), "--map", str(bad_map)], "lacks"),
    ]:
        assert main(base + args) == 2, args
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
