#!/usr/bin/env bash
# Train the toy Florence-2 of models/florence2-tiny-shapes/ from scratch on generated shapes and words
# (CPU only, offline, 2 threads). With no trainer arguments it runs the committed model's recipe, two phases:
# 1800 steps from scratch (lr 1e-3), then 1500 more from those weights (lr 5e-4, seed 1); the committed
# checkpoint is this script's output: 40 min of wall time on an idle 2-core AMD EPYC Zen 4 (longer on a busy
# machine, where TRAIN_THREADS=1 is faster: two threads then wait on each other). With trainer arguments it runs
# one phase with them, e.g. a smoke run:
#   bash scripts/train_tiny.sh [OUT_DIR] [--steps N --threads N ...]
set -euo pipefail
cd "$(dirname "$0")/.."
out=models/florence2-tiny-shapes
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then out="$1"; shift; fi
if [ -z "${VIRTUAL_ENV:-}" ]; then
  bash scripts/setup.sh
  . "${VENV:-.venv}/bin/activate"
fi
if [ $# -gt 0 ]; then
  exec python -m florence2_export.toy.train_tiny "$out" "$@"
fi
phase1="$out.phase1"
threads="${TRAIN_THREADS:-2}"
python -m florence2_export.toy.train_tiny "$phase1" --threads "$threads"
python -m florence2_export.toy.train_tiny "$out" --init "$phase1" --steps 1500 --warmup 50 --lr 5e-4 --seed 1 \
  --threads "$threads"
rm -rf "$phase1"
