#!/usr/bin/env bash
# Create .venv and install the project with its dev extra (runtime + exporter + tests).
# PyTorch: a CPU build is installed first (TORCH_SPEC, default torch==2.13.0, which these
# machines take from local disk), so the export extra's open 'torch>=2.6' needs nothing more.
# Users elsewhere may install any torch they like before running this script.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
# quiet pip; drop the local-index notices some machines print, keep pip's exit status
pip_q() { python -m pip install --disable-pip-version-check -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }
if ! python -c "import torch" 2>/dev/null; then
  pip_q "${TORCH_SPEC:-torch==2.13.0}"
fi
pip_q -e ".[dev]"
python -c "import torch, transformers, onnxruntime, florence2_runtime, florence2_export" \
  || { echo "setup failed: the imports above do not work" >&2; exit 1; }
