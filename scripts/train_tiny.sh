#!/usr/bin/env bash
# Train the toy Florence-2 of models/florence2-tiny-shapes/ from scratch on generated shapes and words
# (CPU only, offline; about 1 CPU-second per step of 32 examples on one Zen 4 core, so the default 800 steps
# take ~15 min of CPU; far longer on a busy machine). Extra arguments go to the trainer, e.g. --steps 20:
#   bash scripts/train_tiny.sh [OUT_DIR] [--steps N --threads N ...]
set -euo pipefail
cd "$(dirname "$0")/.."
out=models/florence2-tiny-shapes
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then out="$1"; shift; fi
if [ -z "${VIRTUAL_ENV:-}" ]; then
  bash scripts/setup.sh
  . "${VENV:-.venv}/bin/activate"
fi
python -m florence2_export.toy.train_tiny "$out" "$@"
