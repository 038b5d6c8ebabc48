"""Typed results (``Florence2Result``) built from transformers' own post-processed dicts.

The runtime's results on its own dicts: tests/runtime/test_results.py (the runtime's post-processing equals
transformers': tests/parity/test_postprocess.py).
"""

from __future__ import annotations

import pytest

from florence2_runtime import Florence2Result
from florence2_runtime.tasks.results import TASK_KINDS
from tests.helpers.results import SIZES, assert_matches_dict, fuzzed_outputs

pytestmark = pytest.mark.parity


@pytest.fixture(scope="module")
def fuzzed(hf_processor):
    return fuzzed_outputs(
        lambda text, task, size: hf_processor.post_process_generation(text, task=task, image_size=size)
    )


def test_transformers_dicts_of_every_task_are_read(fuzzed):
    """``Florence2Result.from_dict`` reads every dict transformers' post-processing gives."""
    kinds_with_objects = set()
    for task, d, size in fuzzed:
        result = Florence2Result.from_dict(d, size)
        assert_matches_dict(result, d, size)
        if len(result):
            kinds_with_objects.add(TASK_KINDS[task])
    assert kinds_with_objects == set(TASK_KINDS.values()) - {"text"}  # the fuzzing reached every shape


def test_region_text_box_is_the_dequantised_location(hf_processor):
    """The box of a region answer equals what transformers gives for the same bins in an <OD> answer."""
    for size in SIZES:
        answer = "car<loc_52><loc_332><loc_932><loc_774>"
        od = hf_processor.post_process_generation(answer, task="<OD>", image_size=size)
        result = Florence2Result.from_answer("<REGION_TO_CATEGORY>", answer, size)
        assert [list(b.xyxy) for b in result.boxes] == od["<OD>"]["bboxes"]
        assert result.text == "car" and result.labels == ["car"]
