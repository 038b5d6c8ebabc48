"""``Florence2``'s public surface: what a user needs, nothing else; closing releases the sessions."""

from __future__ import annotations

import gc
import weakref

import pytest

from florence2_runtime import Florence2, Florence2Error
from tests.helpers.images import make_test_image

TASK_METHODS = {
    "caption_image",
    "detect_objects",
    "ocr_image",
    "parse_document",
    "ground_phrase",
    "segment_phrase",
    "segment_region",
    "classify_image_region",
    "caption_image_region",
    "ocr_image_region",
}
INFERENCE = {"run", "run_tasks", "predict", "predict_regions", "generate", "encode_image", "encode_images"}
READ_ONLY = {"config", "generation_config", "tokenizer", "engine", "providers", "folder", "name_or_path"}
LIFECYCLE = {"from_pretrained", "close"}


def test_the_public_surface_is_what_a_user_needs():
    public = {name for name in dir(Florence2) if not name.startswith("_")}
    assert public == TASK_METHODS | INFERENCE | READ_ONLY | LIFECYCLE
    for name in READ_ONLY:
        assert isinstance(getattr(Florence2, name), property) and getattr(Florence2, name).fset is None, name


def test_read_only_parts_cannot_be_replaced(tiny_model):
    with pytest.raises(AttributeError):
        tiny_model.config = None
    with pytest.raises(TypeError):
        tiny_model.generation_config["num_beams"] = 7


def test_close_releases_the_sessions_and_refuses_later_calls(tiny_folder):
    image = make_test_image(64, 48, seed=1)
    with Florence2.from_pretrained(tiny_folder) as model:
        engine = weakref.ref(model.engine)
        assert model.run(image, "<OCR>", max_new_tokens=3)
    gc.collect()
    assert engine() is None
    with pytest.raises(Florence2Error, match="closed"):
        model.run(image, "<OCR>")
    with pytest.raises(Florence2Error, match="closed"):
        model.generate([image], ["<OCR>"])
    model.close()  # twice: harmless
    assert model.config.d_model > 0  # the config stays readable
