"""The runtime against transformers on the committed trained toy model (models/florence2-tiny-shapes):
peaked logits, answers that end at their own length. (Its scores: tests/parity/test_transition_scores.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from florence2_export.toy import tiny_eval, train_tiny
from florence2_export.toy.demo import demo_requests

pytestmark = pytest.mark.parity


def _samples(seed: int, per_task: int = 1):
    return tiny_eval.held_out_set(per_task, seed)


def test_trained_model_tokens_match_transformers(shapes_checkpoint, shapes_model):
    """Peaked logits, 3 beams, every task batched: the runtime's ids equal transformers'."""
    from transformers import AutoProcessor, Florence2ForConditionalGeneration

    from florence2_runtime.tasks.prompts import build_task_text

    processor = AutoProcessor.from_pretrained(shapes_checkpoint, backend="pil")
    ref = Florence2ForConditionalGeneration.from_pretrained(
        shapes_checkpoint, attn_implementation="eager"
    ).eval()
    requests = demo_requests()
    images = [r["image"] for r in requests]
    texts = [
        build_task_text(r["task"], text=r.get("text"), region=r.get("region"), image_size=r["image"].size)
        for r in requests
    ]
    batch = processor(text=texts, images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = ref.generate(**batch, max_new_tokens=80, num_beams=3).numpy()
    np.testing.assert_array_equal(
        shapes_model.generate(images, texts, max_new_tokens=80, num_beams=3), expected
    )


def test_trained_model_scores_like_transformers(shapes_checkpoint, shapes_model):
    """The runtime's greedy answers score exactly what transformers' do on a held-out set."""
    samples = _samples(321, per_task=2)

    def runtime_generate(images, texts):
        return shapes_model.tokenizer.batch_decode(
            shapes_model.generate(images, texts, max_new_tokens=tiny_eval.MAX_NEW_TOKENS, num_beams=1)
        )

    ours = tiny_eval.evaluate(runtime_generate, samples)
    theirs = tiny_eval.evaluate(train_tiny.transformers_generate(shapes_checkpoint), samples)
    assert ours["decoded"] == theirs["decoded"]
    assert ours["tasks"] == theirs["tasks"]
