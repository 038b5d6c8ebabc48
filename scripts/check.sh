#!/usr/bin/env bash
# The code checks CI runs before the tests (CONTRIBUTING.md): lint, layout, and the types of both packages.
#   bash scripts/check.sh        # sets up .venv first (scripts/setup.sh) unless a virtualenv is active
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ]; then
  bash scripts/setup.sh
  . "${VENV:-.venv}/bin/activate"
fi
echo "ruff check"; ruff check .
echo "ruff format --check"; ruff format --check .
echo "mypy (runtime/, export/)"; mypy
