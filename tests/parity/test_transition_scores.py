"""Token scores against transformers: ``generate(output_scores=True, return_dict_in_generate=True)`` and
``compute_transition_scores`` (``normalize_logits=True`` for greedy, False for beam search).

Two references: the tiny random BART of ``tests/helpers/bart.py`` behind the torch-backed ``Inference`` (many
settings, fast), and the exported tiny Florence-2 against ``Florence2ForConditionalGeneration`` (the
whole runtime). Sequences and beam indices must be equal, scores within 1e-4 (-inf where transformers
has -inf). The pure pieces (``transition_scores``, ``scored_sequences``): tests/runtime/test_token_scores.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from florence2_runtime.generation import (
    DecodingOptions,
    GenerateOutput,
    generate,
    generate_output,
    generate_scored,
)
from florence2_runtime.tasks.prompts import build_task_text
from tests.helpers.bart import (
    FLORENCE_GENERATION,
    TorchInference,
    encoder_inputs,
    make_case,
    tiny_bart,
    unpack,
)
from tests.helpers.images import make_test_image

pytestmark = pytest.mark.parity

ATOL = 1e-4


def reference_output(model, generate_kwargs: dict, num_beams: int) -> dict:
    """transformers' sequences, transition scores and (beam search) sequences scores and beam indices."""
    with torch.no_grad():
        out = model.generate(**generate_kwargs, output_scores=True, return_dict_in_generate=True)
        beam_indices = getattr(out, "beam_indices", None) if num_beams > 1 else None
        scores = model.compute_transition_scores(
            out.sequences, out.scores, beam_indices, normalize_logits=num_beams == 1
        )
    return {
        "sequences": out.sequences.numpy(),
        "transition_scores": scores.numpy(),
        "sequences_scores": None if num_beams == 1 else out.sequences_scores.numpy(),
        "beam_indices": None if beam_indices is None else beam_indices.numpy(),
    }


def assert_matches(got: GenerateOutput, expected: dict) -> None:
    np.testing.assert_array_equal(got.sequences, expected["sequences"])
    assert got.transition_scores is not None and got.transition_scores.dtype == np.float32
    assert got.transition_scores.shape == (got.sequences.shape[0], got.sequences.shape[1] - 1)
    np.testing.assert_allclose(got.transition_scores, expected["transition_scores"], rtol=0, atol=ATOL)
    if expected["sequences_scores"] is None:
        assert got.sequences_scores is None and got.beam_indices is None
    else:
        assert got.sequences_scores is not None and got.sequences_scores.dtype == np.float32
        np.testing.assert_allclose(got.sequences_scores, expected["sequences_scores"], rtol=0, atol=ATOL)
        np.testing.assert_array_equal(got.beam_indices, expected["beam_indices"])


# ------------------------------------------------------------------------------- the tiny BART reference

CASES = [
    # greedy: rows finish early (EOS bias) and are padded, forced BOS and EOS, the length limit
    make_case(0, 9.0, 3, num_beams=1, max_new_tokens=12),
    make_case(1, 14.0, 3, num_beams=1, max_new_tokens=20),
    make_case(2, 0.0, 3, num_beams=1, max_new_tokens=6),
    make_case(3, 9.0, 3, num_beams=1, max_new_tokens=1),  # forced EOS at once
    make_case(4, 9.0, 3, num_beams=1, max_new_tokens=8, forced_eos_token_id=None, min_new_tokens=3),
    make_case(5, 6.0, 1, num_beams=1, max_new_tokens=15, no_repeat_ngram_size=1),  # pads are banned: -inf
    # beam search: 3 beams as Florence-2, early and late finishes, length penalties, early_stopping kinds
    make_case(0, 9.0, 3, num_beams=3, max_new_tokens=12),
    make_case(1, 14.0, 3, num_beams=3, max_new_tokens=20),
    make_case(2, 0.0, 3, num_beams=3, max_new_tokens=5),
    make_case(3, 6.0, 3, num_beams=3, max_new_tokens=1),
    make_case(4, 10.0, 3, num_beams=4, max_new_tokens=30, length_penalty=2.0),
    make_case(5, 6.0, 3, num_beams=3, max_new_tokens=16, early_stopping=False, length_penalty=0.5),
    make_case(6, 10.0, 3, num_beams=2, max_new_tokens=16, early_stopping="never", forced_bos_token_id=None),
    make_case(0, 5.0, 3, num_beams=3, max_new_tokens=10, min_new_tokens=4, forced_eos_token_id=None),
]


def case_id(case: tuple) -> str:
    seed, eos_bias, batch, kwargs = unpack(case)
    return f"s{seed}-eos{eos_bias:g}-b{batch}-" + "-".join(f"{k}={v}" for k, v in kwargs.items())


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_scores_match_transformers(case):
    seed, eos_bias, batch, kwargs = unpack(case)
    model = tiny_bart(seed, eos_bias)
    ids, mask = encoder_inputs(seed, batch)
    options = DecodingOptions.from_generation_config(FLORENCE_GENERATION, **kwargs)
    expected = reference_output(model, dict(input_ids=ids, attention_mask=mask, **kwargs), options.num_beams)
    inference = TorchInference(model, ids, mask, options.num_beams)
    assert_matches(generate_output(inference, batch, options, output_scores=True), expected)


@pytest.mark.slow
def test_cases_cover_early_finishes_padding_and_minus_inf():
    """The grid above is only meaningful if rows finish at different lengths and -inf scores occur."""
    early = padded = minus_inf = 0
    for case in CASES:
        seed, eos_bias, batch, kwargs = unpack(case)
        ids, mask = encoder_inputs(seed, batch)
        options = DecodingOptions.from_generation_config(FLORENCE_GENERATION, **kwargs)
        out = generate_output(
            TorchInference(tiny_bart(seed, eos_bias), ids, mask, options.num_beams),
            batch,
            options,
            output_scores=True,
        )
        assert out.transition_scores is not None
        early += out.sequences.shape[1] < options.max_length
        padded += int((out.sequences == options.pad_token_id).any(axis=1).sum())
        minus_inf += int(np.isneginf(out.transition_scores).sum())
    assert early >= 2 and padded >= 6 and minus_inf >= 2, (early, padded, minus_inf)


@pytest.mark.parametrize("case", CASES[::3], ids=case_id)
def test_scores_do_not_change_the_ids(case):
    seed, eos_bias, batch, kwargs = unpack(case)
    ids, mask = encoder_inputs(seed, batch)
    options = DecodingOptions.from_generation_config(FLORENCE_GENERATION, **kwargs)
    model = tiny_bart(seed, eos_bias)
    plain = generate(TorchInference(model, ids, mask, options.num_beams), batch, options)
    without = generate_output(TorchInference(model, ids, mask, options.num_beams), batch, options)
    np.testing.assert_array_equal(plain, without.sequences)
    assert without.transition_scores is None and without.sequences_scores is None


def test_beam_scores_add_up_to_the_sequence_score():
    """transformers' documented identity: sum of transition scores / length ** length_penalty."""
    seed, eos_bias, batch, kwargs = unpack(CASES[10])
    ids, mask = encoder_inputs(seed, batch)
    options = DecodingOptions.from_generation_config(FLORENCE_GENERATION, **kwargs)
    out = generate_output(
        TorchInference(tiny_bart(seed, eos_bias), ids, mask, 4), batch, options, output_scores=True
    )
    assert out.transition_scores is not None and out.beam_indices is not None
    lengths = (out.beam_indices >= 0).sum(axis=1)
    rebuilt = out.transition_scores.sum(axis=1) / lengths.astype(np.float32) ** options.length_penalty
    np.testing.assert_allclose(rebuilt, out.sequences_scores, rtol=1e-5)


# -------------------------------------------------------------------------- the exported Florence-2 model


def florence_reference(hf_model, hf_processor, images, texts, **kwargs) -> dict:
    batch = hf_processor(text=texts, images=images, return_tensors="pt", padding=True)
    num_beams = kwargs.get("num_beams", hf_model.generation_config.num_beams)
    return reference_output(hf_model, {**batch, **kwargs}, num_beams)


MIXED_TASKS = [
    ("<OD>", {}),
    ("<CAPTION>", {}),
    ("<REGION_TO_CATEGORY>", {"region": (10, 20, 90, 60)}),
    ("<CAPTION_TO_PHRASE_GROUNDING>", {"text": "a red car"}),
]


def mixed_batch():
    images = [
        make_test_image(w, h, seed=70 + i)
        for i, (w, h) in enumerate([(160, 120), (40, 180), (300, 60), (96, 96)])
    ]
    texts = [
        build_task_text(task, image_size=im.size, **extra) for (task, extra), im in zip(MIXED_TASKS, images)
    ]
    return images, texts


@pytest.mark.slow
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_beams=1, max_new_tokens=30),
        dict(num_beams=3, max_new_tokens=30),
        dict(num_beams=1, max_new_tokens=5),  # every row hits the length limit: forced EOS
        dict(num_beams=3, max_new_tokens=6),
        dict(),  # the checkpoint's generation config: 3 beams, forced BOS / EOS, no_repeat_ngram_size=3
    ],
    ids=["greedy", "beams", "greedy-limit", "beams-limit", "defaults"],
)
def test_florence_scores_match_transformers(onnx_model, hf_model, hf_processor, kwargs):
    images, texts = mixed_batch()
    expected = florence_reference(hf_model, hf_processor, images, texts, **kwargs)
    got = onnx_model.generate(images, texts, output_scores=True, return_dict_in_generate=True, **kwargs)
    assert_matches(got, expected)


@pytest.mark.parametrize("case", [CASES[1], CASES[7], CASES[10]], ids=case_id)
def test_generate_scored_rows(case):
    """Per row: the generated ids through the first EOS and their transition scores, nothing else."""
    seed, eos_bias, batch, kwargs = unpack(case)
    ids, mask = encoder_inputs(seed, batch)
    options = DecodingOptions.from_generation_config(FLORENCE_GENERATION, **kwargs)
    model = tiny_bart(seed, eos_bias)
    rows = generate_scored(TorchInference(model, ids, mask, options.num_beams), batch, options)
    out = generate_output(
        TorchInference(model, ids, mask, options.num_beams), batch, options, output_scores=True
    )
    assert len(rows) == batch and out.transition_scores is not None
    ends = 0
    for i, row in enumerate(rows):
        n = len(row.ids)
        assert row.ids.dtype == np.int64 and row.logprobs.dtype == np.float32 and row.logprobs.shape == (n,)
        np.testing.assert_array_equal(row.ids, out.sequences[i, 1 : 1 + n])
        np.testing.assert_array_equal(row.logprobs, out.transition_scores[i, :n])
        assert (row.ids[:-1] != options.eos_token_id).all() and (row.logprobs <= 0).all()
        ends += row.ids[-1] == options.eos_token_id and n < out.sequences.shape[1] - 1
        if options.num_beams == 1:
            assert row.score is None
        else:
            assert row.score == pytest.approx(row.logprobs.sum() / n**options.length_penalty, rel=1e-5)
    assert ends >= 1  # a row that ended before the longest one lost its padding


@pytest.fixture(scope="module")
def shapes_reference(shapes_checkpoint):
    """transformers on the committed trained toy model (peaked logits: answers end at their own length)."""
    from transformers import AutoProcessor, Florence2ForConditionalGeneration

    processor = AutoProcessor.from_pretrained(shapes_checkpoint, backend="pil")
    model = Florence2ForConditionalGeneration.from_pretrained(
        shapes_checkpoint, attn_implementation="eager", dtype=torch.float32
    ).eval()
    return model, processor


@pytest.mark.slow
@pytest.mark.parametrize("num_beams", [1, 3])
def test_trained_model_scores_match_transformers(shapes_model, shapes_reference, num_beams):
    """Every task batched (region tasks included), rows finishing at different lengths, forced BOS / EOS."""
    from florence2_export.toy.demo import demo_requests

    requests = demo_requests()
    images = [r["image"] for r in requests]
    texts = [
        build_task_text(r["task"], text=r.get("text"), region=r.get("region"), image_size=r["image"].size)
        for r in requests
    ]
    kwargs = dict(max_new_tokens=40, num_beams=num_beams)
    expected = florence_reference(*shapes_reference, images, texts, **kwargs)
    got = shapes_model.generate(images, texts, output_scores=True, return_dict_in_generate=True, **kwargs)
    assert_matches(got, expected)
    ends = (got.sequences[:, 1:] == 2).argmax(axis=1)
    assert len(set(ends.tolist())) > 3 and (ends < got.sequences.shape[1] - 2).any()  # early finishes
