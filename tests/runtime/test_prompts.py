"""``florence2_runtime.tasks.prompts`` on its own: the prompt rules spelled out and what they refuse.

Prompts and quantisation against transformers' ``Florence2Processor``: tests/parity/test_prompts.py.
"""

from __future__ import annotations

import pytest

from florence2_runtime.tasks.prompts import build_task_text, construct_prompt, quantize_region


def test_construct_prompt_quirks():
    assert construct_prompt("<OD>") == "Locate the objects with category name in the image."
    assert (
        construct_prompt("  a <OPEN_VOCABULARY_DETECTION> b <OPEN_VOCABULARY_DETECTION> ")
        == "Locate a  b in the image."
    )  # every occurrence removed, then stripped
    assert (
        construct_prompt("<CAPTION_TO_PHRASE_GROUNDING>{x}<REGION_TO_OCR>")
        == "Locate the phrases in the caption: {x}<REGION_TO_OCR>"
    )  # first token in table order wins
    assert construct_prompt("just text <FOO>") == "just text <FOO>"
    assert construct_prompt("") == ""
    with pytest.raises(ValueError, match="should be the only content"):
        construct_prompt("<OD> ")
    with pytest.raises(ValueError, match="<OD> should be"):
        construct_prompt("<CAPTION_TO_PHRASE_GROUNDING>cat<OD>")
    assert construct_prompt("<OD>", {}, {}) == construct_prompt("<OD>")  # empty tables -> defaults
    with pytest.raises(ValueError, match="must be a str"):
        construct_prompt(None)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(task="<NOPE>"), r"unknown task '<NOPE>'; valid tasks: <OCR>, "),
        (dict(task="od"), "valid tasks"),
        (dict(task=None), "unknown task"),
        (dict(task="<OD>", text="cat"), "takes no input"),
        (dict(task="<CAPTION>", region=(0, 0, 1, 1), image_size=(2, 2)), "takes no input"),
        (dict(task="<CAPTION_TO_PHRASE_GROUNDING>"), "needs an input: pass text"),
        (dict(task="<OPEN_VOCABULARY_DETECTION>", text="   "), "needs an input"),
        (dict(task="<REGION_TO_OCR>"), "needs an input: pass region"),
        (
            dict(task="<OPEN_VOCABULARY_DETECTION>", region=(0, 0, 1, 1), image_size=(2, 2)),
            "takes text, not a region",
        ),
        (
            dict(
                task="<REGION_TO_OCR>",
                text="<loc_1><loc_1><loc_2><loc_2>",
                region=(0, 0, 1, 1),
                image_size=(2, 2),
            ),
            "not both",
        ),
        (
            dict(task="<CAPTION_TO_PHRASE_GROUNDING>", text="a cat <OD>"),
            "the text of <CAPTION_TO_PHRASE_GROUNDING> must not contain a task token",
        ),
        (dict(task="<CAPTION_TO_PHRASE_GROUNDING>", text=5), "text must be a str"),
        (dict(task="<REGION_TO_CATEGORY>", text="the cat"), "takes a region"),
        (dict(task="<REGION_TO_CATEGORY>", text="<loc_1><loc_2><loc_3>"), "takes a region"),
        (dict(task="<REGION_TO_CATEGORY>", text="<loc_1><loc_2><loc_3><loc_1000>"), "takes a region"),
        (dict(task="<REGION_TO_CATEGORY>", text="<loc_1><loc_2><loc_3><loc_04>"), "takes a region"),
        (dict(task="<REGION_TO_CATEGORY>", text="<loc_5><loc_2><loc_3><loc_4>"), "x1 <= x2"),
        (dict(task="<REGION_TO_CATEGORY>", region=(0, 0, 1, 1)), "needs image_size"),
        (dict(task="<REGION_TO_CATEGORY>", region=(0, 0, 1, 1), image_size=(0, 5)), "positive whole"),
        (dict(task="<REGION_TO_CATEGORY>", region=(0, 0, 1, 1), image_size=(5.5, 5)), "positive whole"),
        (dict(task="<REGION_TO_CATEGORY>", region=(0, 0, 1, 1), image_size=5), r"\(width, height\)"),
        (dict(task="<REGION_TO_CATEGORY>", region=(0, 0, 1), image_size=(5, 5)), "4 finite numbers"),
        (
            dict(task="<REGION_TO_CATEGORY>", region=(0, 0, 1, float("inf")), image_size=(5, 5)),
            "4 finite numbers",
        ),
        (dict(task="<REGION_TO_CATEGORY>", region=(0, 0, 1, True), image_size=(5, 5)), "4 finite numbers"),
        (dict(task="<REGION_TO_CATEGORY>", region="0 0 1 1", image_size=(5, 5)), "string"),
        (dict(task="<REGION_TO_CATEGORY>", region=5, image_size=(5, 5)), "region must be"),
        (dict(task="<REGION_TO_CATEGORY>", region=(3, 0, 1, 1), image_size=(5, 5)), "x1 <= x2"),
        (dict(task="<REGION_TO_CATEGORY>", region=(0, 3, 1, 1), image_size=(5, 5)), "y1 <= y2"),
        (dict(task="<REGION_TO_CATEGORY>", region=(0, 0, 7, 1), image_size=(5, 5)), "outside the 5x5 image"),
        (dict(task="<REGION_TO_CATEGORY>", region=(-2, 0, 1, 1), image_size=(5, 5)), "outside"),
    ],
)
def test_build_task_text_rejects(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_task_text(**kwargs)


def test_quantize_region_rejects_bad_input():
    with pytest.raises(ValueError, match="outside"):
        quantize_region((0, 0, 10, 10), (5, 5))
    with pytest.raises(ValueError, match="needs image_size"):
        quantize_region((0, 0, 1, 1), None)
