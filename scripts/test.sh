#!/usr/bin/env bash
# The test command of the README: set up .venv (scripts/setup.sh), then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. "${VENV:-.venv}/bin/activate"
python -m pytest "$@"
