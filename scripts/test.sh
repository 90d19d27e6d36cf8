#!/usr/bin/env bash
# The test command: installs carrot with its dev extras into .venv and runs lint, type checks and
# the tests; the multi-process and the slow end-to-end tests run as their own steps.
CARROT_EXTRAS=dev source "$(dirname "$0")/_venv.sh"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
echo "== lint"; .venv/bin/ruff check src tests benchmarks examples
echo "== types"; .venv/bin/mypy
echo "== unit tests"; .venv/bin/python -m pytest -p no:cacheprovider -q -m "not distributed and not slow"
echo "== multi-process tests"; .venv/bin/python -m pytest -p no:cacheprovider -q -m distributed
echo "== slow tests"; .venv/bin/python -m pytest -p no:cacheprovider -q -m "slow and not distributed"
