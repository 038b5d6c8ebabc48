"""Task-level API: 1024-token defaults, one vision encoding for many tasks, the per-task methods."""

from __future__ import annotations

import numpy as np
import pytest

import florence2_runtime.model as model_module
from florence2_runtime import EncodedImage
from florence2_runtime.generation import DEFAULT_MAX_NEW_TOKENS
from florence2_runtime.tasks import batch as batch_module
from florence2_runtime.tasks.batch import TASK_MAX_NEW_TOKENS, decoding_options
from florence2_runtime.tasks.methods import METHODS
from florence2_runtime.tasks.postprocess import post_process_generation
from florence2_runtime.tasks.prompts import build_task_text
from tests.helpers.images import make_test_image
from tests.helpers.tasks import TASK_INPUTS

TASKS = list(TASK_INPUTS)
IMAGE = make_test_image(160, 120, seed=11)
REGIONS = [(10, 12, 90, 70), (0, 0, 160, 120), (50, 60, 51, 61)]


def alone(model, image, task, **gen):
    """The reference: one task through generate() (vision encoder included), as transformers would run it."""
    inputs = TASK_INPUTS[task]
    text = build_task_text(task, inputs.get("text"), inputs.get("region"), image.size)
    ids = model.generate([image], [text], **gen)
    return post_process_generation(model.tokenizer.batch_decode(ids)[0], task, image.size)


class VisionCounter:
    """Counts vision encoder runs of a model (plain and IO-binding paths)."""

    def __init__(self, model, monkeypatch):
        self.calls = 0
        original = model.engine.encode_images

        def counted(pixel_values, **kwargs):
            self.calls += len(pixel_values)
            return original(pixel_values, **kwargs)

        monkeypatch.setattr(model.engine, "encode_images", counted)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_run_tasks_equals_separate_runs_for_all_15_tasks(tiny_model, num_beams, monkeypatch):
    gen = dict(max_new_tokens=24, num_beams=num_beams)
    entries = [{"task": t, **TASK_INPUTS[t]} for t in TASKS]
    counter = VisionCounter(tiny_model, monkeypatch)
    got = tiny_model.run_tasks(IMAGE, entries, **gen)
    assert counter.calls == 1
    assert list(got) == TASKS
    for task in TASKS:
        expected = alone(tiny_model, IMAGE, task, **gen)
        assert {task: got[task]} == expected, task
        assert tiny_model.run(IMAGE, task, **TASK_INPUTS[task], **gen) == expected


def test_an_encoding_is_reused_by_every_task_level_call(tiny_model, monkeypatch):
    gen = dict(max_new_tokens=20, num_beams=2)
    encoded = tiny_model.encode_image(IMAGE)
    assert isinstance(encoded, EncodedImage) and encoded.image_size == IMAGE.size
    assert encoded.features.shape == (tiny_model.config.num_image_tokens, tiny_model.config.d_model)
    assert not encoded.features.flags.writeable
    counter = VisionCounter(tiny_model, monkeypatch)
    for task in TASKS:
        assert tiny_model.run(encoded, task, **TASK_INPUTS[task], **gen) == alone(
            tiny_model, IMAGE, task, **gen
        )
    counter.calls = 0
    mixed = tiny_model.run_tasks(
        encoded,
        ["<CAPTION>", ("<REGION_TO_CATEGORY>", REGIONS[0]), ("<OPEN_VOCABULARY_DETECTION>", "ball")],
        **gen,
    )
    regions = tiny_model.predict_regions(encoded, "<REGION_TO_DESCRIPTION>", REGIONS, **gen)
    classes = tiny_model.detect_objects(encoded, classes=["ball", "table"], **gen)
    assert counter.calls == 0
    assert (
        mixed["<REGION_TO_CATEGORY>"]
        == tiny_model.run(IMAGE, "<REGION_TO_CATEGORY>", region=REGIONS[0], **gen)["<REGION_TO_CATEGORY>"]
    )
    assert [r.raw for r in regions] == [
        tiny_model.run(IMAGE, "<REGION_TO_DESCRIPTION>", region=r, **gen) for r in REGIONS
    ]
    assert classes.raw == tiny_model.detect_objects(IMAGE, classes=["ball", "table"], **gen).raw


def test_several_regions_and_classes_encode_the_image_once(tiny_model, monkeypatch):
    counter = VisionCounter(tiny_model, monkeypatch)
    tiny_model.predict_regions(IMAGE, "<REGION_TO_CATEGORY>", REGIONS, max_new_tokens=8)
    assert counter.calls == 1
    tiny_model.detect_objects(IMAGE, classes=["a", "b", "c", "d"], max_new_tokens=8)
    assert counter.calls == 2


def test_the_io_binding_path_reuses_encodings_too(tiny_model, bound_model, monkeypatch):
    gen = dict(max_new_tokens=20, num_beams=3)
    entries = [{"task": t, **TASK_INPUTS[t]} for t in TASKS]
    counter = VisionCounter(bound_model, monkeypatch)
    encoded = bound_model.encode_image(IMAGE)
    got = bound_model.run_tasks(encoded, entries, **gen)
    assert counter.calls == 1
    assert got == tiny_model.run_tasks(IMAGE, entries, **gen)
    np.testing.assert_array_equal(encoded.features, tiny_model.encode_image(IMAGE).features)


# --- defaults ----------------------------------------------------------------------------------------
class OptionsSpy:
    """Records the DecodingOptions decoding.generate receives (from Florence2.generate and the task layer)."""

    def __init__(self, monkeypatch):
        self.options = []
        original = model_module.generate

        def spy(inference, batch_size, options):
            self.options.append(options)
            return original(inference, batch_size, options)

        monkeypatch.setattr(model_module, "generate", spy)
        monkeypatch.setattr(batch_module, "generate", spy)


def test_task_level_calls_default_to_1024_new_tokens_capped_by_the_positions(tiny_model, monkeypatch):
    cap = min(TASK_MAX_NEW_TOKENS, tiny_model.config.max_position_embeddings - 1)
    spy = OptionsSpy(monkeypatch)
    encoded = tiny_model.encode_image(IMAGE)
    tiny_model.run(encoded, "<CAPTION>")
    tiny_model.predict(encoded, "<OD>")
    tiny_model.predict_regions(encoded, "<REGION_TO_OCR>", REGIONS[:2])
    tiny_model.run_tasks(encoded, ["<OCR>", "<CAPTION>"])
    tiny_model.caption_image(encoded, "detailed")
    tiny_model.detect_objects(encoded, classes=["x"])
    assert [o.max_new_tokens for o in spy.options] == [cap] * 6
    checkpoint = decoding_options(tiny_model)
    assert all(
        o.num_beams == checkpoint.num_beams and o.no_repeat_ngram_size == checkpoint.no_repeat_ngram_size
        for o in spy.options
    )
    spy.options.clear()
    tiny_model.run(encoded, "<CAPTION>", max_new_tokens=7)
    tiny_model.run(encoded, "<CAPTION>", max_length=9)
    tiny_model.generate([IMAGE], ["<CAPTION>"])  # the token-exact mirror keeps transformers' default
    assert [o.max_new_tokens for o in spy.options] == [7, 8, DEFAULT_MAX_NEW_TOKENS]


def test_a_model_that_never_ends_runs_past_20_tokens(tiny_model, monkeypatch):
    """A decoder that never emits EOS: the task-level default lets it run to the position cap."""
    eos = decoding_options(tiny_model).eos_token_id
    original = tiny_model.engine.decoder

    def no_eos(*args, **kwargs):
        inner = original(*args, **kwargs)

        class NoEOS:
            def logits(self, tokens):
                out = inner.logits(tokens).copy()
                out[:, eos] = -np.inf
                return out

            def rearrange_kv_cache(self, source):
                inner.rearrange_kv_cache(source)

        return NoEOS()

    monkeypatch.setattr(tiny_model.engine, "decoder", no_eos)
    lengths = []
    original_decode = tiny_model.tokenizer.batch_decode
    monkeypatch.setattr(
        tiny_model.tokenizer,
        "batch_decode",
        lambda ids: (lengths.extend(len(r) for r in ids), original_decode(ids))[1],
    )
    tiny_model.run(IMAGE, "<CAPTION>", num_beams=1)
    cap = min(TASK_MAX_NEW_TOKENS, tiny_model.config.max_position_embeddings - 1)
    assert lengths == [1 + cap] and cap > DEFAULT_MAX_NEW_TOKENS


# --- the per-task methods ------------------------------------------------------------------------------
def test_each_method_equals_its_run_equivalent(tiny_model):
    gen = dict(max_new_tokens=16, num_beams=2)
    encoded = tiny_model.encode_image(IMAGE)
    region, phrase = REGIONS[0], "a red ball"
    run = lambda task, **kw: tiny_model.run(IMAGE, task, **kw, **gen)  # noqa: E731
    for value, task in METHODS["caption_image"].tasks.items():
        assert tiny_model.caption_image(encoded, granularity=value, **gen).raw == run(task)
    for value, task in METHODS["detect_objects"].tasks.items():
        assert tiny_model.detect_objects(encoded, labels_mode=value, **gen).raw == run(task)
    assert tiny_model.caption_image(IMAGE, **gen).raw == run("<CAPTION>")
    assert tiny_model.detect_objects(IMAGE, **gen).raw == run("<OD>")
    assert tiny_model.ocr_image(encoded, **gen).raw == run("<OCR>")
    assert tiny_model.parse_document(encoded, **gen).raw == run("<OCR_WITH_REGION>")
    assert tiny_model.ground_phrase(encoded, phrase, **gen).raw == run(
        "<CAPTION_TO_PHRASE_GROUNDING>", text=phrase
    )
    assert tiny_model.segment_phrase(encoded, phrase, **gen).raw == run(
        "<REFERRING_EXPRESSION_SEGMENTATION>", text=phrase
    )
    for name in ("segment_region", "classify_image_region", "caption_image_region", "ocr_image_region"):
        task = METHODS[name].task()
        method = getattr(tiny_model, name)
        one = method(encoded, region, **gen)
        assert one.raw == run(task, region=region), name
        several = method(encoded, REGIONS, **gen)
        assert [r.raw for r in several] == [run(task, region=r) for r in REGIONS], name
        fractions = [(x1 / 160, y1 / 120, x2 / 160, y2 / 120) for x1, y1, x2, y2 in REGIONS]
        normalized = method(encoded, fractions, region_format="normalized", **gen)
        assert [r.raw for r in normalized] == [
            run(task, region=r, region_format="normalized") for r in fractions
        ]


def test_detect_objects_with_classes_merges_one_answer_per_class(tiny_model):
    gen = dict(max_new_tokens=40, num_beams=3)
    classes = ["ball", "red table", "cat"]
    result = tiny_model.detect_objects(IMAGE, classes=classes, **gen)
    task = "<OPEN_VOCABULARY_DETECTION>"
    answers = [tiny_model.run(IMAGE, task, text=c, **gen)[task] for c in classes]
    expected = {"bboxes": [], "bboxes_labels": [], "polygons": [], "polygons_labels": []}
    for c, a in zip(classes, answers):
        expected["bboxes"] += a["bboxes"]
        expected["bboxes_labels"] += [c] * len(a["bboxes"])
        expected["polygons"] += a["polygons"]
        expected["polygons_labels"] += [c] * len(a["polygons"])
    assert result.raw == {task: expected}
    assert [b.label for b in result.boxes] == expected["bboxes_labels"]


# --- bad input -------------------------------------------------------------------------------------------
def test_bad_task_level_input_names_the_problem(tiny_model, tmp_path):
    encoded = tiny_model.encode_image(IMAGE)
    cases = [
        (lambda: tiny_model.run_tasks(IMAGE, ["<CAPTION>", "<NOPE>"]), r"tasks\[1\].*unknown task '<NOPE>'"),
        (lambda: tiny_model.run_tasks(IMAGE, []), "tasks is empty"),
        (lambda: tiny_model.run_tasks(IMAGE, "<OD>"), "list of task tokens"),
        (lambda: tiny_model.run_tasks(IMAGE, ["<OD>", "<OD>"]), "listed twice"),
        (lambda: tiny_model.run_tasks(IMAGE, [("<OD>", (1, 2, 3, 4))]), "takes no input"),
        (lambda: tiny_model.run_tasks(IMAGE, [{"task": "<OD>", "box": 1}]), "keys"),
        (lambda: tiny_model.detect_objects(IMAGE, classes=[]), "non-empty list of class names"),
        (lambda: tiny_model.detect_objects(IMAGE, classes="ball"), "non-empty list of class names"),
        (lambda: tiny_model.detect_objects(IMAGE, classes=["ball", " "]), "non-empty list of class names"),
        (lambda: tiny_model.caption_image(IMAGE, granularity="huge"), "granularity must be one of"),
        (lambda: tiny_model.detect_objects(IMAGE, labels_mode="x"), "labels_mode must be one of"),
        (lambda: tiny_model.run(IMAGE, "<OCR>", region=(1, 2, 3, 4)), "takes no input"),
        (lambda: tiny_model.classify_image_region(IMAGE, (0, 0, 500, 5)), "outside"),
        (
            lambda: tiny_model.run(
                EncodedImage(encoded.features, (160, 120), "/elsewhere:128x128:32"), "<OD>"
            ),
            "another model.*/elsewhere",
        ),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
