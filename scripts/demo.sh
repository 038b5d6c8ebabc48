#!/usr/bin/env bash
# The main job, offline: build a tiny RANDOM-weight Florence-2, export it to ONNX, run all 15 tasks
# with the torch-free runtime and check its tokens against transformers. Output in demo_out/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. "${VENV:-.venv}/bin/activate"
florence2 demo --workdir "${1:-demo_out}"
