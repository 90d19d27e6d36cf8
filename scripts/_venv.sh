# Sourced by the scripts in this folder: makes .venv (Python >= 3.10) and installs carrot with the
# extras named in $CARROT_EXTRAS into it. With CARROT_TORCH_INDEX set (e.g. PyTorch's CPU-only
# wheels, https://download.pytorch.org/whl/cpu), torch and torchvision come from that index first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || { echo "carrot needs Python >= 3.10 (found $("$PYTHON" --version 2>&1)); set PYTHON=..." >&2; exit 1; }
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if [ -n "${CARROT_TORCH_INDEX:-}" ] && ! .venv/bin/python -c 'import torch' 2>/dev/null; then
    .venv/bin/python -m pip install --quiet torch torchvision --index-url "$CARROT_TORCH_INDEX"
fi
.venv/bin/python -m pip install --quiet -e ".[${CARROT_EXTRAS}]"
export PYTHONDONTWRITEBYTECODE=1
