#!/usr/bin/env bash
# Called by scripts/test.sh before the slow tests: installs Debian's postgresql when it is missing
# and this runs as root with apt-get (CI); otherwise says why the PostgreSQL tests will be skipped.
# The tests start their own server (tests/tune/test_postgres.py); nothing is started here.
set -uo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "PostgreSQL tests will be skipped: postgresql is missing and cannot be installed here" \
        "(needs root and apt-get: apt-get install postgresql)." >&2
    exit 0
fi
echo "installing postgresql (apt-get) for the carrot tune storage tests"
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; }; then
    echo "PostgreSQL tests will be skipped: apt-get install postgresql failed." >&2
fi
exit 0
