"""training.metrics_log: the CSV that `training.figures` draws, continued across resumed processes."""

from __future__ import annotations

import csv

import pytest

from training.figures import plot_training_curves
from training.metrics_log import METRICS_COLUMNS, MetricsLog


def row(iteration: int, **extra: float) -> dict[str, float]:
    values = {"iteration": iteration, "train_loss": 0.7, "val_loss": 0.6, "val_ap": 0.5, "val_ap_calibrated": 0.25}
    return values | {"lr": 0.01, "seconds": 1.5} | extra


def test_header_once_and_columns_in_file_order(tmp_path):
    path = tmp_path / "metrics.csv"
    MetricsLog(path).append(row(1, field_ap=0.125, field_f1=0.25))
    MetricsLog(path).append(row(2))  # another process (a resumed run) appends to the same file
    with open(path, newline="") as handle:
        lines = list(csv.reader(handle))
    assert tuple(lines[0]) == METRICS_COLUMNS
    assert lines[1] == ["1", "0.7", "0.6", "0.5", "0.25", "0.125", "0.25", "0.01", "1.5"]
    assert lines[2][5:7] == ["", ""]  # no field metrics: empty cells
    assert len(lines) == 3


def test_extra_keys_are_ignored_and_missing_ones_refused(tmp_path):
    log = MetricsLog(tmp_path / "metrics.csv")
    log.append(row(1, threshold=0.5))
    without_loss = row(2)
    del without_loss["val_loss"]
    with pytest.raises(KeyError, match="val_loss"):
        log.append(without_loss)


def test_the_plots_read_it(tmp_path):
    log = MetricsLog(tmp_path / "metrics.csv")
    for iteration in (1, 2, 3):
        log.append(row(iteration))
    plot_training_curves(tmp_path / "metrics.csv", tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0
