"""``florence2 run --scores / --min-score`` (issue #25), and the answer filters they use
(``tasks.confidence.drop_below`` / ``without_scores``).

The CLI runs the trained toy model (``models/florence2-tiny-shapes``), whose <OD> answers have several
objects with different scores; expectations come from ``Florence2.run(..., scores=True)``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from florence2_runtime import Florence2Result
from florence2_runtime.cli import main
from florence2_runtime.tasks.confidence import drop_below, without_scores

GEN = ["--num-beams", "1"]
GEN_KW = {"num_beams": 1}


# --- the answer filters -----------------------------------------------------------------------------------
def test_drop_below_keeps_objects_labels_and_scores_together():
    answer = {
        "bboxes": [[1, 2, 3, 4], [5, 6, 7, 8]],
        "bboxes_labels": ["a", "b"],
        "polygons": [[[1, 2, 3, 4, 5, 6]], [[2, 2, 3, 3, 4, 2]]],
        "polygons_labels": ["c", "d"],
        "scores": [0.1, 0.5, 0.3, 0.05],
    }
    assert drop_below(answer, 0.2) == {
        "bboxes": [[5, 6, 7, 8]],
        "bboxes_labels": ["b"],
        "polygons": [[[1, 2, 3, 4, 5, 6]]],
        "polygons_labels": ["c"],
        "scores": [0.5, 0.3],
    }
    quads = {"quad_boxes": [[0] * 8, [1] * 8], "labels": ["x", "y"], "scores": [0.9, None]}
    assert drop_below(quads, 0.0) == {"quad_boxes": [[0] * 8], "labels": ["x"], "scores": [0.9]}
    assert drop_below(answer, 0.0) == answer
    for untouched in (
        {"text": "a cat", "scores": 0.01},
        "a cat",
        {"bboxes": [[1, 2, 3, 4]], "labels": ["a"]},
    ):
        assert drop_below(untouched, 0.5) == untouched  # text answers, answers without scores


def test_without_scores_gives_the_plain_answer():
    assert without_scores({"text": "a cat", "scores": 0.4}) == "a cat"
    assert without_scores({"text": "", "scores": None}) == ""
    assert without_scores({"bboxes": [], "labels": [], "scores": []}) == {"bboxes": [], "labels": []}
    plain = {"bboxes": [[1, 2, 3, 4]], "labels": ["a"]}
    assert without_scores(plain) == plain and without_scores("x") == "x"


# --- the command -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shapes_image(tmp_path_factory):
    from florence2_export.toy import shapes

    sample = shapes.make_sample("<OD>", np.random.default_rng(3))
    path = tmp_path_factory.mktemp("cli-scores") / "shapes.png"
    sample.image.save(path)
    return path


@pytest.fixture(scope="module")
def scored_od(shapes_model, shapes_image) -> dict:
    answer = json.loads(json.dumps(shapes_model.run(shapes_image, "<OD>", scores=True, **GEN_KW)))["<OD>"]
    assert len(set(answer["scores"])) > 1, answer  # the threshold below must split the objects
    return answer


def _run(folder, image, *flags: str) -> list[str]:
    return ["run", str(folder), str(image), "--task", "<OD>", *GEN, *flags]


def test_scores_are_printed(shapes_onnx_folder, shapes_image, scored_od, capsys):
    assert main(_run(shapes_onnx_folder, shapes_image, "--scores")) == 0
    assert json.loads(capsys.readouterr().out) == {"<OD>": scored_od}
    assert main(_run(shapes_onnx_folder, shapes_image)) == 0  # without the flag: as before
    assert json.loads(capsys.readouterr().out) == {"<OD>": without_scores(scored_od)}


def test_min_score_filters_the_answer_and_the_drawing(
    shapes_onnx_folder, shapes_image, scored_od, tmp_path, capsys
):
    threshold = sorted(scored_od["scores"])[len(scored_od["scores"]) // 2]
    kept = drop_below(scored_od, threshold)
    assert 0 < len(kept["bboxes"]) < len(scored_od["bboxes"])
    drawn = tmp_path / "kept.png"
    flags = ["--min-score", str(threshold), "--draw", str(drawn)]
    assert main(_run(shapes_onnx_folder, shapes_image, *flags)) == 0  # --min-score implies --scores
    assert json.loads(capsys.readouterr().out) == {"<OD>": kept}
    image = Image.open(shapes_image).convert("RGB")
    everything = Florence2Result.from_answer("<OD>", scored_od, image.size)
    want = everything.above(threshold).draw(image)
    assert np.array_equal(np.asarray(Image.open(drawn).convert("RGB")), np.asarray(want))
    assert not np.array_equal(np.asarray(want), np.asarray(everything.draw(image)))

    assert main(_run(shapes_onnx_folder, shapes_image, "--min-score", str(threshold), "--typed")) == 0
    typed = Florence2Result.from_json(capsys.readouterr().out)
    assert typed.boxes == everything.above(threshold).boxes and typed.raw == {"<OD>": kept}


def test_several_tasks_with_scores(shapes_onnx_folder, shapes_model, shapes_image, scored_od, capsys):
    flags = ["--task", "<CAPTION>", "--min-score", "0"]
    assert main(_run(shapes_onnx_folder, shapes_image, *flags)) == 0
    record = json.loads(capsys.readouterr().out)
    want = json.loads(
        json.dumps(shapes_model.run_tasks(shapes_image, ["<OD>", "<CAPTION>"], scores=True, **GEN_KW))
    )
    assert record.keys() == want.keys()
    assert without_scores(record["<OD>"]) == without_scores(want["<OD>"])
    assert record["<OD>"]["scores"] == pytest.approx(scored_od["scores"], rel=1e-5)
    assert set(record["<CAPTION>"]) == {"text", "scores"}  # text answers keep their text and score
    assert record["<CAPTION>"]["text"] == want["<CAPTION>"]["text"]


@pytest.mark.parametrize("value", ["2", "-0.1", "abc", "nan", ""])
def test_bad_min_score_is_one_line_and_exit_2(shapes_onnx_folder, shapes_image, value, capsys):
    assert main(_run(shapes_onnx_folder, shapes_image, "--min-score", value)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--min-score" in err and "[0, 1]" in err, err
