"""``florence2 bench`` on the tiny model: the timed loop gives generate()'s ids (with and without token scores),
forces exactly n tokens, and the command prints JSON and a table. (The benchmarks/ scripts: tests/benchmarks.)"""

from __future__ import annotations

import json

import numpy as np
import pytest

from florence2_runtime.cli import main
from florence2_runtime.cli.bench import STAGES, BenchOptions, generated_image, run_bench, timed_generate


def test_timed_generate_gives_the_same_ids_as_generate(tiny_model):
    images = [generated_image(200, 150, seed=1), generated_image(90, 160, seed=2)]
    texts = ["<OD>", "<CAPTION>"]
    kwargs = dict(max_new_tokens=9, min_new_tokens=9, num_beams=3)
    ids, times = timed_generate(tiny_model, images, texts, **kwargs)
    np.testing.assert_array_equal(ids, tiny_model.generate(images, texts, **kwargs))
    assert ids.shape == (2, 10) and times.tokens == 9 and times.batch == 2
    assert all(getattr(times, s) > 0 for s in STAGES)
    parts = (
        times.preprocess + times.vision_encoder + times.text_encoder + times.first_step + 8 * times.per_token
    )
    assert parts == pytest.approx(times.end_to_end, rel=1e-6)


def test_run_bench_forces_exactly_n_tokens(tiny_model):
    report = run_bench(tiny_model, BenchOptions(tokens=6, beams=2, batch=3, runs=2, warmup=0))
    assert len(report.runs) == 2 and all(r.tokens == 6 and r.batch == 3 for r in report.runs)
    summary = report.to_dict()["median"]
    assert summary["tokens_per_second"] == pytest.approx(18 / summary["end_to_end"], rel=0.5)
    assert "per_token" in report.table()


def test_cli_bench_json_and_table(tiny_folder, tmp_path, capsys):
    image = tmp_path / "im.png"
    generated_image(64, 48).save(image)
    assert (
        main(
            [
                "bench",
                str(tiny_folder),
                "--tokens",
                "4",
                "--beams",
                "2",
                "--runs",
                "1",
                "--image",
                str(image),
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["options"]["tokens"] == 4 and len(out["runs"]) == 1
    assert set(STAGES) <= set(out["median"]) and out["runs"][0]["tokens"] == 4
    assert main(["bench", str(tiny_folder), "--tokens", "3", "--runs", "1", "--threads", "1"]) == 0
    table = capsys.readouterr().out
    assert "vision_encoder" in table and "tokens/s" in table


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--tokens", "1"], "tokens"),
        (["--runs", "0"], "runs"),
        (["--image", "does-not-exist.png"], "image not found"),
    ],
)
def test_cli_bench_bad_arguments(tiny_folder, capsys, argv, message):
    assert main(["bench", str(tiny_folder), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_timed_generate_with_scores_gives_the_same_ids(tiny_model):
    images = [generated_image(120, 90, seed=3), generated_image(60, 140, seed=4)]
    texts = ["<OD>", "<CAPTION>"]
    kwargs = dict(max_new_tokens=7, min_new_tokens=7, num_beams=3)
    ids, times = timed_generate(tiny_model, images, texts, output_scores=True, **kwargs)
    np.testing.assert_array_equal(ids, tiny_model.generate(images, texts, **kwargs))
    assert times.tokens == 7 and times.bookkeeping > 0


def test_run_bench_with_scores(tiny_model):
    report = run_bench(tiny_model, BenchOptions(tokens=4, beams=1, runs=1, warmup=0, scores=True))
    assert report.runs[0].tokens == 4 and "scores" in report.table()
    with pytest.raises(ValueError, match="scores"):
        BenchOptions(scores=1)  # type: ignore[arg-type]
