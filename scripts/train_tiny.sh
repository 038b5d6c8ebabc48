#!/usr/bin/env bash
# Train the toy Florence-2 of models/florence2-tiny-shapes/ from scratch on generated shapes and words
# (CPU only, offline; ~45 min on 2 idle cores). Extra arguments go to the trainer, e.g. --steps 20 for a smoke run:
#   bash scripts/train_tiny.sh [OUT_DIR] [--steps N --threads N ...]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-models/florence2-tiny-shapes}"
shift || true
if [ -z "${VIRTUAL_ENV:-}" ]; then
  bash scripts/setup.sh
  . "${VENV:-.venv}/bin/activate"
fi
python -m florence2_export.train_tiny "$out" "$@"
