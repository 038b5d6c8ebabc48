"""``florence2 bench``'s timing with token scores kept (``BenchOptions.scores``)."""

from __future__ import annotations

import numpy as np
import pytest

from florence2_runtime.cli.bench import BenchOptions, generated_image, run_bench, timed_generate


def test_timed_generate_with_scores_gives_the_same_ids(onnx_model):
    images = [generated_image(120, 90, seed=3), generated_image(60, 140, seed=4)]
    texts = ["<OD>", "<CAPTION>"]
    kwargs = dict(max_new_tokens=7, min_new_tokens=7, num_beams=3)
    ids, times = timed_generate(onnx_model, images, texts, output_scores=True, **kwargs)
    np.testing.assert_array_equal(ids, onnx_model.generate(images, texts, **kwargs))
    assert times.tokens == 7 and times.bookkeeping > 0


def test_run_bench_with_scores(onnx_model):
    report = run_bench(onnx_model, BenchOptions(tokens=4, beams=1, runs=1, warmup=0, scores=True))
    assert report.runs[0].tokens == 4 and "scores" in report.table()
    with pytest.raises(ValueError, match="scores"):
        BenchOptions(scores=1)  # type: ignore[arg-type]
