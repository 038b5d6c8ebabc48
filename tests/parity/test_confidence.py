"""Confidence scores on the trained toy model (issue #25): every task answers with scores parallel to its
objects and otherwise the same, every route gives run()'s scores, and the scores equal those computed from
transformers' own generate + compute_transition_scores."""

from __future__ import annotations

import numpy as np
import pytest

from florence2_runtime.tasks.confidence import with_scores
from florence2_runtime.tasks.postprocess import parse_with_spans
from florence2_runtime.tasks.table import TASKS

pytestmark = pytest.mark.parity


# --- answers with scores --------------------------------------------------------------------------------------
def _without_scores(answer):
    if isinstance(answer, dict) and set(answer) == {"text", "scores"}:
        return answer["text"]
    return {k: v for k, v in answer.items() if k != "scores"}


def _objects(answer) -> int:
    if isinstance(answer, str):
        return 1
    return sum(len(answer.get(k, [])) for k in ("bboxes", "quad_boxes", "polygons"))


@pytest.fixture(scope="module")
def samples():
    from florence2_export.toy import shapes

    rng = np.random.default_rng(11)
    return [shapes.make_sample(task, rng) for task in TASKS for _ in range(2)]


def test_every_task_answers_with_parallel_scores_and_otherwise_the_same(shapes_model, samples):
    for sample in samples:
        plain = shapes_model.run(sample.image, sample.task, **sample.inputs)[sample.task]
        scored = shapes_model.run(sample.image, sample.task, scores=True, **sample.inputs)[sample.task]
        assert _without_scores(scored) == plain, sample.task
        values = scored["scores"] if isinstance(scored["scores"], list) else [scored["scores"]]
        assert len(values) == _objects(plain), sample.task
        assert all(v is None or 0 < v <= 1 for v in values), (sample.task, values)


def test_every_route_gives_the_scores_of_run(shapes_model, samples):
    od = next(s for s in samples if s.task == "<OD>")
    region = next(s for s in samples if s.task == "<REGION_TO_CATEGORY>")
    want_od = shapes_model.run(od.image, "<OD>", scores=True)["<OD>"]
    want_region = shapes_model.run(region.image, "<REGION_TO_CATEGORY>", scores=True, **region.inputs)

    encoded = shapes_model.encode_image(od.image)
    assert shapes_model.run(encoded, "<OD>", scores=True)["<OD>"] == want_od
    both = shapes_model.run_tasks(od.image, ["<OD>", "<CAPTION>"], scores=True)
    assert both["<OD>"]["scores"] == pytest.approx(want_od["scores"], rel=1e-5)
    caption = shapes_model.run(od.image, "<CAPTION>", scores=True)["<CAPTION>"]
    assert both["<CAPTION>"]["text"] == caption["text"]  # batched with <OD>: same tokens, scores to rounding
    assert both["<CAPTION>"]["scores"] == pytest.approx(caption["scores"], rel=1e-5)
    typed = shapes_model.predict(od.image, "<OD>", scores=True)
    assert list(typed.scores) == want_od["scores"] and typed.raw["<OD>"] == want_od
    method = shapes_model.detect_objects(od.image, scores=True)
    assert list(method.scores) == want_od["scores"]

    box = region.inputs["region"]
    results = shapes_model.predict_regions(region.image, "<REGION_TO_CATEGORY>", [box, box], scores=True)
    for r in results:
        assert r.text_score == pytest.approx(want_region["<REGION_TO_CATEGORY>"]["scores"], rel=1e-5)


def test_open_vocabulary_classes_keep_scores_in_merged_order(shapes_model, samples):
    od = next(s for s in samples if s.task == "<OD>")
    merged = shapes_model.detect_objects(od.image, classes=["circle", "square"], scores=True)
    singles = [
        shapes_model.run(od.image, "<OPEN_VOCABULARY_DETECTION>", text=c, scores=True)[
            "<OPEN_VOCABULARY_DETECTION>"
        ]
        for c in ("circle", "square")
    ]
    want_boxes = [s for a in singles for s in a["scores"][: len(a["bboxes"])]]
    want_polygons = [s for a in singles for s in a["scores"][len(a["bboxes"]) :]]
    assert list(merged.scores) == pytest.approx(want_boxes + want_polygons, rel=1e-5)


# --- against transformers: the same scores from its own transition scores -------------------------------------
@pytest.mark.parametrize("num_beams", [1, 3])
def test_scores_equal_those_from_transformers_transition_scores(
    shapes_checkpoint, shapes_model, samples, num_beams
):
    """transformers' generate + compute_transition_scores on the trained toy model, put through the same
    spans and definition, give the scores of ``run(..., scores=True)``: the scores read the reference's
    token probabilities, nothing of the runtime's own."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from florence2_runtime.tasks.postprocess import parse_type_of

    processor = transformers.AutoProcessor.from_pretrained(shapes_checkpoint, backend="pil")
    model = transformers.Florence2ForConditionalGeneration.from_pretrained(
        shapes_checkpoint, attn_implementation="eager", dtype=torch.float32
    ).eval()
    tok = shapes_model.tokenizer
    checked = 0
    for sample in samples[::2]:  # one of each task
        inputs = processor(text=[sample.text], images=[sample.image], return_tensors="pt")
        with torch.no_grad():
            out = model.generate(
                **inputs,
                max_new_tokens=60,
                num_beams=num_beams,
                output_scores=True,
                return_dict_in_generate=True,
            )
        transition = model.compute_transition_scores(
            out.sequences, out.scores, getattr(out, "beam_indices", None), normalize_logits=num_beams == 1
        )[0].numpy()
        row = out.sequences[0].tolist()
        end = row.index(2, 1) + 1 if 2 in row[1:] else len(row)
        row = row[:end]
        text, offsets = tok.decode_with_offsets(row)
        assert text == processor.batch_decode([row], skip_special_tokens=False)[0]
        logprobs = np.concatenate([[np.nan], transition[: len(row) - 1]]).astype(np.float32)
        answer, spans = parse_with_spans(text, parse_type_of(sample.task), sample.image.size)
        want = with_scores(answer, spans, offsets, logprobs)
        got = shapes_model.run(
            sample.image, sample.task, scores=True, max_new_tokens=60, num_beams=num_beams, **sample.inputs
        )[sample.task]
        assert _without_scores(got) == _without_scores(want), sample.task
        assert got["scores"] == pytest.approx(want["scores"], rel=1e-3, abs=1e-6), sample.task
        checked += _objects(_without_scores(got))
    assert checked > 15
