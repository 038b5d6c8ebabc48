"""The runtime against transformers on the exported tiny checkpoint: token ids and post-processed dicts, in the
native layout and the onnx-community one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from florence2_export.toy.demo import DEMO_INPUTS
from florence2_runtime.tasks.prompts import build_task_text
from tests.helpers.images import make_test_image

pytestmark = pytest.mark.parity

TASKS = list(DEMO_INPUTS)


def reference_ids(hf_model, hf_processor, images, texts, **kwargs) -> np.ndarray:
    batch = hf_processor(text=texts, images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        return hf_model.generate(**batch, **kwargs).numpy()


def task_text(task: str, image) -> str:
    inputs = DEMO_INPUTS[task]
    return build_task_text(task, text=inputs.get("text"), region=inputs.get("region"), image_size=image.size)


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("task", TASKS)
def test_single_image_ids_match(onnx_model, hf_model, hf_processor, task, num_beams):
    image = make_test_image(160, 120, seed=TASKS.index(task))
    text = task_text(task, image)
    kwargs = dict(max_new_tokens=24, num_beams=num_beams)
    expected = reference_ids(hf_model, hf_processor, [image], [text], **kwargs)
    got = onnx_model.generate([image], [text], **kwargs)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.slow
@pytest.mark.parametrize("num_beams", [1, 3])
def test_batched_mixed_prompts_and_sizes(onnx_model, hf_model, hf_processor, num_beams):
    images = [
        make_test_image(w, h, seed=i)
        for i, (w, h) in enumerate([(160, 120), (33, 200), (300, 31), (128, 128)])
    ]
    tasks = ["<OD>", "<CAPTION_TO_PHRASE_GROUNDING>", "<CAPTION>", "<REGION_TO_DESCRIPTION>"]
    texts = [task_text(t, im) for t, im in zip(tasks, images)]
    kwargs = dict(max_new_tokens=30, num_beams=num_beams)
    expected = reference_ids(hf_model, hf_processor, images, texts, **kwargs)
    got = onnx_model.generate(images, texts, **kwargs)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.slow
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_beams=3, no_repeat_ngram_size=0, max_new_tokens=30),
        dict(num_beams=3, early_stopping=False, length_penalty=2.0, max_new_tokens=25),
        dict(num_beams=2, early_stopping="never", length_penalty=0.5, max_new_tokens=25),
        dict(num_beams=1, min_new_tokens=10, max_new_tokens=15),
        dict(num_beams=4, min_new_tokens=5, max_new_tokens=12),
        dict(),  # the checkpoint's defaults: 3 beams, 20 tokens in all
    ],
)
def test_generation_options_match(onnx_model, hf_model, hf_processor, kwargs):
    images = [make_test_image(90, 70, seed=5), make_test_image(70, 90, seed=6)]
    texts = ["<MORE_DETAILED_CAPTION>", "<OPEN_VOCABULARY_DETECTION>a cat"]
    expected = reference_ids(hf_model, hf_processor, images, texts, **kwargs)
    got = onnx_model.generate(images, texts, **kwargs)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_run_matches_post_process_generation(onnx_model, hf_model, hf_processor, task):
    image = make_test_image(211, 97, seed=40 + TASKS.index(task))
    inputs = DEMO_INPUTS[task]
    ids = reference_ids(
        hf_model, hf_processor, [image], [task_text(task, image)], max_new_tokens=40, num_beams=3
    )
    decoded = hf_processor.batch_decode(ids, skip_special_tokens=False)[0]
    expected = hf_processor.post_process_generation(decoded, task=task, image_size=image.size)
    got = onnx_model.run(image, task, max_new_tokens=40, num_beams=3, **inputs)
    assert got == expected
    assert onnx_model.tokenizer.batch_decode(ids) == hf_processor.batch_decode(ids, skip_special_tokens=False)


def test_run_rejects_bad_input(onnx_model):
    image = make_test_image(64, 64, seed=0)
    with pytest.raises(ValueError, match="task"):
        onnx_model.run(image, "<NOT_A_TASK>")
    with pytest.raises(ValueError):
        onnx_model.run(image, "<OD>", text="unexpected")
    with pytest.raises(ValueError):
        onnx_model.run(image, "<CAPTION_TO_PHRASE_GROUNDING>")
    with pytest.raises(ValueError):
        onnx_model.run(image, "<REGION_TO_CATEGORY>", region=(10, 10, 5, 5))
    with pytest.raises(ValueError, match="num_beams"):
        onnx_model.run(image, "<OD>", num_beams=0)
    with pytest.raises(ValueError, match="not_an_option"):
        onnx_model.generate([image], ["<OD>"], not_an_option=1)
    with pytest.raises(ValueError, match="texts"):
        onnx_model.generate([image, image], ["<OD>"])


# --- the onnx-community layout (the two-decoder pair; the merged decoder alone: tests/runtime) -------------
@pytest.mark.slow
@pytest.mark.parametrize("num_beams", [1, 3])
def test_onnx_community_ids_match(community_model, hf_model, hf_processor, num_beams):
    images = [make_test_image(w, h, seed=i) for i, (w, h) in enumerate([(160, 120), (33, 200), (300, 31)])]
    texts = [
        "<OD>",
        "<CAPTION_TO_PHRASE_GROUNDING>a red car",
        "<REGION_TO_DESCRIPTION><loc_100><loc_200><loc_500><loc_700>",
    ]
    kwargs = dict(max_new_tokens=25, num_beams=num_beams)
    expected = reference_ids(hf_model, hf_processor, images, texts, **kwargs)
    np.testing.assert_array_equal(community_model.generate(images, texts, **kwargs), expected)
    assert not community_model.engine.sessions.merged
