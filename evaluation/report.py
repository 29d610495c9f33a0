"""The `--report` folder: metrics.json and the figures, written whole or not at all, never onto an input.

An evaluation can take minutes on a large test set, so everything that can be known about the destination is checked
before it starts (`check_report_destination`): the folder can be created and written, it is not the predictions
folder, and no report file would land on the ground truth or a prediction file. Writing then goes in two steps: every
file is first written to a temporary file in the report folder, and only when all of them are complete are they renamed
over the old ones (`os.replace`, atomic per file). A full disk, a vanished folder or any other failure while writing
therefore leaves the previous report as it was and no temporary file behind. (Only a rename failing after others
succeeded, which a full disk does not cause since renames need no space, could mix old and new files; the message then
names the files already replaced.)
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.preflight import folder_write_problem, same_file
from evaluation.metrics import FROC_MAX_FP_PER_IMAGE

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from evaluation.result import Evaluation

METRICS_FILE = "metrics.json"
PRECISION_RECALL_FILE = "precision_recall.png"
F1_THRESHOLD_FILE = "f1_threshold.png"
FROC_FILE = "froc.png"
REPORT_FILES: tuple[str, ...] = (METRICS_FILE, PRECISION_RECALL_FILE, F1_THRESHOLD_FILE, FROC_FILE)
"""Every file a report holds (froc.png too when there is no FROC curve, so that no older curve stays beside new
numbers)."""


class ReportError(Exception):
    """The report cannot be written where `--report` says; the message is one line naming the path and the problem."""


def format_value(value: float | None) -> str:
    """A ratio as the tables and figure titles show it: 4 decimals, "-" where it is undefined."""
    return "-" if value is None else f"{value:.4f}"


def check_report_destination(report_dir: Path, predictions_dir: Path, input_files: Iterable[Path]) -> None:
    """Refuse, before any work, a `--report` folder the report cannot or must not be written to.

    `input_files` are the files the evaluation reads (the ground truth, every prediction file, `predictions.json`):
    a `--report` that is one of them, or a folder in which a report file would replace one of them, is refused, as
    is the predictions folder itself (its `metrics.json` would be read as the predictions of an image "metrics").
    Also refused: a folder that cannot be created or written, and a missing matplotlib (needed for the figures).
    """
    report_dir = Path(report_dir)
    inputs = [Path(path) for path in input_files]
    for path in inputs:
        if same_file(report_dir, path):
            raise ReportError(f"--report {report_dir} is an input file of this evaluation, not a folder for the report")
    if report_dir.exists() and not report_dir.is_dir():
        raise ReportError(f"--report {report_dir} is a file, not a folder")
    if same_file(report_dir, predictions_dir):
        raise ReportError(
            f"--report {report_dir} is the predictions folder: its {METRICS_FILE} would be read as predictions later"
        )
    for name in REPORT_FILES:
        for path in inputs:
            if same_file(report_dir / name, path):
                raise ReportError(f"--report {report_dir}: writing {name} there would replace the input file {path}")
    problem = folder_write_problem(report_dir)
    if problem is not None:
        raise ReportError(f"--report {report_dir}: {problem}")
    try:
        import matplotlib  # noqa: F401  (the figures; the evaluation itself needs only numpy and scipy)
    except ImportError:
        raise ReportError("--report needs matplotlib (pip install matplotlib); the tables alone do not") from None


def _new_axes(width_in: float, height_in: float) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure  # object API: no pyplot state, no global backend switch

    figure = Figure(figsize=(width_in, height_in))
    return figure, figure.subplots()


def _precision_recall_figure(evaluation: Evaluation) -> Figure:
    curve = evaluation.curves.curve
    figure, axes = _new_axes(5, 5)
    axes.plot(curve.recall, curve.precision, lw=1, alpha=0.6, label="raw")
    axes.plot(curve.recall_thresholds, curve.interpolated_precision, lw=1.5, label="101-point interpolated")
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    axes.set_title(f"AP@0.5 = {format_value(curve.ap)} (all points)")
    axes.legend(loc="lower left")
    return figure


def _f1_threshold_figure(evaluation: Evaluation) -> Figure:
    figure, axes = _new_axes(6, 4)
    # keep-if-p>=t: the counts at threshold t_i hold on (t_(i-1), t_i], hence "steps-pre"
    for metric in ("f1", "precision", "recall"):
        values = [getattr(c, metric) for c in evaluation.curves.threshold_counts]
        values = [np.nan if value is None else value for value in values]
        axes.plot(
            evaluation.curves.thresholds, values, drawstyle="steps-pre", lw=1.5 if metric == "f1" else 1, label=metric
        )
    best = evaluation.curves.best_threshold
    if best is not None:
        axes.axvline(best["threshold"], color="grey", ls="--", lw=1)
        axes.set_title(f"best threshold {best['threshold']:.4g}: F1 {format_value(best['f1'])}")
    axes.set(xlabel="probability threshold ('mitotic figure' points kept if >=)", ylabel="score", xlim=(0, 1))
    axes.legend(loc="lower left")
    return figure


def _froc_figure(evaluation: Evaluation) -> Figure:
    froc_curve = evaluation.curves.froc_curve
    figure, axes = _new_axes(6, 4)
    axes.set(xlabel="false positives per image", ylabel="recall", xlim=(0, FROC_MAX_FP_PER_IMAGE), ylim=(0, 1.02))
    if froc_curve is None:  # no point at all: the platform's FROC is NaN, there is no curve to draw
        axes.set_title("no FROC curve: no point in any image (the platform reports NaN)")
        return figure
    order = np.argsort(froc_curve.fp_per_image, kind="stable")
    axes.plot(froc_curve.fp_per_image[order], froc_curve.recall[order], "o", ms=3, label="thresholds")
    axes.plot(froc_curve.fp_grid, froc_curve.recall_on_grid, lw=1.5, label="interpolated")
    axes.set_title(f"FROC score {froc_curve.score:.4f} (area, 0..{FROC_MAX_FP_PER_IMAGE:g}; all points)")
    axes.legend(loc="lower right")
    return figure


def _write_json(data: dict, stream_path: Path) -> None:
    with open(stream_path, "w") as stream:
        json.dump(data, stream, indent=2)
        stream.write("\n")
        stream.flush()
        os.fsync(stream.fileno())  # a full disk shows here, before anything is renamed


def _write_png(figure: Figure) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        figure.savefig(path, format="png", dpi=100, bbox_inches="tight")

    return write


def write_report(evaluation: Evaluation, report_dir: Path) -> list[Path]:
    """Write metrics.json, the precision-recall curve, F1 against the probability threshold and the FROC curve.

    All or nothing: each file goes to a temporary file in `report_dir` first; the old files are replaced only once
    every new one is complete, and a failure removes the temporary files and leaves the old report untouched.

    Raises
    ------
    ReportError
        When a file cannot be written (a full disk, permissions changed since `check_report_destination`); the
        message says whether the old report is whole (a failure while writing) or which files were already replaced
        (a rename failing after others succeeded: renames need no space, so not a full disk).
    """
    report_dir = Path(report_dir)
    writers: dict[str, Callable[[Path], None]] = {
        METRICS_FILE: lambda path: _write_json(evaluation.to_json(), path),
        PRECISION_RECALL_FILE: _write_png(_precision_recall_figure(evaluation)),
        F1_THRESHOLD_FILE: _write_png(_f1_threshold_figure(evaluation)),
        FROC_FILE: _write_png(_froc_figure(evaluation)),
    }
    staged: dict[str, Path] = {}
    replaced: list[str] = []
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
        for name, write in writers.items():
            handle, temporary = tempfile.mkstemp(dir=report_dir, prefix=f".{name}.", suffix=".tmp")
            os.close(handle)
            staged[name] = Path(temporary)
            write(staged[name])
            os.chmod(staged[name], 0o644)  # mkstemp creates 0600; a report is read by others
        for name, temporary in staged.items():
            os.replace(temporary, report_dir / name)
            replaced.append(name)
    except OSError as error:
        kept = f"already replaced: {', '.join(replaced)}" if replaced else "old report kept"
        raise ReportError(f"cannot write the report to {report_dir}: {error.strerror or error} ({kept})") from None
    finally:
        for temporary in staged.values():
            temporary.unlink(missing_ok=True)  # gone after os.replace; left only by a failure
    return [report_dir / name for name in writers]
