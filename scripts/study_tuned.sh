#!/usr/bin/env bash
# The tuned, pre-registered study (docs/study_protocol.md), resumable, into OUT:
#   1. tune ce, carrot, label_smoothing, maxent, pairwise_confusion, center_loss and isda (8 trials
#      each) and the guide's recipe (its shared settings only) on synth_hard's validation split;
#      pick B, the best tuned baseline; tune B+carrot with the same budget;
#   2.-4. confirm every method, tuned and untuned, on seeds 10-14 of synth_hard, digits, fmnist100
#      (the full training sets), each part its own report, in the protocol's order;
#   5. all datasets in one report (Holm, TOST with δ = 1, Bayesian over datasets, Friedman).
# Each part's wall time goes to OUT/times.tsv. An interrupted study resumes with the same command.
#
#   bash scripts/study_tuned.sh [OUT]       # OUT defaults to results/study_tuned
#
# Environment: JOBS (workers / cells at once, default 2), PARTS (default "tune synth_hard digits
# fmnist100 all"), TRIALS (8).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results/study_tuned}
JOBS=${JOBS:-2}
TRIALS=${TRIALS:-8}
PARTS=${PARTS-tune synth_hard digits fmnist100 all}
PY=${PYTHON:-.venv/bin/python}
CARROT=${CARROT:-.venv/bin/carrot}
export OMP_NUM_THREADS=1
mkdir -p "$OUT"
TIMES="$OUT/times.tsv"
touch "$TIMES"

run() {  # run PART COMMAND...: time one part into times.tsv
  local part=$1 start end
  shift
  start=$(date +%s)
  "$@"
  end=$(date +%s)
  grep -v "^${part}"$'\t' "$TIMES" > "$TIMES.tmp" || true
  mv "$TIMES.tmp" "$TIMES"
  printf '%s\t%s\n' "$part" "$((end - start))" >> "$TIMES"
  echo "== $part: $(((end - start) / 60)) min $(((end - start) % 60)) s"
}

# The synth_hard cell of the packaged study suite, with the protocol's validation split.
BASE=(train.eval_batch_size=500 train.progress=false train.retrieval=false train.plots=false
  train.tensorboard=false data.num_workers=0 model.backbone=carrot_cnn
  "model.timm_kwargs.widths=[16, 32, 64]" data.name=synthetic data.options.difficulty=0.75
  data.options.train_per_class=30 data.options.test_per_class=20 data.options.image_size=16
  data.image_size=16 train.batch_size=64 train.epochs=6 train.eval_every=3 train.lr=0.05 seed=0
  data.val_split=fraction data.val_fraction=0.2 data.val_seed=0)
TUNE=(--trials "$TRIALS" --jobs "$JOBS" --seed 0 --pruner median --objective top1)
GUIDE_SPACE="$OUT/guide_space.yaml"
printf 'carrot:\n  carrot.lam: null\n  carrot.T: null\n  carrot.max_gamma: null\n  carrot.radius_factor: null\n' > "$GUIDE_SPACE"

tune() {
  "$CARROT" tune --methods ce carrot label_smoothing maxent pairwise_confusion center_loss isda \
    --out "$OUT/tune" "${TUNE[@]}" "${BASE[@]}"
  "$CARROT" tune --methods carrot --space "$GUIDE_SPACE" --out "$OUT/tune_guide" "${TUNE[@]}" \
    "${BASE[@]}" carrot.guide=true
  local b
  b=$("$PY" benchmarks/study_tuned.py best-baseline "$OUT/tune")
  echo "B (the best tuned baseline) = $b"
  echo "$b" > "$OUT/best_baseline.txt"
  "$CARROT" tune --methods "$b+carrot" --out "$OUT/tune_plus" "${TUNE[@]}" "${BASE[@]}"
}

suite() {
  "$PY" benchmarks/study_tuned.py suite "$OUT" "$OUT/tune" "$OUT/tune_guide" \
    "$(cat "$OUT/best_baseline.txt")" "$OUT/tune_plus"
}

FAN=(--jobs "$JOBS" --threads 1 --out "$OUT/confirm" --equivalence-margin 1.0)
for part in $PARTS; do
  case $part in
    tune) run tune tune ;;
    synth_hard | digits | fmnist100)
      [[ -f "$OUT/study_tuned.yaml" ]] || suite
      run "$part" "$CARROT" bench accuracy --suite "$OUT/study_tuned.yaml" --datasets "$part" \
        --report-name "confirm_$part" "${FAN[@]}" ;;
    all)
      run all "$CARROT" bench accuracy --suite "$OUT/study_tuned.yaml" --report-only \
        --report-name confirm_all "${FAN[@]}" ;;
    *) echo "unknown part $part (tune synth_hard digits fmnist100 all)" >&2; exit 2 ;;
  esac
done
