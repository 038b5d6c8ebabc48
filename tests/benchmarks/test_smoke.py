"""The benchmark scripts in their smoke modes (tiny models, seconds): each runs and writes its report.

``cpu.py`` and ``gpu.py`` (CPU provider here) time transformers beside the runtime, ``tasks.py`` and
``label.py`` the runtime's task-level paths; the figures themselves are not checked, only that both sides
ran and agreed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers.paths import ROOT


@pytest.mark.slow
def test_gpu_benchmark_smoke(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "gpu.py"),
            "--smoke",
            "--out",
            str(tmp_path),
            "--cache",
            str(tmp_path / "cache"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (report,) = tmp_path.glob("gpu-*.json")
    result = json.loads(report.read_text())
    sides = result["models"]["tiny"]
    assert {"fp32 io", "fp32", "transformers"} <= set(sides)
    assert sides["fp32 io"]["4-2-1"]["per_token"] > 0
    assert report.with_suffix(".md").read_text().startswith("# GPU benchmark")


@pytest.mark.slow
@pytest.mark.parity
def test_cpu_benchmark_smoke(tiny_checkpoint, onnx_folder, tmp_path):
    """The CPU harness on the tiny model: transformers fp32 and bf16, the runtime's fp32 and (where the CPU
    has it) bf16, rotating runs, JSON + markdown (+ PNG)."""
    from florence2_runtime.engine import openvino

    try:
        openvino.check_precision("bf16")
        bf16 = True
    except Exception:  # no openvino, or a CPU without bf16: the harness skips that side and says why
        bf16 = False
    out = tmp_path / "results"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "cpu.py"),
        "--smoke",
        "--checkpoint",
        str(tiny_checkpoint),
        "--transformers",
        "fp32-eager",
        "bf16-sdpa",
        "--variants",
        f"fp32={onnx_folder}",
        "bf16",
        "--cache",
        str(tmp_path / "cache"),
        "--out",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((out / "cpu-tiny.json").read_text())
    runtime = ["runtime-fp32", "runtime-bf16"] if bf16 else ["runtime-fp32"]
    assert result["sides"] == ["transformers-fp32-eager", "transformers-bf16-sdpa", *runtime]
    assert result["reference"] == "transformers-fp32-eager"
    assert result["side_info"]["transformers-bf16-sdpa"]["dtype"] == "torch.bfloat16"
    assert result["ids_mismatch_vs_reference"]["runtime-fp32"] == 0
    assert ("runtime-bf16" in result["skipped"]) != bf16
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
    assert set(result["summary"]["speedup_bf16"]) == set(runtime)
    text = (out / "cpu-tiny.md").read_text()
    assert "## End to end" in text and "vs transformers bf16" in text and "CPU flags" in text
    pytest.importorskip("matplotlib")
    assert (out / "cpu-tiny.png").stat().st_size > 0


@pytest.mark.slow
def test_tasks_benchmark_smoke(tiny_folder, tmp_path):
    """benchmarks/tasks.py on the tiny export: both sides timed, answers equal, JSON + markdown written."""
    out = tmp_path / "results"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "tasks.py"),
        "--smoke",
        "--model",
        str(tiny_folder),
        "--cache",
        str(tmp_path / "cache"),
        "--out",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((out / f"tasks-{tiny_folder.name}.json").read_text())
    assert result["answers_equal"] and set(result["median_s"]) == {"separate", "run_tasks"}
    assert "Ratio run_tasks / separate" in (out / f"tasks-{tiny_folder.name}.md").read_text()


@pytest.mark.slow
def test_label_benchmark_smoke(shapes_onnx_folder, tmp_path):
    """benchmarks/label.py --smoke: both sides timed, labels equal to the loop's, JSON + markdown written."""
    out = tmp_path / "results"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "label.py"),
        "--smoke",
        "--model",
        str(shapes_onnx_folder),
    ]
    done = subprocess.run(
        [*cmd, "--cache", str(tmp_path / "cache"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((out / f"label-{shapes_onnx_folder.name}.json").read_text())
    assert result["labels_equal"] and set(result["images_per_s"]) == {"loop", "label"}
    assert "label / loop" in (out / f"label-{shapes_onnx_folder.name}.md").read_text()
