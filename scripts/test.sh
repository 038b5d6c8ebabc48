#!/usr/bin/env bash
# The test command of the README: set up .venv (scripts/setup.sh), then run the suite in two pytest processes:
# tests/runtime first, with torch, torchvision, transformers and optimum unimportable
# (FLORENCE2_TESTS_BLOCK_TORCH=1, read by tests/conftest.py: the runtime must work without them), then the
# rest. Options go to both runs (e.g. -q, -x, -m "not slow"); a run that selects no test is not a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. "${VENV:-.venv}/bin/activate"

pytest_run() {
  local status=0
  python -m pytest "$@" || status=$?
  [ "$status" -eq 0 ] || [ "$status" -eq 5 ]  # 5: no test selected (e.g. -m gpu on tests/runtime)
}

FLORENCE2_TESTS_BLOCK_TORCH=1 pytest_run tests/runtime "$@"
pytest_run tests --ignore=tests/runtime "$@"
