"""`python -m evaluation.evaluate` on bad input: one `error:` line naming the file and the problem, exit code 1.

Each case here used to end in a traceback or, worse, in exit code 0 with a plausible score. Reports are written whole
or not at all, never onto an input, and a failure leaves the old report as it was.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.output import MITOTIC_FIGURE, NON_MITOTIC_FIGURE
from evaluation import evaluate as ev
from evaluation import inputs, report
from model.spacing import PLAUSIBLE_SPACING_MM

REPO = Path(__file__).resolve().parents[1]
GOOD_POINT = {"name": MITOTIC_FIGURE, "point": [0.1, 0.1, 0], "probability": 0.9}


def document(*points: dict) -> dict:
    return {"name": "Points of interest", "type": "Multiple points", "points": list(points), "version": {"major": 1}}


def write(path: Path, content: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def setup(tmp_path: Path, gt: object = None, prediction: object = None) -> tuple[Path, Path]:
    """A predictions folder with 001.json and a ground-truth file; both good unless given."""
    predictions = tmp_path / "predictions"
    predictions.mkdir(exist_ok=True)
    write(predictions / "001.json", document(GOOD_POINT) if prediction is None else prediction)
    gt_path = write(tmp_path / "gt.json", {"001.tiff": [[0.1, 0.1, 0]]} if gt is None else gt)
    return predictions, gt_path


def run(capsys, predictions: Path, gt: Path, *options: str) -> tuple[int, str, str]:
    code = ev.main(["--predictions", str(predictions), "--ground-truth", str(gt), *options])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error(code: int, err: str, *expected: str) -> None:
    assert code == 1
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for text in expected:
        assert text in lines[0], (text, lines[0])


# ------------------------------------------------------------------------------------- nothing to score, ambiguity


def midog(images: list[dict], annotations: list[dict]) -> dict:
    return {"images": images, "annotations": annotations, "categories": []}


def box(image_id: object, category: int = 1) -> dict:
    return {"bbox": [375, 375, 425, 425], "category_id": category, "image_id": image_id}


@pytest.mark.parametrize(
    ("gt", "message"),
    [
        ({}, "no image to evaluate"),
        (midog([{"file_name": "360.tiff", "id": 1}], []), "no image to evaluate (1 unlabelled images skipped)"),
        ({"001.tiff": [], "002.tiff": []}, "no mitotic figure in any of its 2 images"),
        ({"001.tiff": {"annotations": [], "tumor domain": 0, "roi type": "random"}}, "no mitotic figure"),
        (midog([{"file_name": "001.tiff", "id": 1}], [box(1, category=2)]), "mitoses are category_id 1"),
    ],
)
def test_ground_truth_without_anything_to_score_is_refused(tmp_path, capsys, gt, message):
    predictions, gt_path = setup(tmp_path, gt=gt)
    code, out, err = run(capsys, predictions, gt_path)
    assert_one_error(code, err, str(gt_path), message)
    assert "overall" not in out


def test_an_image_without_mitoses_among_others_is_scored(tmp_path, capsys):
    """Legitimate (MIDOG 2025 random regions can be empty): only a ground truth without any mitosis is refused."""
    predictions, gt_path = setup(tmp_path, gt={"001.tiff": [[0.1, 0.1, 0]], "002.tiff": []})
    code, out, err = run(capsys, predictions, gt_path)
    assert code == 0 and not err and "overall (micro)" in out


@pytest.mark.parametrize(
    ("gt", "message"),
    [
        ({"001.tiff": [[0.1, 0.1, 0]], "001.tif": [[0.2, 0.2, 0]]}, 'images "001.tiff" and "001.tif"'),
        ({"a/001.tiff": [[0.1, 0.1, 0]], "b/001.tiff": []}, 'same name stem "001"'),
        (
            {
                "001.tiff": {"annotations": [[0.1, 0.1, 0]], "tumor domain": 0, "roi type": "random"},
                "001.TIF": {"annotations": [], "tumor domain": 1, "roi type": "hotspot"},
            },
            "prediction file 001.json would belong to both",
        ),
        (
            midog([{"file_name": "001.tiff", "id": 1}, {"file_name": "scans/001.tif", "id": 2}], [box(1)]),
            "same name stem",
        ),
        ('{"001.tiff": [[0.1, 0.1, 0]], "001.tiff": []}', 'the key "001.tiff" appears twice'),
        (
            midog([{"file_name": "001.tiff", "id": 1}, {"file_name": "002.tiff", "id": 1}], [box(1)]),
            'images "001.tiff" and "002.tiff" have the same id 1',
        ),
        (midog([{"file_name": "001.tiff", "id": [1]}], []), "an integer or string 'id'"),
        (midog([{"file_name": "001.tiff", "id": True}], []), "an integer or string 'id'"),
        (midog([{"file_name": "001.tiff", "id": 1}], [box([1])]), "annotation without a known 'image_id'"),
    ],
)
def test_ambiguous_ground_truth_is_refused(tmp_path, capsys, gt, message):
    predictions, gt_path = setup(tmp_path, gt=gt)
    code, _, err = run(capsys, predictions, gt_path)
    assert_one_error(code, err, str(gt_path), message)


def test_predictions_that_belong_to_no_image_are_refused(tmp_path, capsys):
    _, gt_path = setup(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_error(*run(capsys, empty, gt_path)[::2], f"--predictions {empty}: no prediction file")
    platform = tmp_path / "platform"
    write(platform / "predictions.json", [])
    assert_one_error(*run(capsys, platform, gt_path)[::2], "no prediction file")
    other = tmp_path / "other"
    write(other / "7.json", document(GOOD_POINT))
    assert_one_error(*run(capsys, other, gt_path)[::2], "none of its 1 prediction files belongs to a ground-truth")


# ------------------------------------------------------------------------------------------------------ spacing


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "0", "-0.25", "0.01", "400", "4e11"])
def test_implausible_spacing_is_refused_before_anything_is_read(tmp_path, capsys, monkeypatch, value):
    """4e11 um/px put a 1000 px box centre 400 km away: F1 0 and exit 0 before."""
    predictions, gt_path = setup(tmp_path, gt=midog([{"file_name": "001.tiff", "id": 1}], [box(1)]))
    monkeypatch.setattr(ev, "evaluate", lambda *args: pytest.fail("evaluated despite the spacing"))
    code, _, err = run(capsys, predictions, gt_path, f"--spacing-um={value}")  # "=": "-inf" is not an option
    low, high = (limit * 1000 for limit in PLAUSIBLE_SPACING_MM)  # a microscope's, 0.05-5 um/px
    assert_one_error(code, err, "--spacing-um must be", f"{low:g}-{high:g} um/px", f"got {float(value)}")


def test_spacing_in_range_that_puts_points_outside_any_region_is_refused(tmp_path, capsys):
    gt = midog([{"file_name": "001.tiff", "id": 1}], [{"bbox": [7000, 10, 7050, 60], "category_id": 1, "image_id": 1}])
    predictions, gt_path = setup(tmp_path, gt=gt)
    code, _, err = run(capsys, predictions, gt_path, "--spacing-um", "2")
    assert_one_error(code, err, str(gt_path), '"001.tiff" at 2 um/px', "check --spacing-um")
    assert run(capsys, predictions, gt_path, "--spacing-um", "0.25")[0] == 0  # 1.76 mm: fine


# ------------------------------------------------------------------------------------------- JSON that crashed


DEEP = "[" * 100_000 + "]" * 100_000
LONG_NUMBER = "1" + "0" * 5000


@pytest.mark.parametrize("which", ["prediction", "ground truth", "predictions.json"])
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (DEEP, "nested deeper than Python can parse"),
        ('{"001.tiff": [[0.1, 0.1, ' + LONG_NUMBER + "]]}", "Exceeds the limit (4300 digits)"),
        (b"\xff\xfe{}".decode("latin-1"), None),
    ],
)
def test_json_that_python_cannot_parse_is_one_line(tmp_path, capsys, which, content, message):
    predictions, gt_path = setup(tmp_path)
    if which == "prediction":
        bad = write(predictions / "001.json", content)
    elif which == "ground truth":
        bad = write(gt_path, content)
    else:
        bad = write(predictions / "predictions.json", content)
    if message is None:  # not UTF-8
        bad.write_bytes(b"\xff\xfe{}")
        message = "not UTF-8"
    code, _, err = run(capsys, predictions, gt_path)
    assert_one_error(code, err, str(bad), "not readable JSON", message)
    assert "set_int_max_str_digits" not in err


@pytest.mark.parametrize(
    ("point", "message"),
    [
        ({"name": MITOTIC_FIGURE, "point": [int("9" * 400), 0.1, 0], "probability": 0.5}, "3 finite numbers"),
        ({"name": MITOTIC_FIGURE, "point": [0.1, 0.1, 0], "probability": int("9" * 400)}, "'probability'"),
        ({"name": [MITOTIC_FIGURE], "point": [0.1, 0.1, 0], "probability": 0.5}, "'name' must be one of"),
        ({"name": MITOTIC_FIGURE, "point": [True, 0.1, 0], "probability": 0.5}, "3 finite numbers"),
        ({"name": MITOTIC_FIGURE, "point": list(range(100_000)), "probability": 0.5}, "3 finite numbers"),
    ],
)
def test_points_that_crashed_are_named(tmp_path, capsys, point, message):
    """Integers too large for a float (valid JSON) overflowed `math.isfinite`; a list as name was unhashable; a huge
    value is cut in the message rather than printed whole."""
    predictions, gt_path = setup(tmp_path, prediction=document(GOOD_POINT, point))
    code, _, err = run(capsys, predictions, gt_path)
    assert_one_error(code, err, str(predictions / "001.json"), "points[1]", message)
    assert len(err) < 600


def test_an_image_name_with_thousands_of_digits_is_scored(tmp_path, capsys):
    """Its id (the first integer of the name) has more digits than int() accepts: no id, tumour type unknown."""
    long_name = "1" * 5000 + ".tiff"
    predictions, gt_path = setup(tmp_path, gt={"001.tiff": [[0.1, 0.1, 0]], long_name: [[0.2, 0.2, 0]]})
    code, out, err = run(capsys, predictions, gt_path)
    assert code == 0 and not err and "unknown" in out


def test_column_check_reads_valid_points_as_the_point_check_would(tmp_path):
    """Whole-column reading (the fast path) keeps integers, unnamed 2022 points and 0 / 1 probabilities as before."""
    points = [
        {"point": [1, 0.5, 0], "probability": 1},
        {"name": NON_MITOTIC_FIGURE, "point": [0.25, 2, 0], "probability": 0},
        {"name": MITOTIC_FIGURE, "point": [0.125, 0.0625, 0.0], "probability": 0.5},
    ]
    path = write(tmp_path / "001.json", document(*points))
    assert inputs._read_valid_points(points, rules_2025=False) is not None  # the column path is the one taken
    read = inputs.read_predictions(path)
    assert read.xy_mm.tolist() == [[1.0, 0.5], [0.25, 2.0], [0.125, 0.0625]]
    assert read.probability.tolist() == [1.0, 0.0, 0.5] and read.is_mitosis.tolist() == [True, False, True]
    assert all(inputs._point_problem(point, rules_2025=False) is None for point in points)
    with pytest.raises(inputs.EvaluationInputError, match="no 'name'"):
        inputs.read_predictions(path, rules_2025=True)


def test_the_command_itself_prints_one_line(tmp_path):
    """The real entry point (no pytest around it): deep nesting in a prediction file, exit code 1, no traceback."""
    predictions, gt_path = setup(tmp_path, prediction=DEEP)
    command = ["-m", "evaluation.evaluate", "--predictions", str(predictions), "--ground-truth", str(gt_path)]
    result = subprocess.run(
        [sys.executable, *command],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and "001.json" in result.stderr


# ------------------------------------------------------------------------------------------------------- report


def good_run(tmp_path: Path) -> tuple[Path, Path, Path]:
    predictions, gt_path = setup(tmp_path, gt={"001.tiff": [[0.1, 0.1, 0]], "002.tiff": [[0.3, 0.3, 0]]})
    return predictions, gt_path, tmp_path / "report"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_report_destinations_that_are_refused_before_work(tmp_path, capsys, monkeypatch):
    predictions, gt_path, _ = good_run(tmp_path)
    monkeypatch.setattr(ev, "evaluate", lambda *args: pytest.fail("evaluated although the report cannot be written"))
    gt_before = gt_path.read_bytes()
    a_file = write(tmp_path / "notes.txt", "keep me")
    in_report = write(tmp_path / "old" / "metrics.json", gt_path.read_text())
    cases = [
        (gt_path, "is an input file of this evaluation"),
        (predictions / "001.json", "is an input file of this evaluation"),
        (a_file, "is a file, not a folder"),
        (a_file / "report", "is a file, not a folder"),
        (predictions, "is the predictions folder"),
    ]
    for destination, message in cases:
        code, _, err = run(capsys, predictions, gt_path, "--report", str(destination))
        assert_one_error(code, err, f"--report {destination}", message)
    code, _, err = run(capsys, predictions, in_report, "--report", str(in_report.parent))
    assert_one_error(code, err, "writing metrics.json there would replace the input file")
    assert gt_path.read_bytes() == gt_before and a_file.read_text() == "keep me" and in_report.exists()
    assert snapshot(predictions).keys() == {"001.json"}


def test_unwritable_report_folder_is_refused_before_work(tmp_path, capsys, monkeypatch):
    predictions, gt_path, report_dir = good_run(tmp_path)
    report_dir.mkdir()
    monkeypatch.setattr(ev, "evaluate", lambda *args: pytest.fail("evaluated although the report cannot be written"))

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(report.tempfile, "mkstemp", denied)  # what a read-only folder answers (root ignores modes)
    code, _, err = run(capsys, predictions, gt_path, "--report", str(report_dir))
    assert_one_error(code, err, f"--report {report_dir}", "not writable by user id")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_report_folder_is_refused(tmp_path, capsys):
    predictions, gt_path, report_dir = good_run(tmp_path)
    report_dir.mkdir()
    report_dir.chmod(0o500)
    try:
        code, _, err = run(capsys, predictions, gt_path, "--report", str(report_dir))
    finally:
        report_dir.chmod(0o700)
    assert_one_error(code, err, "not writable")


def fail_with_full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["os.replace", "os.fsync", "savefig"])
def test_full_disk_while_writing_the_report_keeps_the_old_one(tmp_path, capsys, monkeypatch, where):
    predictions, gt_path, report_dir = good_run(tmp_path)
    assert run(capsys, predictions, gt_path, "--report", str(report_dir))[0] == 0
    old = snapshot(report_dir)
    assert set(old) == set(report.REPORT_FILES)
    write(predictions / "002.json", document(GOOD_POINT))  # a different evaluation: a different report
    if where == "savefig":
        from matplotlib.figure import Figure

        calls = []

        def savefig_then_fail(self, *args, **kwargs):  # the second figure meets the full disk
            calls.append(1)
            if len(calls) == 2:
                fail_with_full_disk()
            return original(self, *args, **kwargs)

        original = Figure.savefig
        monkeypatch.setattr(Figure, "savefig", savefig_then_fail)
    else:
        monkeypatch.setattr(report.os, where.split(".")[1], fail_with_full_disk)
    code, out, err = run(capsys, predictions, gt_path, "--report", str(report_dir))
    assert_one_error(code, err, f"cannot write the report to {report_dir}", "No space left on device (old report kept)")
    assert "overall (micro)" in out  # the tables were printed before
    assert snapshot(report_dir) == old  # untouched, and no temporary file left behind
    monkeypatch.undo()
    assert run(capsys, predictions, gt_path, "--report", str(report_dir))[0] == 0
    new = snapshot(report_dir)
    assert set(new) == set(old) and new["metrics.json"] != old["metrics.json"]


def test_a_rename_failing_after_others_says_what_was_replaced(tmp_path, capsys, monkeypatch):
    """Renames need no space, so this is not a full disk; the one case the old report is not whole, and it says so."""
    predictions, gt_path, report_dir = good_run(tmp_path)
    renames = []

    def second_rename_fails(source, destination):
        renames.append(destination)
        if len(renames) == 2:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return original(source, destination)

    original = os.replace
    monkeypatch.setattr(report.os, "replace", second_rename_fails)
    code, _, err = run(capsys, predictions, gt_path, "--report", str(report_dir))
    assert_one_error(code, err, "Input/output error", "already replaced: metrics.json")
    assert sorted(path.name for path in report_dir.iterdir()) == ["metrics.json"]  # no temporary file left


def test_report_without_points_replaces_an_older_froc_curve(tmp_path, capsys):
    """Every report writes all its files: an old froc.png never stays beside numbers that have no FROC curve."""
    predictions, gt_path, report_dir = good_run(tmp_path)
    assert run(capsys, predictions, gt_path, "--report", str(report_dir))[0] == 0
    old_froc = (report_dir / "froc.png").read_bytes()
    write(predictions / "001.json", document())
    assert run(capsys, predictions, gt_path, "--report", str(report_dir))[0] == 0
    assert json.loads((report_dir / "metrics.json").read_text())["aggregates"]["froc"] is None
    assert (report_dir / "froc.png").read_bytes() != old_froc


def test_an_empty_platform_job_list_beside_per_image_files_says_which_layout_and_why(tmp_path):
    """`predictions.json` holding `[]` picks the platform's layout, which then has no job: say so and name the
    per-image files it hides, instead of "no prediction file"."""
    (tmp_path / "predictions.json").write_text("[]")
    (tmp_path / "001.json").write_text(json.dumps({"type": "Multiple points", "points": []}))
    with pytest.raises(inputs.EvaluationInputError, match=r"empty list.*001\.json.*remove or rename predictions\.json"):
        inputs.find_prediction_files(tmp_path)
    (tmp_path / "001.json").unlink()  # alone, an empty job list is an empty platform run
    assert inputs.find_prediction_files(tmp_path).paths == {}
