"""``florence2 bench`` on the tiny export, and the CPU benchmark harness in its smoke mode."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from florence2_runtime.cli import main
from florence2_runtime.cli.bench import STAGES, BenchOptions, generated_image, run_bench, timed_generate
from tests.helpers.paths import ROOT


def test_timed_generate_gives_the_same_ids_as_generate(onnx_model):
    images = [generated_image(200, 150, seed=1), generated_image(90, 160, seed=2)]
    texts = ["<OD>", "<CAPTION>"]
    kwargs = dict(max_new_tokens=9, min_new_tokens=9, num_beams=3)
    ids, times = timed_generate(onnx_model, images, texts, **kwargs)
    np.testing.assert_array_equal(ids, onnx_model.generate(images, texts, **kwargs))
    assert ids.shape == (2, 10) and times.tokens == 9 and times.batch == 2
    assert all(getattr(times, s) > 0 for s in STAGES)
    parts = (
        times.preprocess + times.vision_encoder + times.text_encoder + times.first_step + 8 * times.per_token
    )
    assert parts == pytest.approx(times.end_to_end, rel=1e-6)


def test_run_bench_forces_exactly_n_tokens(onnx_model):
    report = run_bench(onnx_model, BenchOptions(tokens=6, beams=2, batch=3, runs=2, warmup=0))
    assert len(report.runs) == 2 and all(r.tokens == 6 and r.batch == 3 for r in report.runs)
    summary = report.to_dict()["median"]
    assert summary["tokens_per_second"] == pytest.approx(18 / summary["end_to_end"], rel=0.5)
    assert "per_token" in report.table()


def test_cli_bench_json_and_table(onnx_folder, tmp_path, capsys):
    image = tmp_path / "im.png"
    generated_image(64, 48).save(image)
    assert (
        main(
            [
                "bench",
                str(onnx_folder),
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
    assert main(["bench", str(onnx_folder), "--tokens", "3", "--runs", "1", "--threads", "1"]) == 0
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
def test_cli_bench_bad_arguments(onnx_folder, capsys, argv, message):
    assert main(["bench", str(onnx_folder), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_benchmark_harness_smoke(tiny_checkpoint, onnx_folder, tmp_path):
    """The CPU harness on the tiny model: both workers, alternating runs, JSON + markdown (+ PNG)."""
    out = tmp_path / "results"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "cpu.py"),
        "--smoke",
        "--checkpoint",
        str(tiny_checkpoint),
        "--variants",
        f"fp32={onnx_folder}",
        "--cache",
        str(tmp_path / "cache"),
        "--out",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((out / "cpu-tiny.json").read_text())
    assert result["sides"] == ["transformers", "runtime-fp32"]
    assert result["ids_mismatch_vs_transformers"] == {"transformers": 0, "runtime-fp32": 0}
    for side in result["sides"]:
        assert result["peak_rss"][side] > 0
        for config in result["configs"]:
            runs = result["samples"][side][config["key"]]
            assert len(runs) == result["runs"] and all(r["tokens"] == config["tokens"] for r in runs)
    assert result["floor_seconds"]["fp32"] > 0
    assert set(result["summary"]["targets"]) == {
        "speedup_128_3",
        "speedup_20_3",
        "greedy_token_vs_floor",
        "rss_ratio",
    }
    assert "## End to end" in (out / "cpu-tiny.md").read_text()
    pytest.importorskip("matplotlib")
    assert (out / "cpu-tiny.png").stat().st_size > 0


def test_tasks_benchmark_smoke(onnx_folder, tmp_path):
    """benchmarks/tasks.py on the tiny export: both sides timed, answers equal, JSON + markdown written."""
    out = tmp_path / "results"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "tasks.py"),
        "--smoke",
        "--model",
        str(onnx_folder),
        "--cache",
        str(tmp_path / "cache"),
        "--out",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((out / f"tasks-{onnx_folder.name}.json").read_text())
    assert result["answers_equal"] and set(result["median_s"]) == {"separate", "run_tasks"}
    assert "Ratio run_tasks / separate" in (out / f"tasks-{onnx_folder.name}.md").read_text()
