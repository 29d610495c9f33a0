#!/usr/bin/env bash
# The whole training pipeline in about a minute: synthetic MIDOG-format dataset -> base model -> hard-negative search
# -> stain-unmixing enrichment -> final models A and B -> threshold -> bundle, then detection with that bundle and the
# challenge's evaluation. The `tiny` config trains a narrow twin of the network for a few iterations, so the numbers
# mean nothing; it shows (and CI checks) that every stage runs and that its bundle is what process.py loads.
#
#   bash examples/tiny_training_pipeline.sh [WORK_DIR]     (default: out/tiny-pipeline)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-out/tiny-pipeline}
python -m training.data.synthetic --out "$work/dataset" --images 6 --unlabeled 1 --seed 3 --size 768 768 --no-progress
python -m training.pipeline --config tiny --data "$work/dataset" --out "$work/run"
python process.py --input "$work/dataset" --output-dir "$work/predictions" --bundle "$work/run/bundle"
python -m evaluation.evaluate --predictions "$work/predictions" --ground-truth "$work/dataset/MIDOG2022_training.json"
ls "$work/run"
