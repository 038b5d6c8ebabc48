"""Typed results (``Florence2Result``): built from real runtime outputs and from fuzzed post-processed dicts;
JSON round trip, COCO, supervision parity with ``Detections.from_vlm``, drawing; region inputs."""

from __future__ import annotations

import json
import random
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image, ImageChops

from florence2_runtime import BoundingBox, Florence2Result, Polygon, QuadBox
from florence2_runtime.tasks.postprocess import post_process_generation
from florence2_runtime.tasks.prompts import (
    TASKS,
    build_task_text,
    build_task_texts,
    check_task_input,
    region_bins,
)
from florence2_runtime.tasks.results import TASK_KINDS
from tests.helpers.images import make_test_image
from tests.helpers.results import assert_matches_dict, fuzzed_outputs
from tests.helpers.tasks import TASK_INPUTS

ALL_TASKS = list(TASKS)


# --- the dicts: fuzzed answers and the tiny model's own ------------------------------------------------
@pytest.fixture(scope="module")
def fuzzed():
    """Random answers of every task through the runtime's post-processing (equal to transformers':
    tests/parity/test_postprocess.py, which also reads transformers' own dicts as results)."""
    return fuzzed_outputs(post_process_generation)


@pytest.fixture(scope="module")
def real(tiny_model):
    """(task, run dict, size, predict result) for every task on the tiny RANDOM-weight model."""
    image = make_test_image(211, 97, seed=3)
    out = []
    for task in ALL_TASKS:
        gen = dict(max_new_tokens=24, num_beams=1)
        d = tiny_model.run(image, task, **TASK_INPUTS[task], **gen)
        out.append((task, d, image.size, tiny_model.predict(image, task, **TASK_INPUTS[task], **gen)))
    return out


# --- the typed fields say what the dict says ------------------------------------------------------------
def test_every_task_has_a_kind():
    assert set(TASK_KINDS) == set(TASKS)


def test_real_runtime_outputs_all_tasks(real):
    for _task, d, size, predicted in real:
        assert predicted.raw == d  # predict() is run() typed
        assert_matches_dict(Florence2Result.from_dict(d, size), d, size)
        assert Florence2Result.from_dict(d, size) == predicted


def test_fuzzed_dicts_all_tasks(fuzzed):
    kinds_with_objects = set()
    for task, d, size in fuzzed:
        result = Florence2Result.from_dict(d, size)
        assert_matches_dict(result, d, size)
        if len(result):
            kinds_with_objects.add(TASK_KINDS[task])
    assert kinds_with_objects == set(TASK_KINDS.values()) - {"text"}  # the fuzzing reached every shape


@pytest.mark.parametrize(
    "bad",
    [
        {"<OD>": {"bboxes": [[1, 2, 3, 4]], "labels": []}},
        {"<OD>": {"bboxes": [[1, 2, 3]], "labels": ["a"]}},
        {"<OD>": "text"},
        {"<OCR_WITH_REGION>": {"quad_boxes": [[1, 2, 3, 4]], "labels": ["a"]}},
        {"<REGION_TO_SEGMENTATION>": {"polygons": [[[1, 2, 3]]], "labels": [""]}},
        {"<OPEN_VOCABULARY_DETECTION>": {"bboxes": [], "bboxes_labels": []}},
        {"<CAPTION>": {"not": "text"}},
        {"<OD>": {"bboxes": [], "labels": []}, "<CAPTION>": "two tasks"},
    ],
)
def test_malformed_dicts_raise_value_error(bad):
    with pytest.raises(ValueError):
        Florence2Result.from_dict(bad, (10, 10))


@pytest.mark.parametrize("size", [(0, 5), (5,), (1.5, 2), None, (True, 3)])
def test_bad_image_size(size):
    with pytest.raises(ValueError, match="image_size"):
        Florence2Result.from_dict({"<CAPTION>": "x"}, size)


def test_unknown_task_is_text_like_post_processing():
    result = Florence2Result.from_dict({"<SOMETHING>": "hello"}, (4, 4))
    assert result.text == "hello" and result.kind == "text"


# --- JSON ------------------------------------------------------------------------------------------------
def test_json_round_trip(fuzzed, real):
    for _task, d, size, *_ in [*fuzzed, *real]:
        result = Florence2Result.from_dict(d, size)
        text = result.to_json()
        assert Florence2Result.from_json(text) == result
        assert Florence2Result.from_json(json.loads(text)) == result
        assert json.loads(text)["raw"] == d


def test_json_of_hand_built_result_with_tuples_and_numpy():
    d = {"<OD>": {"bboxes": [(np.int64(1), 2, 3, 4)], "labels": ("cat",)}}
    result = Florence2Result.from_dict(d, (np.int32(10), 10))
    assert Florence2Result.from_json(result.to_json()) == result
    assert result.boxes == (BoundingBox((1, 2, 3, 4), "cat"),)


@pytest.mark.parametrize(
    "bad", ['{"task": "<OD>"}', "[1, 2]", '{"task": "<OD>", "image_size": [3, 3], "boxes": [{}]}']
)
def test_from_json_rejects_other_json(bad):
    with pytest.raises(ValueError):
        Florence2Result.from_json(bad)


# --- COCO ------------------------------------------------------------------------------------------------
def test_coco_annotations(fuzzed):
    for _task, d, size in fuzzed:
        result = Florence2Result.from_dict(d, size)
        coco = result.to_coco(image_id=7, first_annotation_id=100)
        assert coco["images"] == [{"id": 7, "width": size[0], "height": size[1]}]
        usable_polygons = [g for g in result.polygons if any(len(p) >= 6 for p in g.parts)]
        objects = [*result.boxes, *result.quad_boxes, *usable_polygons]
        anns = coco["annotations"]
        assert len(anns) == len(objects)
        names = {c["id"]: c["name"] for c in coco["categories"]}
        assert sorted(names.values()) == sorted({o.label for o in objects})
        for i, (ann, obj) in enumerate(zip(anns, objects)):
            assert ann["id"] == 100 + i and ann["image_id"] == 7 and names[ann["category_id"]] == obj.label
            x, y, w, h = ann["bbox"]
            assert w >= 0 and h >= 0 and ann["area"] >= 0
            xs = [p for s in ann.get("segmentation", [[*obj.xyxy]]) for p in s[0::2]]
            ys = [p for s in ann.get("segmentation", [[*obj.xyxy]]) for p in s[1::2]]
            assert (x, y, x + w, y + h) == (min(xs), min(ys), max(xs), max(ys))
            if isinstance(obj, BoundingBox):
                assert "segmentation" not in ann and ann["area"] == w * h
            else:
                assert all(len(s) % 2 == 0 and len(s) >= 6 for s in ann["segmentation"])
        json.dumps(coco)


def test_coco_category_ids_and_areas():
    result = Florence2Result(
        task="<REFERRING_EXPRESSION_SEGMENTATION>",
        image_size=(20, 20),
        polygons=(Polygon(((0, 0, 10, 0, 10, 10, 0, 10), (12, 12, 14, 12)), "square"),),
    )
    coco = result.to_coco(image_id=1, category_ids={"square": 5, "unused": 9})
    (ann,) = coco["annotations"]
    box = Florence2Result(task="<OD>", image_size=(20, 20), boxes=(BoundingBox((2, 3, 12, 13), "b"),))
    assert ann["category_id"] == 5 and ann["segmentation"] == [[0, 0, 10, 0, 10, 10, 0, 10]]
    assert ann["area"] == box.to_coco()["annotations"][0]["area"] == 100.0  # 10 x 10 both ways
    assert coco["categories"] == [{"id": 5, "name": "square"}, {"id": 9, "name": "unused"}]
    with pytest.raises(ValueError, match="square"):
        result.to_coco(category_ids={"other": 1})


# --- supervision ---------------------------------------------------------------------------------------
def _from_vlm_or_none(sv, d, size):
    try:
        return sv.Detections.from_vlm(sv.VLM.FLORENCE_2, d, resolution_wh=size)
    except ValueError:  # tasks supervision does not read, region answers without a box
        return None


def test_to_supervision_equals_from_vlm(fuzzed, real):
    sv = pytest.importorskip(
        "supervision", reason="supervision is optional: pip install 'florence2-onnx[supervision]'"
    )
    compared = set()
    for task, d, size, *_ in [*fuzzed, *real]:
        ours = Florence2Result.from_dict(d, size).to_supervision()
        theirs = _from_vlm_or_none(sv, d, size)
        if theirs is None:
            assert len(ours) == 0 and list(ours.data["class_name"]) == []
            continue
        assert ours == theirs, (task, d)
        assert ours.data.keys() == theirs.data.keys()
        compared.add(task)
        if len(theirs):
            compared.add((task, "non-empty"))
    readable = {
        "<OD>",
        "<CAPTION_TO_PHRASE_GROUNDING>",
        "<DENSE_REGION_CAPTION>",
        "<REGION_PROPOSAL>",
        "<OCR_WITH_REGION>",
        "<REFERRING_EXPRESSION_SEGMENTATION>",
        "<REGION_TO_SEGMENTATION>",
        "<OPEN_VOCABULARY_DETECTION>",
        "<REGION_TO_CATEGORY>",
        "<REGION_TO_DESCRIPTION>",
    }
    assert {t for t in compared if isinstance(t, str)} == readable
    assert {t for t, *_ in (c for c in compared if isinstance(c, tuple))} == readable


def test_to_supervision_without_supervision_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_supervision(name, *args, **kwargs):
        if name.split(".")[0] == "supervision":
            raise ImportError("No module named 'supervision'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_supervision)
    import sys

    monkeypatch.delitem(sys.modules, "supervision", raising=False)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[supervision\]'"):
        Florence2Result.from_dict({"<OD>": {"bboxes": [], "labels": []}}, (4, 4)).to_supervision()


# --- drawing ---------------------------------------------------------------------------------------------
def _showcase(size) -> Florence2Result:
    w, h = size
    return Florence2Result(
        task="<OPEN_VOCABULARY_DETECTION>",
        image_size=size,
        boxes=(
            BoundingBox((w * 0.1, h * 0.1, w * 0.5, h * 0.6), "a cat"),
            BoundingBox((w * 0.9, h * 0.9, w * 0.6, h * 0.4), ""),
        ),  # corners swapped: still drawn
        quad_boxes=(
            QuadBox((w * 0.2, h * 0.7, w * 0.8, h * 0.7, w * 0.8, h * 0.9, w * 0.2, h * 0.9), "TEXT"),
        ),
        polygons=(
            Polygon(((w * 0.6, h * 0.1, w * 0.9, h * 0.1, w * 0.75, h * 0.35), (1, 1, 2, 2)), "\u6c34 water"),
        ),
    )


@pytest.mark.parametrize("size", [(1, 1), (9, 5), (211, 97), (4000, 3000)])
def test_draw_changes_pixels_and_keeps_size(size):
    image = make_test_image(*size, seed=1) if max(size) < 1000 else Image.new("RGB", size, (40, 90, 200))
    before = image.tobytes()
    drawn = _showcase(size).draw(image)
    assert drawn.size == image.size and drawn.mode == "RGB"
    assert ImageChops.difference(drawn, image).getbbox() is not None
    assert image.tobytes() == before  # drawn on a copy


def test_draw_scales_to_another_image_size_and_takes_paths(tmp_path):
    result = _showcase((400, 300))
    path = tmp_path / "small.png"
    make_test_image(100, 75, seed=2).save(path)
    drawn = result.draw(path)
    assert drawn.size == (100, 75)
    # the box 10%..50% of the width is drawn at 10..50 px of the small image, not off-image
    original = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert np.abs(np.asarray(drawn).astype(int)[:, 10] - original[:, 10]).sum() > 0


def test_draw_text_answer_and_empty_result():
    image = make_test_image(120, 80, seed=3)
    caption = Florence2Result.from_dict({"<CAPTION>": "a colourful test image with shapes"}, image.size)
    assert ImageChops.difference(caption.draw(image), image).getbbox() is not None
    empty = Florence2Result.from_dict({"<OD>": {"bboxes": [], "labels": []}}, image.size)
    assert ImageChops.difference(empty.draw(image), image).getbbox() is None
    assert ImageChops.difference(caption.draw(image, text=False), image).getbbox() is None


def test_draw_real_outputs(real):
    image = make_test_image(211, 97, seed=3)
    for _task, _d, _size, predicted in real:
        assert predicted.draw(image).size == image.size


# --- region inputs ---------------------------------------------------------------------------------------
REGION_TASKS = [t for t, spec in TASKS.items() if spec.region_input]


def test_normalized_regions_use_the_bin_of_the_fraction():
    rng = random.Random(0)
    for _ in range(2000):
        coords = sorted(rng.random() for _ in range(2)) + sorted(rng.random() for _ in range(2))
        region = (coords[0], coords[2], coords[1], coords[3])
        exact = [min(999, int(Fraction(c) * 1000)) for c in region]
        got = region_bins(region, region_format="normalized")
        assert all(
            g == e or abs(Fraction(c) * 1000 - round(c * 1000)) < Fraction(1, 10**6)
            for g, e, c in zip(got, exact, region)
        )
    for k in range(1001):  # k / 1000 lands in bin k even when k / 1000 * 1000 is k - epsilon in binary
        assert region_bins((k / 1000, 0, 1, 1), region_format="normalized")[0] == min(k, 999)


def test_normalized_equals_pixels_where_the_bins_agree():
    size = (1000, 500)
    pixels = (100, 50, 300, 250)
    normalized = (0.1, 0.1, 0.3, 0.5)
    for task in REGION_TASKS:
        assert build_task_text(task, region=normalized, region_format="normalized") == build_task_text(
            task, region=pixels, image_size=size
        )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(region=(0.1, 0.1, 1.2, 0.5), region_format="normalized"), r"\[0, 1\]"),
        (dict(region=(0.5, 0.1, 0.2, 0.5), region_format="normalized"), "x1 <= x2"),
        (dict(region=(1, 2, 3, 4), region_format="percent"), "region_format"),
        (dict(region=(1, 2, 3, 4)), "image_size"),
        (dict(text="a cat", region=(1, 2, 3, 4), image_size=(10, 10)), "either"),
    ],
)
def test_region_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_task_text("<REGION_TO_CATEGORY>", **kwargs)


def test_check_task_input_is_the_same_rules_without_an_image():
    check_task_input("<REGION_TO_OCR>", region=(1, 2, 3, 4))  # bounds need the image: checked later
    check_task_input("<OD>")
    for bad in [
        dict(task="<OD>", text="x"),
        dict(task="<NOPE>"),
        dict(task="<CAPTION_TO_PHRASE_GROUNDING>"),
        dict(task="<CAPTION_TO_PHRASE_GROUNDING>", text="<OD>"),
        dict(task="<REGION_TO_OCR>", text="oops"),
        dict(task="<OPEN_VOCABULARY_DETECTION>", region=(1, 2, 3, 4)),
    ]:
        with pytest.raises(ValueError):
            check_task_input(**bad)


def test_several_regions_build_one_prompt_each():
    size = (200, 100)
    regions = [(0, 0, 10, 10), (5, 5, 199, 99), (20, 30, 40, 50)]
    texts = build_task_texts("<REGION_TO_DESCRIPTION>", regions=regions, image_size=size)
    assert texts == [build_task_text("<REGION_TO_DESCRIPTION>", region=r, image_size=size) for r in regions]
    assert build_task_texts("<REGION_TO_DESCRIPTION>", regions=regions[0], image_size=size) == texts[:1]
    assert build_task_texts("<OD>") == ["<OD>"]
    with pytest.raises(ValueError, match="region 1"):
        build_task_texts("<REGION_TO_DESCRIPTION>", regions=[(0, 0, 1, 1), (0, 0, 500, 5)], image_size=size)
    for bad in [[], "0,0,1,1", [(0, 0, 1)], 5]:
        with pytest.raises(ValueError):
            build_task_texts("<REGION_TO_DESCRIPTION>", regions=bad, image_size=size)
    with pytest.raises(ValueError, match="takes text"):
        build_task_texts("<OPEN_VOCABULARY_DETECTION>", regions=regions, image_size=size)


def test_predict_regions_is_one_batch_equal_to_single_runs(tiny_model):
    image = make_test_image(160, 120, seed=8)
    regions = [(10, 12, 90, 70), (0, 0, 160, 120), (50, 60, 51, 61)]
    gen = dict(max_new_tokens=16, num_beams=2)
    for task in ["<REGION_TO_CATEGORY>", "<REGION_TO_SEGMENTATION>"]:
        batched = tiny_model.predict_regions(image, task, regions, **gen)
        assert [r.raw for r in batched] == [tiny_model.run(image, task, region=r, **gen) for r in regions]
    normalized = [(x1 / 160, y1 / 120, x2 / 160, y2 / 120) for x1, y1, x2, y2 in regions]
    by_fraction = tiny_model.predict_regions(
        image, "<REGION_TO_CATEGORY>", normalized, region_format="normalized", **gen
    )
    bins_equal = [
        region_bins(n, region_format="normalized") == region_bins(p, image.size)
        for n, p in zip(normalized, regions)
    ]
    assert all(bins_equal)  # these regions quantise the same both ways, so the answers are the same
    assert [r.raw for r in by_fraction] == [
        r.raw for r in tiny_model.predict_regions(image, "<REGION_TO_CATEGORY>", regions, **gen)
    ]
