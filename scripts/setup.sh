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
# transformers.js for tests/parity/test_transformers_js.py: the npm package pinned in tests/node (only where npm
# exists; re-installed when package-lock.json changes). onnxruntime-node's install script would fetch
# CUDA binaries from GitHub when it finds nvcc; the CPU binaries in its npm package are all the test needs.
if command -v npm >/dev/null 2>&1; then
  stamp=tests/node/node_modules/.florence2-lock
  if ! cmp -s tests/node/package-lock.json "$stamp" 2>/dev/null; then
    if (cd tests/node && ONNXRUNTIME_NODE_INSTALL_CUDA=skip npm ci --no-audit --no-fund --loglevel=error); then
      cp tests/node/package-lock.json "$stamp"
    else
      echo "warning: 'npm ci' in tests/node failed; tests/parity/test_transformers_js.py will fail" >&2
    fi
  fi
fi
# Chromium for tests/server/test_browser.py (the try-it page in a real browser, driven by playwright from the dev
# extra): Debian's package, never a browser build of playwright's own. Where it cannot be installed the
# test is skipped and says so.
if [ -z "${FLORENCE2_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1 \
    && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium (Debian package) for tests/server/test_browser.py" >&2
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1
    then
      echo "warning: could not install chromium; tests/server/test_browser.py will be skipped" >&2
    fi
  else
    echo "note: no chromium and no root apt-get here; tests/server/test_browser.py will be skipped" >&2
  fi
fi
