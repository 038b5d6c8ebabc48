#!/usr/bin/env bash
# The main job, offline: export the toy Florence-2 trained on generated shapes and words
# (models/florence2-tiny-shapes), run all 15 tasks on fresh images with the torch-free runtime, draw the
# answers (demo_out/demo_answers.png) and check its tokens against transformers. Output in demo_out/.
# `bash scripts/demo.sh DIR --random` runs the same path on a RANDOM-weight checkpoint instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. "${VENV:-.venv}/bin/activate"
florence2 demo --workdir "${1:-demo_out}" "${@:2}"
