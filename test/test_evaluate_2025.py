"""MIDOG 2025 evaluation: its ground truth, the platform's prediction layout, FROC, per-ROI-type results, the
platform's metric names and its input checks.

FROC is checked against `reference_froc` below: the 2025 definition written out with plain loops, evalutils'
`score_detection` for the matching, and hand-written interpolation and trapezoids. The one thing taken from numpy
on purpose is `np.argsort` of the false-positive rates: the platform orders the curve with it, the sort is not
stable, and among equal rates the last one wins, so that order is part of what the platform computes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_drawn_png
from evalutils.scorers import score_detection

from evaluation import evaluate as ev
from evaluation import inputs, metrics

MF, NMF = "mitotic figure", "non-mitotic figure"


def reference_froc(images: list[tuple[list, list, list]]) -> float | None:
    """images = [(gt_xy, pred_xy, pred_scores), ...]; None where the platform says NaN (no point at all)."""
    every_score = [score for _, _, scores in images for score in scores]
    if not every_score:
        return None
    low, high = min(every_score), max(every_score)
    thresholds = [low] if low == high else sorted(set(np.linspace(low, high, 40).tolist()))
    recalls, fp_rates = [], []
    for threshold in thresholds:
        tp = fn = fp = 0
        for gt, pred, scores in images:
            kept = [list(p) for p, s in zip(pred, scores, strict=True) if s >= threshold]
            result = score_detection(ground_truth=[list(g) for g in gt], predictions=kept, radius=7.5e-3)
            tp, fn, fp = tp + result.true_positives, fn + result.false_negatives, fp + result.false_positives
        recalls.append(tp / (tp + fn + 1e-6))
        fp_rates.append(fp / len(images))
    order = np.argsort(np.array(fp_rates))  # the platform's tie order (see the module docstring)
    xs, ys = [fp_rates[i] for i in order], [recalls[i] for i in order]

    def recall_at(x: float) -> float:
        if x < xs[0]:
            return 0.0
        j = max(i for i in range(len(xs)) if xs[i] <= x)
        if j == len(xs) - 1:
            return ys[-1]
        return ys[j] + (x - xs[j]) * (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j])

    grid = np.linspace(0.0, 8.0, 50).tolist()
    values = [recall_at(x) for x in grid]
    return sum((grid[k + 1] - grid[k]) * (values[k] + values[k + 1]) / 2 for k in range(len(grid) - 1))


def random_case(rng: np.random.Generator, n_images: int) -> dict:
    """Images with empty ground truth, no points, points on and near ground truth, duplicates and score ties."""
    images = {}
    for index in range(n_images):
        n_gt = int(rng.integers(0, 10))
        gt = rng.uniform(0.05, 0.3, size=(n_gt, 2))
        parts = [rng.uniform(0.05, 0.3, size=(int(rng.integers(0, 8)), 2))]
        if n_gt:
            picks = gt[rng.integers(0, n_gt, size=int(rng.integers(0, n_gt + 2)))]
            parts.append(picks + rng.normal(0, 0.005, size=picks.shape))
        pred = np.concatenate(parts)
        if len(pred) and rng.random() < 0.3:
            pred = np.concatenate([pred, pred[:2]])
        probability = np.round(rng.random(len(pred)), int(rng.integers(1, 4)))
        names = np.where(rng.random(len(pred)) < 0.7, MF, NMF)
        images[f"{index + 1:03d}.tiff"] = {
            "gt": gt,
            "pred": pred,
            "probability": probability,
            "names": names,
            "domain": int(rng.integers(0, 3)),
            "roi": inputs.ROI_TYPES[int(rng.integers(0, 3))],
        }
    return images


def points_document(pred, probability, names) -> dict:
    points = [
        {"name": str(name), "point": [float(x), float(y), 0], "probability": float(p)}
        for (x, y), p, name in zip(pred, probability, names, strict=True)
    ]
    return {"name": "Points of interest", "type": "Multiple points", "points": points, "version": {"major": 1}}


def write_platform(folder: Path, documents: dict[str, dict], order: list[str] | None = None) -> Path:
    """The grand-challenge evaluation layout: predictions.json + <pk>/output/mitotic-figures.json."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = []
    for index, name in enumerate(order or list(documents)):
        pk = f"0000-{index:04d}"
        (folder / pk / "output").mkdir(parents=True)
        (folder / pk / "output" / "mitotic-figures.json").write_text(json.dumps(documents[name]))
        jobs.append(
            {
                "pk": pk,
                "inputs": [
                    {"image": {"name": name}, "interface": {"slug": inputs.PLATFORM_INPUT_SLUG, "kind": "Image"}},
                ],
                "outputs": [
                    {"interface": {"slug": inputs.PLATFORM_OUTPUT_SLUG, "relative_path": "mitotic-figures.json"}},
                ],
                "status": "Succeeded",
            }
        )
    (folder / "predictions.json").write_text(json.dumps(jobs))
    return folder


def write_ground_truth_2025(path: Path, images: dict) -> Path:
    payload = {
        name: {
            "annotations": [[float(x), float(y), 0] for x, y in image["gt"]],
            "tumor domain": image["domain"],
            "roi type": image["roi"],
        }
        for name, image in images.items()
    }
    path.write_text(json.dumps(payload))
    return path


@pytest.mark.parametrize("seed", range(12))
def test_froc_and_leaderboard_equal_the_definition_on_random_cases(tmp_path, seed):
    """Empty images, images without a prediction file, per tumour domain and per ROI type included."""
    rng = np.random.default_rng(2025 + seed)
    images = random_case(rng, int(rng.integers(1, 7)))
    names = list(images)
    without_file = set(names[: int(rng.integers(0, 2))]) if len(names) > 1 else set()
    documents = {
        name: points_document(image["pred"], image["probability"], image["names"])
        for name, image in images.items()
        if name not in without_file
    }
    order = list(rng.permutation(list(documents))) if documents else []
    predictions = write_platform(tmp_path / "input", documents, order)
    gt_path = write_ground_truth_2025(tmp_path / "ground_truth.json", images)
    result = ev.evaluate(predictions, gt_path)
    assert result.predictions_layout == inputs.LAYOUT_PLATFORM and result.to_json()["rules"] == "2025"
    assert result.images.missing_predictions == sorted(Path(name).stem for name in without_file)

    def reference(selected: list[str]) -> tuple[float | None, list[int]]:
        rows, counts = [], np.zeros(3, dtype=int)
        for name in selected:
            image = images[name]
            pred = [] if name in without_file else image["pred"].tolist()
            probability = [] if name in without_file else image["probability"].tolist()
            rows.append((image["gt"].tolist(), pred, probability))
            mitotic = [p for p, n in zip(pred, image["names"], strict=False) if n == MF]
            scored = score_detection(ground_truth=image["gt"].tolist(), predictions=mitotic, radius=7.5e-3)
            counts += [scored.true_positives, scored.false_positives, scored.false_negatives]
        return reference_froc(rows), counts.tolist()

    def check(metrics: dict, leaderboard_prefix: str, selected: list[str]) -> None:
        expected_froc, (tp, fp, fn) = reference(selected)
        assert [metrics["tp"], metrics["fp"], metrics["fn"]] == [tp, fp, fn]
        board = result.scores.leaderboard
        f1_key = f"{leaderboard_prefix}f1" if leaderboard_prefix else "f1_score"
        assert board[f1_key] == pytest.approx((2 * tp + 1e-6) / (2 * tp + fp + fn + 1e-6), rel=1e-12)
        assert board[f"{leaderboard_prefix}precision"] == pytest.approx(tp / (tp + fp + 1e-6), rel=1e-12)
        assert board[f"{leaderboard_prefix}recall"] == pytest.approx(tp / (tp + fn + 1e-6), rel=1e-12)
        expected_ap = -1.0 if metrics["ap"] is None else float(np.float32(metrics["ap"]))
        assert board[f"{leaderboard_prefix}AP"] == expected_ap
        if expected_froc is None:
            assert metrics["froc"] is None and board[f"{leaderboard_prefix}froc_auc"] is None
        else:
            assert metrics["froc"] == pytest.approx(expected_froc, abs=1e-9)
            assert board[f"{leaderboard_prefix}froc_auc"] == metrics["froc"]

    check(result.scores.aggregates, "", names)
    for domain in sorted({str(image["domain"]) for image in images.values()}):
        selected = [name for name in names if str(images[name]["domain"]) == domain]
        check(result.scores.per_tumour_type[domain], f"tumor_{domain}_", selected)
    for roi in inputs.ROI_TYPES:
        selected = [name for name in names if images[name]["roi"] == roi]
        if selected:
            check(result.scores.per_roi_type[roi], f"roi_type_{roi}_", selected)
        else:  # the platform always reports all three ROI types, with its arithmetic on zero counts
            assert roi not in result.scores.per_roi_type
            assert result.scores.leaderboard[f"roi_type_{roi}_f1"] == 1.0
            assert result.scores.leaderboard[f"roi_type_{roi}_AP"] == -1.0
            assert result.scores.leaderboard[f"roi_type_{roi}_froc_auc"] is None


def test_froc_hand_computed_cases():
    gt = np.array([[0.1, 0.1]])
    # one true positive at 0.9, one false positive at 0.5 in one image: recall 1/2 at FP rates 0 and 1, flat after
    curve = metrics.froc([np.array([[0.1, 0.1], [0.2, 0.2]])], [np.array([[0.1, 0.1], [0.5, 0.5]])], [[0.9, 0.5]])
    assert curve.score == pytest.approx(8 / (2 + 1e-6), rel=1e-12)
    # below the lowest threshold two false positives and the hit; above it one false positive and no hit
    curve = metrics.froc([gt], [np.array([[0.1, 0.1], [0.5, 0.5], [0.6, 0.6]])], [[0.0, 0.0, 1.0]])
    assert curve.fp_per_image.tolist() == [2.0] + [1.0] * 39
    grid = np.linspace(0, 8, 50)
    recall = np.clip(grid - 1, 0, 1) / (1 + 1e-6)  # 0 left of FP rate 1, linear to 1 at FP rate 2, flat after
    assert curve.score == pytest.approx(float(np.sum(np.diff(grid) * (recall[1:] + recall[:-1]) / 2)), rel=1e-12)
    assert curve.score == pytest.approx(6.5, abs=0.02)  # the continuous area
    assert metrics.froc([gt], [np.zeros((0, 2))], [np.zeros(0)]) is None  # the platform: NaN
    single = metrics.froc([gt], [gt], [[0.7]])  # one probability: one threshold
    assert single.thresholds.tolist() == [0.7] and single.score == pytest.approx(8 / (1 + 1e-6))


def test_job_order_decides_ap_among_equal_scores(tmp_path):
    """Two images, one point each with the same score, one hit and one miss: ranked in the platform's job order."""
    images = {
        "001.tiff": {"gt": np.array([[0.1, 0.1]]), "domain": 0, "roi": "hotspot"},
        "002.tiff": {"gt": np.zeros((0, 2)), "domain": 0, "roi": "hotspot"},
    }
    gt_path = write_ground_truth_2025(tmp_path / "gt.json", images)
    documents = {
        "001.tiff": points_document([[0.1, 0.1]], [0.5], [MF]),
        "002.tiff": points_document([[0.2, 0.2]], [0.5], [MF]),
    }
    hit_first = ev.evaluate(write_platform(tmp_path / "a", documents, ["001.tiff", "002.tiff"]), gt_path)
    miss_first = ev.evaluate(write_platform(tmp_path / "b", documents, ["002.tiff", "001.tiff"]), gt_path)
    assert hit_first.scores.aggregates["ap"] == pytest.approx(1.0)
    assert miss_first.scores.aggregates["ap"] == pytest.approx(0.5)
    assert list(miss_first.scores.per_image) == ["001", "002"]  # tables stay in name order


def test_folder_and_platform_layouts_agree(tmp_path):
    rng = np.random.default_rng(5)
    images = random_case(rng, 4)
    documents = {name: points_document(i["pred"], i["probability"], i["names"]) for name, i in images.items()}
    folder = tmp_path / "folder"
    folder.mkdir()
    for name, document in documents.items():
        (folder / f"{Path(name).stem}.json").write_text(json.dumps(document))
    gt_path = write_ground_truth_2025(tmp_path / "gt.json", images)
    from_folder = ev.evaluate(folder, gt_path).to_json()
    from_platform = ev.evaluate(write_platform(tmp_path / "platform", documents), gt_path).to_json()
    assert from_folder.pop("predictions_layout") == "folder"
    assert from_platform.pop("predictions_layout") == "platform"
    assert from_folder == from_platform


def test_platform_layout_with_2022_ground_truth_keeps_2022_rules(tmp_path):
    document = {"type": "Multiple points", "points": [{"point": [0.1, 0.1, 0], "probability": 0.8}]}  # no name
    predictions = write_platform(tmp_path / "input", {"007.tiff": document})
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"007.tiff": [[0.1, 0.1, 0]], "008.tiff": []}))
    result = ev.evaluate(predictions, gt)
    assert result.scores.aggregates["tp"] == 1 and result.images.missing_predictions == ["008"]
    assert (
        result.scores.leaderboard["f1_score"] == pytest.approx(1.0)
        and "roi_type_hotspot_f1" not in result.scores.leaderboard
    )
    assert result.to_json()["rules"] == "2022"


def test_cli_report_on_the_2025_layout(tmp_path, capsys):
    rng = np.random.default_rng(11)
    images = random_case(rng, 5)
    documents = {name: points_document(i["pred"], i["probability"], i["names"]) for name, i in images.items()}
    del documents["005.tiff"]
    predictions = write_platform(tmp_path / "input", documents)
    gt_path = write_ground_truth_2025(tmp_path / "gt.json", images)
    report = tmp_path / "report"
    argv = ["--predictions", str(predictions), "--ground-truth", str(gt_path), "--report", str(report)]
    assert ev.main(argv) == 0
    out = capsys.readouterr().out
    assert "per ROI type" in out and "per tumour domain" in out and "FROC" in out
    assert "missing prediction files (counted as no detections): 005" in out
    for name in ("precision_recall.png", "f1_threshold.png", "froc.png"):
        assert_drawn_png(report / name)
    metrics = json.loads((report / "metrics.json").read_text())
    assert set(metrics["aggregates"]) >= {"tp", "fp", "fn", "precision", "recall", "f1", "ap", "froc"}
    board = metrics["leaderboard"]
    assert {"precision", "recall", "f1_score", "AP", "froc_auc"} <= set(board)
    for roi in inputs.ROI_TYPES:
        assert {f"roi_type_{roi}_{m}" for m in ("precision", "recall", "f1", "AP", "froc_auc")} <= set(board)
    for domain in {str(i["domain"]) for i in images.values()}:
        assert {f"tumor_{domain}_{m}" for m in ("precision", "recall", "f1", "AP", "froc_auc")} <= set(board)
    assert metrics["per_image"]["005"]["missing_prediction"] and "roi_type" in metrics["per_image"]["005"]
    assert set(metrics["per_roi_type"]) <= set(inputs.ROI_TYPES)


# ------------------------------------------------------------------------------------------------------ bad input


def _run(tmp_path, capsys, point: dict | None = None, predictions: Path | None = None, gt: object = None):
    if predictions is None:
        document = {"type": "Multiple points", "points": [point]}
        predictions = write_platform(tmp_path / "input", {"007.tiff": document})
    gt_path = tmp_path / "gt.json"
    default_gt = {"007.tiff": {"annotations": [[0.1, 0.1, 0]], "tumor domain": 0, "roi type": "hotspot"}}
    gt_path.write_text(json.dumps(default_gt if gt is None else gt))
    code = ev.main(["--predictions", str(predictions), "--ground-truth", str(gt_path)])
    captured = capsys.readouterr()
    return code, captured.err.strip(), captured.out


@pytest.mark.parametrize(
    ("point", "message"),
    [
        ({"point": [0.1, 0.1, 0], "probability": 0.5}, "no 'name'"),
        ({"name": MF, "point": [0.1, 0.1, 0]}, "'probability' must be a number in [0, 1]"),
        ({"name": "mitosis", "point": [0.1, 0.1, 0], "probability": 0.5}, "'name' must be one of"),
        ({"name": MF, "point": [-0.0076, 0.1, 0], "probability": 0.5}, "below -0.0075 mm"),
        ({"name": MF, "point": [0.1, -0.01, 0], "probability": 0.5}, "below -0.0075 mm"),
        ({"name": MF, "point": [0.1, 10.5, 0], "probability": 0.5}, "pixel coordinates"),
        ({"name": MF, "point": [400.0, 300.0, 0], "probability": 0.5}, "pixel coordinates"),
    ],
)
def test_2025_point_checks_name_the_file_and_the_point(tmp_path, capsys, point, message):
    code, err, _ = _run(tmp_path, capsys, point)
    assert code == 1
    assert len(err.splitlines()) == 1 and message in err
    assert "mitotic-figures.json" in err and "points[0]" in err and json.dumps(point["point"]) in err


def test_2025_checks_accept_the_edges(tmp_path, capsys):
    point = {"name": NMF, "point": [-0.0075, 10.0, 0], "probability": 0.0}
    code, err, out = _run(tmp_path, capsys, point)
    assert code == 0 and not err and "overall (micro)" in out


@pytest.mark.parametrize(
    ("gt", "message"),
    [
        ({"007.tiff": {"tumor domain": 0, "roi type": "hotspot"}}, "no 'annotations'"),
        ({"007.tiff": {"annotations": [], "tumor domain": 0, "roi type": "hot spot"}}, "'roi type' must be one of"),
        ({"007.tiff": {"annotations": [], "roi type": "random"}}, "'tumor domain' must be"),
        ({"007.tiff": {"annotations": [[400, 300, 0]], "tumor domain": 0, "roi type": "random"}}, "pixel coordinates"),
        ({"007.tiff": {"annotations": [], "tumor domain": 0, "roi type": "random"}, "008.tiff": []}, "neither"),
    ],
)
def test_bad_2025_ground_truth(tmp_path, capsys, gt, message):
    code, err, _ = _run(tmp_path, capsys, {"name": MF, "point": [0.1, 0.1, 0], "probability": 0.5}, gt=gt)
    assert code == 1 and len(err.splitlines()) == 1 and message in err


def _job(pk: str, image: str | None = "007.tiff", relative_path: str | None = "mitotic-figures.json") -> dict:
    job_inputs = [{"image": {"name": image}, "interface": {"slug": inputs.PLATFORM_INPUT_SLUG}}] if image else []
    interface = {"slug": inputs.PLATFORM_OUTPUT_SLUG}
    if relative_path:
        interface["relative_path"] = relative_path
    return {"pk": pk, "inputs": job_inputs, "outputs": [{"interface": interface}]}


@pytest.mark.parametrize(
    ("jobs", "message"),
    [
        ([_job("a", relative_path="absent.json")], "not found"),
        ([_job("a", image=None)], "expected one input image"),
        ([_job("a", relative_path=None)], "no 'relative_path'"),
        ([{"pk": "a", "inputs": _job("a")["inputs"], "outputs": []}], "no output with interface slug"),
        ([{"inputs": _job("a")["inputs"], "outputs": _job("a")["outputs"]}], "no 'pk'"),
        ([_job("a"), _job("b")], "already predicted by job [0]"),
        (["a"], "must be an object"),
    ],
)
def test_bad_platform_layout(tmp_path, capsys, jobs, message):
    predictions = tmp_path / "input"
    for pk in ("a", "b"):
        (predictions / pk / "output").mkdir(parents=True)
        document = points_document([[0.1, 0.1]], [0.5], [MF])
        (predictions / pk / "output" / "mitotic-figures.json").write_text(json.dumps(document))
    (predictions / "predictions.json").write_text(json.dumps(jobs))
    code, err, _ = _run(tmp_path, capsys, predictions=predictions)
    assert code == 1 and len(err.splitlines()) == 1 and message in err and "predictions.json" in err


def test_unreadable_predictions_json(tmp_path, capsys):
    predictions = tmp_path / "input"
    predictions.mkdir()
    (predictions / "predictions.json").write_text("[{")
    code, err, _ = _run(tmp_path, capsys, predictions=predictions)
    assert code == 1 and len(err.splitlines()) == 1 and "not readable JSON" in err
