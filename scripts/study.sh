#!/usr/bin/env bash
# The study of docs/results.md: every registered method (`carrot methods --json`, plus X+carrot
# wherever the registry accepts that composition) on the study suite
# (digits, Fashion-MNIST 100/class and the hard synthetic set from scratch, and the synthetic
# transfer target fine-tuned from a backbone pretrained per seed), development seeds 0-4, then
# held-out seeds 5-9, then the ablation suite on seeds 0-4; all into one folder, so that the CE runs
# and the pretrained backbones the ablation shares with the study run once. Then it rewrites the
# study section of docs/results.md from the reports, with each part's measured wall time.
#
#   bash scripts/study.sh [OUT]          # OUT defaults to results/study
#
# Sized for 90 minutes on 2 idle CPU cores with about 20 methods (docs/results.md, "Sizing").
# Environment: JOBS (cells at once, default 2), THREADS (per cell, default 1), METHODS (a
# space-separated list instead of the registry's), DEV_SEEDS (0-4), HELDOUT_SEEDS (5-9),
# PARTS (default "dev heldout ablation"), DOC (the page to rewrite, default docs/results.md; empty:
# none). An interrupted study resumes: finished cells are kept, a cut-off one continues.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results/study}
JOBS=${JOBS:-2}
THREADS=${THREADS:-1}
DEV_SEEDS=${DEV_SEEDS:-0-4}
HELDOUT_SEEDS=${HELDOUT_SEEDS:-5-9}
PARTS=${PARTS-dev heldout ablation}
DOC=${DOC-docs/results.md}
PY=${PYTHON:-.venv/bin/python}
CARROT=${CARROT:-.venv/bin/carrot}
export OMP_NUM_THREADS=$THREADS

mkdir -p "$OUT"
if [[ -z "${METHODS:-}" ]]; then
  METHODS=$("$PY" benchmarks/study.py methods)
fi
echo "$METHODS" > "$OUT/methods.txt"
# shellcheck disable=SC2086  # one word per method
"$PY" benchmarks/study.py suite "$OUT/study.yaml" $METHODS
echo "methods: $METHODS"

TIMES="$OUT/times.tsv"
run() {  # run PART COMMAND...: time one part, append "part<TAB>seconds<TAB>command" to times.tsv
  local part=$1
  shift
  local start end
  start=$(date +%s)
  "$@"
  end=$(date +%s)
  grep -v "^${part}"$'\t' "$TIMES" > "$TIMES.tmp" 2> /dev/null || true
  mv "$TIMES.tmp" "$TIMES"
  printf '%s\t%s\t%s\n' "$part" "$((end - start))" "carrot ${*:2}" >> "$TIMES"
  echo "== $part: $(((end - start) / 60)) min $(((end - start) % 60)) s"
}

FAN=(--jobs "$JOBS" --threads "$THREADS" --out "$OUT")
for part in $PARTS; do
  case $part in
    dev) run dev "$CARROT" bench accuracy --suite "$OUT/study.yaml" --seeds "$DEV_SEEDS" \
           --report-name study_dev "${FAN[@]}" ;;
    heldout) run heldout "$CARROT" bench accuracy --suite "$OUT/study.yaml" \
               --seeds "$HELDOUT_SEEDS" --report-name study_heldout "${FAN[@]}" ;;
    ablation) run ablation "$CARROT" bench accuracy --suite ablation --seeds "$DEV_SEEDS" \
                --report-name ablation "${FAN[@]}" ;;
    *) echo "unknown part $part (dev, heldout, ablation)" >&2; exit 2 ;;
  esac
done

if [[ -n "$DOC" ]]; then
  "$PY" benchmarks/study.py doc "$OUT" "$DOC"
  echo "rewrote the study section of $DOC (images in $(dirname "$DOC")/img/)"
fi
