"""One CSV row per validation of a run (`metrics.csv`): what `training.figures.plot_training_curves` draws.

Why CSV appended row by row: a resumed run continues the same file (rows of the killed process stay, the header is
written once), and the file is readable while the run goes on (pandas, a spreadsheet, `tail`).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

__all__ = ["METRICS_COLUMNS", "METRICS_FILE", "MetricsLog"]

METRICS_FILE = "metrics.csv"
"""The log's file name in a run folder."""

METRICS_COLUMNS: tuple[str, ...] = (
    "iteration",  # iterations done when validated
    "train_loss",  # mean training loss since the previous row
    "val_loss",
    "val_ap",
    "val_ap_calibrated",
    "field_ap",  # empty when the data has no validation fields, or the run exports snapshots instead
    "field_f1",
    "lr",  # learning rate of the last iteration
    "seconds",  # wall time since this process started training (a resumed run starts again from 0)
)
"""The header, in file order; `training.figures` reads the columns by name."""

_OPTIONAL_COLUMNS = frozenset({"field_ap", "field_f1"})


class MetricsLog:
    """Appends rows to a run's `metrics.csv`, writing the header only when the file does not exist yet."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, row: Mapping[str, object]) -> None:
        """Write one row: every `METRICS_COLUMNS` name must be in `row` except the field metrics (left empty).

        Raises KeyError naming a missing column, so a renamed metric cannot silently shift the columns."""
        missing = [name for name in METRICS_COLUMNS if name not in row and name not in _OPTIONAL_COLUMNS]
        if missing:
            raise KeyError(f"metrics row lacks column(s) {missing}")
        new_file = not self.path.exists()
        with open(self.path, "a", newline="") as handle:
            writer = csv.writer(handle)
            if new_file:
                writer.writerow(METRICS_COLUMNS)
            writer.writerow([row.get(name, "") for name in METRICS_COLUMNS])
