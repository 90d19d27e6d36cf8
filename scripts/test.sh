#!/usr/bin/env bash
# The test command: installs carrot with its dev extras into .venv (created if missing) and runs
# lint, type checks and the test suite, the multi-process and slow tests as their own steps.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || { echo "carrot needs Python >= 3.10 (found $("$PYTHON" --version)); set PYTHON=..." >&2; exit 1; }
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
export PYTHONDONTWRITEBYTECODE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
echo "== lint"; .venv/bin/ruff check src tests benchmarks
echo "== types"; .venv/bin/mypy
echo "== unit tests"; .venv/bin/python -m pytest -p no:cacheprovider -q -m "not distributed and not slow"
echo "== multi-process tests"; .venv/bin/python -m pytest -p no:cacheprovider -q -m distributed
