#!/usr/bin/env bash
# GPU checks on a machine with an NVIDIA GPU and onnxruntime-gpu installed:
#   1. the tests marked gpu (tests/runtime/test_gpu.py: CUDA and, when present, TensorRT tokens vs the CPU
#      path; tests/export/test_precision.py: fp16 vs fp32 on CUDA);
#   2. benchmarks/gpu.py: per-stage and per-token latency of full-size random-weight base and large.
# The test side needs torch + transformers (to build tiny checkpoints); the runtime itself does not.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" - <<'PYCHECK' || exit 2
import sys
import onnxruntime as o
if "CUDAExecutionProvider" not in o.get_available_providers():
    sys.exit(f"gpu_check: onnxruntime {o.__version__} has no CUDAExecutionProvider "
             f"({o.get_available_providers()}); install onnxruntime-gpu")
PYCHECK
export PYTHONPATH="$PWD/runtime:$PWD/export${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -m pytest -q -p no:cacheprovider -m gpu tests -rs
if [ -f benchmarks/gpu.py ] && [ "${SKIP_BENCH:-0}" != 1 ]; then
  "$PY" benchmarks/gpu.py "$@"
fi
