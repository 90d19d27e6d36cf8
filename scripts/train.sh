#!/usr/bin/env bash
# The main job: installs carrot with its training extras into .venv and runs `carrot train`
# (the built-in default unless arguments say otherwise, e.g. `bash scripts/train.sh --config configs/cub_resnet50.yaml`).
CARROT_EXTRAS=train source "$(dirname "$0")/_venv.sh"
exec .venv/bin/carrot train "$@"
