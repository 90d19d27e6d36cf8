#!/usr/bin/env bash
# The test command: installs carrot with its dev extras into .venv and runs lint, type checks and
# the tests; the multi-process, the slow end-to-end and the SLURM tests run as their own steps
# (the SLURM tests on a single-node cluster they start; scripts/_slurm.sh installs it as root; the
# slow step's PostgreSQL tests on a server they start; scripts/_postgres.sh installs it as root).
CARROT_EXTRAS=dev source "$(dirname "$0")/_venv.sh"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
echo "== lint"; .venv/bin/ruff check src tests benchmarks examples
echo "== types"; .venv/bin/mypy
echo "== unit tests"; .venv/bin/python -m pytest -p no:cacheprovider -q -m "not distributed and not slow and not slurm"
echo "== multi-process tests"; .venv/bin/python -m pytest -p no:cacheprovider -q -m "distributed and not slurm"
echo "== slow tests"; bash scripts/_postgres.sh
.venv/bin/python -m pytest -p no:cacheprovider -q -m "slow and not distributed and not slurm"
echo "== SLURM tests"; bash scripts/_slurm.sh
PATH="$PATH:/usr/sbin:/sbin" .venv/bin/python -m pytest -p no:cacheprovider -q -m slurm
