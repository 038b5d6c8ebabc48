"""Confidence scores (issue #25): where each object was written, which tokens wrote it, and its score.

The scores' inputs, the transition scores, are compared with transformers' in tests/parity; here, torch-free:
the post-processor's spans, the tokenizer's offsets, the one definition (tasks/confidence.py), merged
per-class answers and the typed results' converters. The answers of the trained toy model with scores, by
every route and against transformers' own token scores: tests/parity/test_confidence.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from florence2_runtime.tasks.batch import merge_class_answers
from florence2_runtime.tasks.confidence import object_score, with_scores
from florence2_runtime.tasks.postprocess import (
    ObjectSpans,
    _Stripped,
    parse_with_spans,
    post_process_generation,
)
from florence2_runtime.tasks.results import Florence2Result

SIZE = (640, 480)


# --- where objects were written ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    ["</s><s>a<pad>b</s>", "<</s>s>x", "<s<s>>", "<pa<pad>d>y</s", "plain", "", "<s></s><pad>" * 3],
)
def test_stripping_keeps_replace_order_and_maps_every_character_back(text):
    stripped = _Stripped(text, "<s>", "</s>", "<pad>")
    assert stripped.text == text.replace("<s>", "").replace("</s>", "").replace("<pad>", "")
    for i, ch in enumerate(stripped.text):
        start, end = stripped.span(i, i + 1)
        assert (end - start, text[start]) == (1, ch)


def _read(text: str, spans: ObjectSpans) -> tuple[str, list[str]]:
    return text[slice(*spans.what)], [text[slice(*s)] for s in spans.where]


def test_box_spans_are_the_label_and_the_four_location_tokens():
    boxes = [
        "<loc_1><loc_2><loc_30><loc_40>",
        "<loc_5><loc_6><loc_70><loc_80>",
        "<loc_9><loc_9><loc_99><loc_99>",
    ]
    text = f"</s><s>red car{boxes[0]}{boxes[1]}dog{boxes[2]}</s>"
    answer, spans = parse_with_spans(text, "description_with_bboxes", SIZE)
    assert answer == post_process_generation(text, "<OD>", SIZE)["<OD>"]
    assert [_read(text, s) for s in spans] == [
        ("red car", [boxes[0]]),
        ("red car", [boxes[1]]),  # boxes of one phrase share its label
        ("dog", [boxes[2]]),
    ]


def test_polygon_ocr_and_text_spans():
    poly = "<loc_1><loc_2><loc_3><loc_4><loc_5><loc_6>"
    text = f"</s><s>ball<poly>{poly}<sep>{poly}</poly></s>"
    answer, spans = parse_with_spans(text, "description_with_polygons", SIZE)
    assert answer["labels"] == ["ball"] and len(spans) == 1
    assert _read(text, spans[0]) == ("ball", [f"{poly}<sep>{poly}"])

    quad = "".join(f"<loc_{i}>" for i in range(8))
    text = f"</s><s>HELLO{quad}WORLD{quad}</s>"
    answer, spans = parse_with_spans(text, "ocr", SIZE)
    assert answer["labels"] == ["HELLO", "WORLD"]
    assert [_read(text, s) for s in spans] == [("HELLO", [quad]), ("WORLD", [quad])]

    text = "</s><s>  a red ball </s>"
    answer, spans = parse_with_spans(text, "pure_text", None)
    assert answer == "a red ball" and _read(text, spans[0]) == ("a red ball", [])


def test_grounding_drops_banned_phrases_with_their_spans():
    box = "<loc_1><loc_2><loc_3><loc_4>"
    text = f"</s><s>it{box}a ball{box}</s>"
    answer, spans = parse_with_spans(text, "phrase_grounding", SIZE)
    assert answer["labels"] == ["a ball"] and [_read(text, s)[0] for s in spans] == ["a ball"]


# --- which tokens wrote them --------------------------------------------------------------------------------
def test_offsets_cover_the_text_token_by_token(tiny_model):
    tok = tiny_model.tokenizer
    ids = tok.backend.encode("a red circle<loc_5><loc_17> and TREE", add_special_tokens=False).ids
    text, offsets = tok.decode_with_offsets([2, 0, *ids, 2])
    assert text == tok.decode([2, 0, *ids, 2])
    assert offsets[0] == 0 and offsets[-1] == len(text) and (np.diff(offsets) >= 0).all()
    pieces = [text[offsets[k] : offsets[k + 1]] for k in range(len(offsets) - 1)]
    assert pieces[:2] == ["</s>", "<s>"] and pieces[-1] == "</s>" and "<loc_5>" in pieces


def test_offsets_of_characters_split_over_tokens(tiny_model):
    tok = tiny_model.tokenizer
    ids = tok.backend.encode("é 東京 ok", add_special_tokens=False).ids
    text, offsets = tok.decode_with_offsets(ids)
    assert text == tok.decode(ids) and offsets[-1] == len(text) and (np.diff(offsets) >= 0).all()
    for k in range(len(ids)):  # every token's characters are what decoding up to it adds
        assert tok.decode(ids[: k + 1]).startswith(text[: offsets[k + 1]])


# --- the definition ------------------------------------------------------------------------------------------
def test_score_is_the_geometric_mean_of_its_two_parts():
    text = "</s>cat<loc_1><loc_2>"
    offsets = np.array([0, 4, 5, 7, 14, 21])  # tokens: </s> | c | at | <loc_1> | <loc_2>
    logprobs = np.array([np.nan, -0.1, -0.3, -2.0, -1.0], dtype=np.float32)
    what = math.exp((-0.1 - 0.3) / 2)
    where = math.exp((-2.0 - 1.0) / 2)
    both = ObjectSpans((4, 7), ((7, 21),))
    assert object_score(both, offsets, logprobs) == pytest.approx(math.sqrt(what * where), rel=1e-6)
    assert object_score(ObjectSpans((4, 7)), offsets, logprobs) == pytest.approx(what, rel=1e-6)
    assert object_score(ObjectSpans((0, 0), ((7, 21),)), offsets, logprobs) == pytest.approx(where, rel=1e-6)
    assert object_score(ObjectSpans((0, 0)), offsets, logprobs) is None
    assert object_score(ObjectSpans((0, 4)), offsets, logprobs) is None  # the start token has no score
    assert text[4:7] == "cat"


def test_with_scores_shapes():
    spans = [ObjectSpans((0, 1))]
    offsets, logprobs = np.array([0, 1]), np.array([-0.5], dtype=np.float32)
    assert with_scores("cat", spans, offsets, logprobs) == {
        "text": "cat",
        "scores": pytest.approx(math.exp(-0.5)),
    }
    boxed = with_scores({"bboxes": [[1, 2, 3, 4]], "labels": ["c"]}, spans, offsets, logprobs)
    assert boxed["scores"] == [pytest.approx(math.exp(-0.5))] and boxed["labels"] == ["c"]


# --- merging per-class answers --------------------------------------------------------------------------
def test_merge_class_answers_orders_scores_bboxes_then_polygons():
    task = "<OPEN_VOCABULARY_DETECTION>"
    a = {
        task: {
            "bboxes": [[1, 1, 2, 2]],
            "bboxes_labels": ["x"],
            "polygons": [],
            "polygons_labels": [],
            "scores": [0.1],
        }
    }
    b = {
        task: {
            "bboxes": [],
            "bboxes_labels": [],
            "polygons": [[[1, 1, 2, 2, 3, 1]]],
            "polygons_labels": ["y"],
            "scores": [0.2],
        }
    }
    c = {
        task: {
            "bboxes": [[3, 3, 4, 4]],
            "bboxes_labels": ["z"],
            "polygons": [],
            "polygons_labels": [],
            "scores": [0.3],
        }
    }
    merged = merge_class_answers(task, ["a", "b", "c"], [a, b, c])[task]
    assert merged["bboxes_labels"] == ["a", "c"] and merged["polygons_labels"] == ["b"]
    assert merged["scores"] == [0.1, 0.3, 0.2]
    plain = merge_class_answers(task, ["a"], [{task: {k: v for k, v in a[task].items() if k != "scores"}}])
    assert "scores" not in plain[task]


# --- typed results and their converters ------------------------------------------------------------------------
def _scored_result() -> Florence2Result:
    answer = {
        "bboxes": [[10, 10, 50, 40], [60, 20, 90, 70]],
        "labels": ["car", "dog"],
        "scores": [0.8, 0.3],
    }
    return Florence2Result.from_dict({"<OD>": answer}, SIZE)


def test_typed_result_carries_scores_through_json_coco_and_filtering():
    result = _scored_result()
    assert result.scores == (0.8, 0.3) and [b.score for b in result.boxes] == [0.8, 0.3]
    assert Florence2Result.from_json(result.to_json()) == result
    coco = result.to_coco()
    assert [a["score"] for a in coco["annotations"]] == [0.8, 0.3]
    kept = result.above(0.5)
    assert [b.label for b in kept.boxes] == ["car"] and kept.raw == result.raw
    with pytest.raises(ValueError, match="no scores"):
        Florence2Result.from_dict({"<OD>": {"bboxes": [[1, 2, 3, 4]], "labels": ["a"]}}, SIZE).above(0.5)
    with pytest.raises(ValueError, match="min_score"):
        result.above(2)
    text = Florence2Result.from_dict({"<CAPTION>": {"text": "a car", "scores": 0.9}}, SIZE)
    assert (text.text, text.text_score) == ("a car", 0.9)
    assert (
        "score"
        not in Florence2Result.from_dict(
            {"<OD>": {"bboxes": [[1, 2, 3, 4]], "labels": ["a"]}}, SIZE
        ).to_coco()["annotations"][0]
    )


def test_bad_scores_are_refused():
    with pytest.raises(ValueError, match="'scores' must be a list of 1"):
        Florence2Result.from_dict({"<OD>": {"bboxes": [[1, 2, 3, 4]], "labels": ["a"], "scores": []}}, SIZE)
    with pytest.raises(ValueError, match="score must be a number in"):
        Florence2Result.from_dict(
            {"<OD>": {"bboxes": [[1, 2, 3, 4]], "labels": ["a"], "scores": [1.5]}}, SIZE
        )


def test_supervision_confidence_and_drawn_scores():
    pytest.importorskip("supervision")
    result = _scored_result()
    detections = result.to_supervision()
    np.testing.assert_allclose(detections.confidence, [0.8, 0.3])
    unscored = Florence2Result.from_dict({"<OD>": {"bboxes": [[1, 2, 3, 4]], "labels": ["a"]}}, SIZE)
    assert unscored.to_supervision().confidence is None
    from PIL import Image

    from florence2_runtime.tasks.drawing import DrawStyle, _caption

    assert _caption("car", 0.8, DrawStyle()) == "car 0.80"
    assert _caption("car", 0.8, DrawStyle(scores=False)) == "car"
    assert result.draw(Image.new("RGB", SIZE)).size == SIZE
