"""benchmarks/gpu.py in its smoke mode (tiny model, CPU provider): the script runs and writes its report."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers.paths import ROOT


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
