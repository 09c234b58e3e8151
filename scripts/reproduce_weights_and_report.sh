#!/usr/bin/env bash
# Regenerates the shipped weights (model_weights/) and the evaluation report (docs/evaluation/)
# from the package's own synthetic cohort. On a 2-core CPU: about 1.5 hours.
# Usage: scripts/reproduce_weights_and_report.sh [DATA_DIR]   (needs `make setup` first)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
DATA=${1:-data/synthetic}
REPORT=docs/evaluation
N_TRAIN=${N_TRAIN:-200}
N_TEST=${N_TEST:-40}
WORKERS=${WORKERS:-2}

# 1. Cohorts: training on vendor A; three held-apart test cohorts like the paper's
#    (A: the training scanner, B: reads low, C: reads high), seeds never used in training.
"$BIN/osteobmd" synth "$DATA/train_A" --n "$N_TRAIN" --seed0 0 --vendor A --workers "$WORKERS" --lateral-mm 240
seed0=100000
for v in A B C; do
  "$BIN/osteobmd" synth "$DATA/test_$v" --n "$N_TEST" --seed0 "$seed0" --vendor "$v" --workers "$WORKERS"
  seed0=$((seed0 + 100000))
done

# 2. Training (seeded; checkpoints every 20 epochs and logs under model_weights/training_*/).
"$BIN/osteobmd" train segmentation "$DATA/train_A" --out model_weights \
  --widths 8,16,32,64,128 --epochs 30 --samples-per-epoch 512 --batch-size 8 --seed 0 --threads 2
"$BIN/osteobmd" train regression "$DATA/train_A" --out model_weights --epochs 30 --jitter 4 --seed 0

# 3. Measure the test cohorts (raw HU, and with the internal air/fat calibration) and evaluate.
for v in A B C; do
  for cal in none internal; do
    runs="$DATA/runs/test_${v}_$cal"
    "$BIN/osteobmd" batch "$DATA/test_$v" --out "$runs" --workers "$WORKERS" --calibration "$cal" --no-scene
    "$BIN/osteobmd" evaluate "$runs" --reference "$DATA/test_$v/reference.csv" \
      --labels-pred "$runs" --labels-ref "$DATA/test_$v" --out "$REPORT/test_${v}_$cal" --overwrite
  done
done
"$BIN/python" scripts/summarize_evaluation.py "$REPORT" > "$REPORT/README.md"
