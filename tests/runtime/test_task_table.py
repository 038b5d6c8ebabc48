"""The task table (``tasks.table.TASKS``): one entry per task, and every task-dependent part reads it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import florence2_runtime
from florence2_runtime import Florence2
from florence2_runtime.tasks.methods import METHODS
from florence2_runtime.tasks.postprocess import PARSE_TYPES, TASK_PARSE_TYPES
from florence2_runtime.tasks.prompts import TASK_PROMPTS_WITH_INPUT, TASK_PROMPTS_WITHOUT_INPUTS
from florence2_runtime.tasks.results import _READERS, TASK_KINDS
from florence2_runtime.tasks.supervision import CONVERTERS
from florence2_runtime.tasks.table import TASKS, MethodOption, TaskSpec

ROOT = Path(florence2_runtime.__file__).parent


def test_every_entry_names_things_that_exist():
    for token, spec in TASKS.items():
        assert spec.token == token
        assert spec.parse_type in PARSE_TYPES, token
        assert spec.answer in _READERS, token
        assert spec.detections is None or spec.detections in CONVERTERS, token
        assert spec.method is not None and callable(getattr(Florence2, spec.method)), token
        assert ("{input}" in spec.prompt) == spec.takes_input == (spec.input != "none")
        assert spec.region_input == (spec.input == "region")


def test_the_views_are_the_table():
    assert dict(TASK_PARSE_TYPES) == {t: s.parse_type for t, s in TASKS.items()}
    assert dict(TASK_KINDS) == {t: s.answer for t, s in TASKS.items()}
    assert list(TASK_PROMPTS_WITHOUT_INPUTS) + list(TASK_PROMPTS_WITH_INPUT) == [
        t for t in TASKS if t in TASK_PROMPTS_WITHOUT_INPUTS
    ] + [t for t in TASKS if t in TASK_PROMPTS_WITH_INPUT]
    assert {t: s.prompt for t, s in TASKS.items()} == {
        **TASK_PROMPTS_WITHOUT_INPUTS,
        **TASK_PROMPTS_WITH_INPUT,
    }


def test_methods_are_the_table_read_by_method():
    assert set(METHODS) == {s.method for s in TASKS.values()}
    caption, detect = METHODS["caption_image"], METHODS["detect_objects"]
    assert caption.option == "granularity" and dict(caption.tasks) == {
        "normal": "<CAPTION>",
        "detailed": "<DETAILED_CAPTION>",
        "very_detailed": "<MORE_DETAILED_CAPTION>",
    }
    assert detect.option == "labels_mode" and dict(detect.tasks) == {
        "classes": "<OD>",
        "captions": "<DENSE_REGION_CAPTION>",
        "rois": "<REGION_PROPOSAL>",
    }
    assert dict(detect.when_given) == {"classes": "<OPEN_VOCABULARY_DETECTION>"} and detect.takes == "none"
    single = {name: (m.task(), m.takes) for name, m in METHODS.items() if m.option is None}
    assert single == {
        "ocr_image": ("<OCR>", "none"),
        "parse_document": ("<OCR_WITH_REGION>", "none"),
        "ground_phrase": ("<CAPTION_TO_PHRASE_GROUNDING>", "text"),
        "segment_phrase": ("<REFERRING_EXPRESSION_SEGMENTATION>", "text"),
        "segment_region": ("<REGION_TO_SEGMENTATION>", "region"),
        "classify_image_region": ("<REGION_TO_CATEGORY>", "region"),
        "caption_image_region": ("<REGION_TO_DESCRIPTION>", "region"),
        "ocr_image_region": ("<REGION_TO_OCR>", "region"),
    }
    with pytest.raises(ValueError, match="granularity must be one of"):
        caption.task("huge")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(token="<X>", prompt="Find {input}."), "exactly when the task takes input"),
        (dict(token="<X>", prompt="Find it.", input="text"), "exactly when the task takes input"),
        (dict(token="<X>", prompt="Find it.", input="image"), "input must be one of"),
        (dict(token="<X>", prompt="Find it.", answer="masks"), "answer must be one of"),
    ],
)
def test_a_malformed_entry_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TaskSpec(**kwargs)


def test_a_new_task_is_one_entry():
    spec = TaskSpec(
        "<COUNT_CARS>",
        "How many cars are in {input}?",
        input="region",
        method="count_cars",
        option=MethodOption("unit", "cars"),
    )
    assert spec.parse_type == "pure_text" and spec.answer == "text" and spec.detections is None


def _strings_outside_docstrings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string constant that is code: not a docstring, not part of a raised message."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    messages = {id(c) for r in ast.walk(tree) if isinstance(r, ast.Raise) for c in ast.walk(r)}
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings | messages
    ]


def test_task_tokens_are_written_only_in_the_table():
    """In the task layer, the model and the layers below, a task token string appears in tasks/table.py only
    (docstrings, comments and examples in error messages aside)."""
    paths = [ROOT / "model.py", *sorted((ROOT / "tasks").glob("*.py"))]
    paths += [p for layer in ("inputs", "engine", "generation") for p in sorted((ROOT / layer).glob("*.py"))]
    found = [
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for path in paths
        if path.name != "table.py"
        for line, text in _strings_outside_docstrings(path)
        if any(token in text for token in TASKS)
    ]
    assert not found, found
