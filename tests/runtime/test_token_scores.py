"""Token scores (``generation.scores``) on their own: gathering, cutting after EOS, log-probabilities.

Against transformers' ``compute_transition_scores``: tests/parity/test_transition_scores.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from florence2_runtime.generation import (
    DecodingOptions,
    GenerateOutput,
    StepScores,
    generate,
    generate_output,
    scored_sequences,
    transition_scores,
)
from tests.helpers.images import make_test_image
from tests.helpers.paths import DATA

FLORENCE_GENERATION = json.loads((DATA / "models" / "tiny" / "generation_config.json").read_text())


def test_transition_scores_gathers_like_compute_transition_scores():
    # two items, 2 beams each, 3 steps; the entries a hypothesis can gather at each step
    steps = [
        StepScores(
            np.array([[0, 1], [2, 3]]), np.array([[5, 6], [7, 8]]), np.array([[-1.0, -2.0], [-3.0, -4.0]])
        ),
        StepScores(
            np.array([[1, 0], [2, 2]]), np.array([[9, 9], [2, 4]]), np.array([[-0.5, -0.25], [-0.1, -0.2]])
        ),
        StepScores(
            np.array([[0, 1], [3, 2]]), np.array([[2, 2], [2, 1]]), np.array([[-7.0, -8.0], [-9.0, -6.0]])
        ),
    ]
    sequences = np.array([[2, 6, 9, 2], [2, 7, 2, 1]])
    beam_indices = np.array([[1, 1, 0], [2, 2, -1]])  # item 1's hypothesis ended after two tokens
    got = transition_scores(
        sequences,
        [StepScores(*(a.astype(t) for a, t in zip(s, (np.int64, np.int64, np.float32)))) for s in steps],
        beam_indices,
    )
    np.testing.assert_array_equal(got, np.array([[-2.0, -0.5, -7.0], [-3.0, -0.1, 0.0]], np.float32))
    with pytest.raises(ValueError, match="no entry"):
        transition_scores(sequences + 100, steps, beam_indices)


def test_scored_sequences_cut_after_eos_and_need_scores():
    sequences = np.array([[2, 0, 5, 2, 1, 1], [2, 0, 7, 8, 9, 4]])
    scores = np.array([[0, -1, -2, -9, -9], [0, -1, -2, -3, -4]], np.float32)
    rows = scored_sequences(
        GenerateOutput(sequences, scores, np.array([-1.5, -2.5], np.float32)), eos_token_id=2
    )
    np.testing.assert_array_equal(rows[0].ids, [0, 5, 2])
    np.testing.assert_array_equal(rows[0].logprobs, [0, -1, -2])
    np.testing.assert_array_equal(rows[1].ids, [0, 7, 8, 9, 4])
    assert rows[0].score == -1.5 and rows[1].score == -2.5
    assert len(scored_sequences(GenerateOutput(sequences, scores), eos_token_id=None)[0].ids) == 5
    with pytest.raises(ValueError, match="output_scores"):
        scored_sequences(GenerateOutput(sequences), eos_token_id=2)


class FakeInference:
    """Seeded random logits, no model: the loop, filters and scores without torch or onnxruntime."""

    def __init__(self, rows: int, vocab: int, seed: int):
        self.rng = np.random.default_rng(seed)
        self.rows, self.vocab = rows, vocab

    def logits(self, tokens):
        return (self.rng.standard_normal((self.rows, self.vocab)) * 3).astype(np.float32)

    def rearrange_kv_cache(self, source_indices):
        pass


@pytest.mark.parametrize("num_beams", [1, 3])
def test_fake_inference_scores_are_log_probabilities(num_beams):
    options = DecodingOptions.from_generation_config(
        FLORENCE_GENERATION, num_beams=num_beams, max_new_tokens=9
    )
    out = generate_output(FakeInference(2 * num_beams, 700, seed=num_beams), 2, options, output_scores=True)
    assert out.transition_scores is not None
    assert out.transition_scores.shape == (2, out.sequences.shape[1] - 1)
    assert (out.transition_scores <= 0).all()
    assert (out.transition_scores[:, 0] == 0).all()  # forced BOS: probability 1
    plain = generate(FakeInference(2 * num_beams, 700, seed=num_beams), 2, options)
    np.testing.assert_array_equal(plain, out.sequences)


def test_florence_generate_keeps_returning_ids(tiny_model):
    images = [make_test_image(160, 120, seed=70), make_test_image(40, 180, seed=71)]
    texts = ["<OD>", "<CAPTION>"]
    ids = tiny_model.generate(images, texts, max_new_tokens=8, num_beams=3)
    assert isinstance(ids, np.ndarray) and ids.dtype == np.int64
    also = tiny_model.generate(images, texts, max_new_tokens=8, num_beams=3, output_scores=True)
    np.testing.assert_array_equal(also, ids)  # output_scores alone changes nothing, as in transformers
    out = tiny_model.generate(images, texts, max_new_tokens=8, num_beams=3, return_dict_in_generate=True)
    np.testing.assert_array_equal(out.sequences, ids)
    assert out.transition_scores is None and out.sequences_scores is None
