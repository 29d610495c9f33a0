#!/usr/bin/env bash
# Worked example: make a small synthetic MIDOG-format dataset, detect mitoses in every image, score the detections
# with the challenge's rules and write plots.
#
#   bash examples/synthetic_worked_example.sh [WORK_DIR]     (default: out/worked-example; about a minute on 2 CPUs)
#
# The shipped model was trained on real H&E, not on this synthetic data: the point is the workflow, not the score.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-out/worked-example}
python -m training.data.synthetic --out "$work/dataset" --images 2 --seed 7 --size 1024 1024
python process.py --input "$work/dataset" --output-dir "$work/predictions"
python -m evaluation.evaluate --predictions "$work/predictions" --ground-truth "$work/dataset/MIDOG2022_training.json" \
    --report "$work/report"
ls "$work/report"
