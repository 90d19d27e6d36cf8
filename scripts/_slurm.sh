#!/usr/bin/env bash
# Called by scripts/test.sh before the SLURM tests: installs Debian's slurm-wlm and munge when they
# are missing and this runs as root with apt-get (CI); otherwise says why the tests will be skipped.
# The tests start their own single-node cluster (tests/slurm_cluster.py); nothing is started here.
set -uo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
if command -v slurmctld >/dev/null && command -v munged >/dev/null && command -v sbatch >/dev/null; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "SLURM tests will be skipped: slurm-wlm and munge are missing and cannot be installed here" \
        "(needs root and apt-get: apt-get install slurm-wlm munge)." >&2
    exit 0
fi
echo "installing slurm-wlm and munge (apt-get) for the SLURM tests"
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq slurm-wlm munge >/dev/null; }; then
    echo "SLURM tests will be skipped: apt-get install slurm-wlm munge failed." >&2
fi
exit 0
