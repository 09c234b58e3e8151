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

# 2. Training (seeded; checkpoints and logs under model_weights/training_*/). The segmentation
#    network is the vertebra finder, trained on sagittal phantoms made on the fly (it finds
#    bodies and the sacrum; naming.py counts the levels): its own script reproduces it. The
#    regression network learns from the synthetic cohort's patches.
PYTHON="$BIN/python" scripts/train_vertebra_finder.sh model_weights/finder_run  # copies the weights into model_weights/
"$BIN/osteobmd" train regression "$DATA/train_A" --out model_weights --epochs 15 --jitter 4 --seed 0 --threads 1

# 3. Measure the test cohorts and evaluate (BMD and, on the sagittal slab, segmentation).
mkdir -p "$REPORT"
for v in A B C; do
  runs="$DATA/runs/test_${v}_none"
  "$BIN/osteobmd" batch "$DATA/test_$v" --out "$runs" --workers "$WORKERS" --no-scene
  "$BIN/osteobmd" evaluate "$runs" --reference "$DATA/test_$v/reference.csv" \
    --labels-pred "$runs" --labels-ref "$DATA/test_$v" --out "$REPORT/test_${v}_none" --overwrite
done
# 4. The other vendors again with the internal (air/fat) HU calibration, on the same predicted
#    masks (--mask), so only the calibration differs.
for v in B C; do
  csv="$DATA/runs/masks_$v.csv"
  echo "case_id,path,mask" > "$csv"
  for c in "$DATA/test_$v"/case_*; do
    n=$(basename "$c")
    [ -f "$DATA/runs/test_${v}_none/$n/labels.nrrd" ] && echo "$n,$c/ct.nrrd,$DATA/runs/test_${v}_none/$n/labels.nrrd" >> "$csv"
  done
  "$BIN/osteobmd" batch "$csv" --out "$DATA/runs/test_${v}_internal" --workers "$WORKERS" --calibration internal --no-scene
  "$BIN/osteobmd" evaluate "$DATA/runs/test_${v}_internal" --reference "$DATA/test_$v/reference.csv" \
    --out "$REPORT/test_${v}_internal" --overwrite
done
"$BIN/python" scripts/summarize_evaluation.py "$REPORT" > "$REPORT/README.md"
