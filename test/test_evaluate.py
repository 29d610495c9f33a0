"""Offline evaluation equals the challenge's: evalutils counts for F1, COCO AP@0.5 on +/-11.25 um boxes for AP.

torchmetrics' MeanAveragePrecision needs torchvision, which this project does not install, so AP is checked against
`reference_coco_ap` below (a literal transcription of pycocotools' `evaluateImg` + `accumulate` for one class, one
IoU threshold, one area range: the backend torchmetrics uses) and, where the dev requirements are installed, against
pycocotools' COCOeval itself fed as torchmetrics feeds it (float32 boxes and scores). Only that last test needs
pycocotools: everything else runs without it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import assert_drawn_png
from evalutils.scorers import score_detection

from app import output
from evaluation import evaluate as ev
from evaluation import metrics


def reference_coco_ap(images: list[tuple[list, list, list]]) -> float:
    """pycocotools, written out with plain loops: images = [(gt_xy, det_xy, det_scores), ...]; -1 without gt."""
    half = metrics.AP_BOX_HALF_SIZE_MM

    def iou(a, b):  # pycocotools maskApi bbIou on xywh boxes
        ax, ay, bx, by = a[0] - half, a[1] - half, b[0] - half, b[1] - half
        w = min(ax + 2 * half, bx + 2 * half) - max(ax, bx)
        h = min(ay + 2 * half, by + 2 * half) - max(ay, by)
        if w <= 0 or h <= 0:
            return 0.0
        inter = w * h
        return inter / ((2 * half) ** 2 * 2 - inter)

    scores_all, matched_all, n_gt = [], [], 0
    for gts, dets, scores in images:
        n_gt += len(gts)
        order = np.argsort([-s for s in scores], kind="mergesort")
        gt_matched = [False] * len(gts)
        for d in order:
            best, m = min(0.5, 1 - 1e-10), -1
            for g in range(len(gts)):
                if gt_matched[g]:
                    continue
                value = iou(dets[d], gts[g])
                if value < best:
                    continue
                best, m = value, g
            if m >= 0:
                gt_matched[m] = True
            scores_all.append(scores[d])
            matched_all.append(m >= 0)
    if n_gt == 0:
        return -1.0
    inds = np.argsort([-s for s in scores_all], kind="mergesort")
    tps = np.array(matched_all, dtype=bool)[inds]
    tp_sum, fp_sum = np.cumsum(tps).astype(float), np.cumsum(~tps).astype(float)
    rc = tp_sum / n_gt
    pr = list(tp_sum / (fp_sum + tp_sum + np.spacing(1)))
    for i in range(len(pr) - 1, 0, -1):
        if pr[i] > pr[i - 1]:
            pr[i - 1] = pr[i]
    rec_thrs = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
    q = np.zeros(len(rec_thrs))
    inds = np.searchsorted(rc, rec_thrs, side="left")
    for ri, pi in enumerate(inds):
        if pi < len(pr):
            q[ri] = pr[pi]
    return float(np.mean(q))


def random_image(rng: np.random.Generator, empty_ok: bool = True, radius_offset_mm: float = 0.0):
    """Points in a 0.2 mm field (dense enough for many matches, duplicates, and points at exactly the radius).

    A point exactly at the 7.5 um radius also has box IoU exactly 0.5 (boxes are 3 radii wide), where float rounding
    alone decides; AP tests move those points by `radius_offset_mm` so that both implementations see the same side.
    """
    n_gt = int(rng.integers(0 if empty_ok else 1, 12))
    gt = rng.uniform(0.1, 0.3, size=(n_gt, 2))
    parts = [rng.uniform(0.1, 0.3, size=(rng.integers(0, 8), 2))]
    if n_gt:
        picks = gt[rng.integers(0, n_gt, size=rng.integers(0, n_gt + 2))]
        parts.append(picks + rng.normal(0, 0.006, size=picks.shape))
        parts.append(gt[:2] + [metrics.MATCH_RADIUS_MM + radius_offset_mm, 0.0])  # at the radius
    pred = np.concatenate(parts)
    if len(pred) and rng.random() < 0.5:
        pred = np.concatenate([pred, pred[: rng.integers(1, 4)]])  # exact duplicates
    probability = np.round(rng.random(len(pred)), int(rng.integers(1, 4)))  # rounding makes score ties
    is_mitosis = rng.random(len(pred)) < 0.7
    return gt, pred, probability, is_mitosis


def write_prediction(path, xy_mm, probability, is_mitosis, unnamed=False):
    points = []
    for (x, y), p, mitosis in zip(xy_mm, probability, is_mitosis, strict=True):
        point = {"point": [float(x), float(y), 0], "probability": float(p)}
        if not (unnamed and mitosis):
            point["name"] = output.MITOTIC_FIGURE if mitosis else output.NON_MITOTIC_FIGURE
        points.append(point)
    document = {"name": "Points of interest", "type": "Multiple points", "points": points, "version": {"major": 1}}
    path.write_text(json.dumps(document))


@pytest.mark.parametrize("seed", range(25))
def test_f1_counts_equal_evalutils_summed_over_images(tmp_path, seed):
    rng = np.random.default_rng(seed)
    predictions_dir = tmp_path / "predictions"
    predictions_dir.mkdir()
    ground_truth, expected = {}, np.zeros(3, dtype=int)
    for index in range(int(rng.integers(1, 5))):
        gt, pred, probability, is_mitosis = random_image(rng)
        name = f"{index + 1:03d}"
        ground_truth[f"{name}.tiff"] = [[float(x), float(y), 0] for x, y in gt]
        write_prediction(predictions_dir / f"{name}.json", pred, probability, is_mitosis, unnamed=seed % 2 == 0)
        result = score_detection(ground_truth=gt.tolist(), predictions=pred[is_mitosis].tolist(), radius=7.5e-3)
        expected += [result.true_positives, result.false_positives, result.false_negatives]
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(ground_truth))
    aggregates = ev.evaluate(predictions_dir, gt_path).scores.aggregates
    assert [aggregates["tp"], aggregates["fp"], aggregates["fn"]] == expected.tolist()
    tp, fp, fn = expected
    assert aggregates["f1"] == (pytest.approx(2 * tp / (2 * tp + fp + fn)) if 2 * tp + fp + fn else None)


@pytest.mark.parametrize("seed", range(60))
def test_ap_equals_pycocotools_reference_on_random_cases(seed):
    rng = np.random.default_rng(1000 + seed)
    offset_mm = 1e-7 if seed % 2 else -1e-7
    images = [random_image(rng, seed % 4 != 0, offset_mm) for _ in range(int(rng.integers(1, 5)))]
    gts, preds, scores = [i[0] for i in images], [i[1] for i in images], [i[2] for i in images]
    expected = reference_coco_ap(
        [(g.tolist(), p.tolist(), s.tolist()) for g, p, s in zip(gts, preds, scores, strict=True)]
    )
    actual = metrics.average_precision(gts, preds, scores).ap
    if expected == -1.0:
        assert actual is None
    else:
        assert actual == pytest.approx(expected, abs=1e-4)


def test_ap_hand_computed_cases():
    one = np.array([[1.0, 1.0]])
    assert metrics.average_precision([one], [one], [[0.9]]).ap == pytest.approx(1.0)
    # A higher-scored false positive first: precision 1/2 at recall 1 everywhere -> AP 0.5
    assert metrics.average_precision([one], [np.array([[2.0, 2.0], [1.0, 1.0]])], [[0.9, 0.8]]).ap == pytest.approx(0.5)
    # The box half size decides: 1/3 box shift -> IoU 0.5 exactly counts; beyond does not
    shift = 2 * metrics.AP_BOX_HALF_SIZE_MM / 3
    assert metrics.average_precision([one], [one + [shift * 0.99, 0]], [[0.5]]).ap == pytest.approx(1.0)
    assert metrics.average_precision([one], [one + [shift * 1.01, 0]], [[0.5]]).ap == 0.0
    assert metrics.average_precision([one], [np.zeros((0, 2))], [[]]).ap == 0.0
    assert metrics.average_precision([np.zeros((0, 2))], [one], [[0.5]]).ap is None


def test_f1_by_threshold_equals_direct_evaluation():
    rng = np.random.default_rng(7)
    images = [random_image(rng) for _ in range(4)]
    gts = [i[0] for i in images]
    preds = [i[1][i[3]] for i in images]
    scores = [i[2][i[3]] for i in images]
    thresholds, counts = metrics.f1_by_threshold(gts, preds, scores)
    assert len(thresholds) == len(np.unique(np.concatenate(scores)))
    for threshold, total in zip(thresholds, counts, strict=True):
        direct = sum(
            (metrics.detection_counts(g, p[s >= threshold]) for g, p, s in zip(gts, preds, scores, strict=True)),
            metrics.Counts(),
        )
        assert total == direct
    best = metrics.best_threshold(thresholds, counts)
    assert best["f1"] == max(c.f1 for c in counts if c.f1 is not None)


def crowded_image(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Targets and predictions in a field a few radii wide: long greedy chains, coincident targets, duplicate
    predictions, points at exactly the radius, and score ties (rounded to 0-2 decimals). Half the cases put every
    point on a grid of 2^-10 mm and mirror targets across the diagonal, on which a third of the predictions lie: a
    target and its mirror image are then exactly as far from such a prediction (and overlap it exactly as much, x and
    y swapped), so the tie rules decide."""
    radius = metrics.MATCH_RADIUS_MM
    span = float(rng.choice([0.02, 0.05, 0.2]))
    gt = rng.uniform(0, span, size=(int(rng.integers(0, 15)), 2))
    pred = rng.uniform(0, span, size=(int(rng.integers(0, 30)), 2))
    if rng.random() < 0.5:
        gt, pred = np.round(gt * 1024) / 1024, np.round(pred * 1024) / 1024
        gt = rng.permutation(np.concatenate([gt, gt[:, ::-1]]))[: max(len(gt), 1)] if len(gt) else gt
        pred[: len(pred) // 3, 1] = pred[: len(pred) // 3, 0]
    if len(gt) and len(pred):
        k = min(len(gt), len(pred))
        pred[:k] = gt[:k] + rng.choice([[radius, 0.0], [0.0, radius], [0.0, 0.0], [-radius, 0.0]], size=k)
    if len(pred) > 2:
        pred[-2:] = pred[:2]
    if len(gt) > 2:
        gt[-1] = gt[0]
    return gt, pred, np.round(rng.random(len(pred)), int(rng.integers(0, 3)))


@pytest.mark.parametrize("seed", range(20))
def test_threshold_sweep_equals_greedy_matching_of_every_kept_set(seed):
    """The one-pass sweep (F1 by threshold, FROC) against the brute force it replaced: `greedy_match` re-run on the
    points kept at each threshold."""
    from evaluation.threshold_sweep import sweep_thresholds
    from model.matching import greedy_match

    rng = np.random.default_rng(seed)
    for _ in range(50):
        gt, pred, scores = crowded_image(rng)
        sweep = sweep_thresholds(gt, pred, scores, metrics.MATCH_RADIUS_MM)
        assert sweep.thresholds.tolist() == np.unique(scores).tolist() and sweep.n_targets == len(gt)
        for threshold, tp, kept in zip(sweep.thresholds, sweep.tp, sweep.kept, strict=True):
            keep = scores >= threshold
            assert (tp, kept) == (len(greedy_match(gt, pred[keep], metrics.MATCH_RADIUS_MM)), keep.sum())
        above = sweep.at(np.array([2.0]))
        assert above[0].tolist() == [0] and above[1].tolist() == [0]


def dense_coco_matches(targets: np.ndarray, predictions: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The full predictions x ground-truth IoU matrix, as the AP matching did before it looked only at nearby pairs."""
    is_tp = np.zeros(len(scores), dtype=bool)
    if len(targets) == 0 or len(scores) == 0:
        return is_tp
    a, b = metrics._boxes(predictions), metrics._boxes(targets)
    width = np.minimum(a[:, None, 2] + a[:, None, 0], b[None, :, 2] + b[None, :, 0])
    width = width - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3] + a[:, None, 1], b[None, :, 3] + b[None, :, 1])
    height = height - np.maximum(a[:, None, 1], b[None, :, 1])
    overlapping = (width > 0) & (height > 0)
    intersection = np.where(overlapping, width * height, 0.0)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - intersection
    iou = np.where(overlapping, intersection / np.where(overlapping, union, 1.0), 0.0)
    taken = np.zeros(len(targets), dtype=bool)
    for prediction in np.argsort(-scores, kind="mergesort"):
        candidates = np.where(taken, -1.0, iou[prediction])
        if candidates.max() < min(0.5, 1 - 1e-10):
            continue
        best = len(candidates) - 1 - int(np.argmax(candidates[::-1]))  # last of the maxima
        taken[best] = True
        is_tp[prediction] = True
    return is_tp


@pytest.mark.parametrize("seed", range(20))
def test_ap_matching_of_nearby_pairs_equals_the_full_matrix(seed):
    """Equal IoU (coincident targets), IoU 0.5 at exactly the radius, score ties: the same true positives."""
    rng = np.random.default_rng(seed)
    for _ in range(50):
        gt, pred, scores = crowded_image(rng)
        scores = metrics._platform_scores(scores)
        expected = dense_coco_matches(gt, pred, scores)
        assert metrics._match_by_score(gt, pred, scores).tolist() == expected.tolist()
    # equal IoU (the targets mirror each other across the diagonal the first prediction is on): the later target is
    # taken, so the second prediction, which overlaps only that one enough, is a false positive
    gt = np.array([[0.096, 0.1], [0.1, 0.096]])
    pred, scores = np.array([[0.1, 0.1], [0.1, 0.092]]), np.array([0.9, 0.8])
    assert dense_coco_matches(gt, pred, scores).tolist() == [True, False]
    assert metrics._match_by_score(gt, pred, scores).tolist() == [True, False]


def test_300k_points_in_one_image_are_evaluated(tmp_path):
    """A scalability check, not a timing: 30,000 points in one file took 191 s when every threshold re-matched the
    image and 300,000 did not finish. Half the points crowd around the 1,000 mitoses; the alarm turns a return of the
    quadratic cost into a failure instead of a hang."""
    import signal

    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 1.7, size=(1000, 2))
    near = gt[rng.integers(0, len(gt), 150_000)] + rng.normal(0, 0.004, size=(150_000, 2))
    pred = np.concatenate([rng.uniform(0, 1.7, size=(150_000, 2)), near])
    probability = np.round(rng.random(len(pred)), 3)
    is_mitosis = rng.random(len(pred)) < 0.5
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    write_prediction(predictions / "001.json", pred, probability, is_mitosis)
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps({"001.tiff": [[float(x), float(y), 0] for x, y in gt]}))

    def too_slow(signum, frame):
        raise TimeoutError("300,000 points in one image: not finished in 120 s")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(120)
    try:
        result = ev.evaluate(predictions, gt_path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    expected = metrics.detection_counts(gt, pred[is_mitosis])
    assert [result.scores.aggregates[k] for k in ("tp", "fp", "fn")] == [expected.tp, expected.fp, expected.fn]
    kept = is_mitosis & (probability >= result.curves.best_threshold["threshold"])
    best = metrics.detection_counts(gt, pred[kept])
    assert [result.curves.best_threshold[k] for k in ("tp", "fp", "fn")] == [best.tp, best.fp, best.fn]
    assert 0 < result.scores.aggregates["ap"] < 1 and result.scores.aggregates["froc"] is not None


def midog_json(images, annotations, tumour_types=None):
    entries = []
    for index, name in enumerate(images):
        entry = {"file_name": name, "id": index + 1, "width": 1000, "height": 1000}
        if tumour_types:
            entry["tumor_type"] = tumour_types[index]
        entries.append(entry)
    return {
        "info": {},
        "licenses": [],
        "images": entries,
        "categories": [{"id": 1, "name": "mitotic figure"}, {"id": 2, "name": "not mitotic figure"}],
        "annotations": [
            {"bbox": bbox, "category_id": category, "image_id": image_id, "id": i}
            for i, (image_id, bbox, category) in enumerate(annotations)
        ],
    }


@pytest.fixture
def dataset(tmp_path):
    """Two images: 001 (breast) with two mitoses + an imposter, 160 (canine lung) with one mitosis; prediction for
    001 only (one hit, one false positive, one non-mitotic point that must not count for F1)."""
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    centres_px = [(400.0, 400.0), (800.0, 200.0)]
    annotations = [(1, [x - 25, y - 25, x + 25, y + 25], 1) for x, y in centres_px]
    annotations += [(1, [100, 100, 150, 150], 2), (2, [475, 475, 525, 525], 1)]
    midog = tmp_path / "MIDOG.json"
    midog.write_text(json.dumps(midog_json(["001.tiff", "160.tiff"], annotations)))
    write_prediction(
        predictions / "001.json",
        np.array([[0.1005, 0.1], [0.5, 0.5], [0.2, 0.05]]),
        [0.9, 0.8, 0.95],
        [True, True, False],
    )
    container = tmp_path / "ground-truth.json"
    container.write_text(json.dumps({"001.tiff": [[0.1, 0.1, 0], [0.2, 0.05, 0]], "160.tiff": [[0.125, 0.125, 0]]}))
    return predictions, midog, container


def test_both_ground_truth_formats_give_the_same_result(dataset):
    predictions, midog, container = dataset
    from_midog, from_container = ev.evaluate(predictions, midog), ev.evaluate(predictions, container)
    assert from_midog.to_json() == from_container.to_json()
    assert {k: from_midog.scores.aggregates[k] for k in ("tp", "fp", "fn")} == {"tp": 1, "fp": 1, "fn": 2}
    assert from_midog.scores.aggregates["f1"] == pytest.approx(2 / 5)
    assert from_midog.images.missing_predictions == ["160"]
    assert set(from_midog.scores.per_tumour_type) == {"human breast cancer", "canine lung cancer"}
    # AP sees the non-mitotic point (0.95, on a true mitosis) first: 2 TP of 3 ground truth, 1 FP in between
    assert from_midog.scores.aggregates["ap"] == pytest.approx(
        metrics.average_precision(
            [np.array([[0.1, 0.1], [0.2, 0.05]]), np.array([[0.125, 0.125]])],
            [np.array([[0.1005, 0.1], [0.5, 0.5], [0.2, 0.05]]), np.zeros((0, 2))],
            [np.array([0.9, 0.8, 0.95]), np.zeros(0)],
        ).ap
    )


def test_midog_plus_plus_tumour_type_and_spacing(tmp_path, dataset):
    predictions, _, _ = dataset
    gt = tmp_path / "MIDOG++.json"
    gt.write_text(json.dumps(midog_json(["001.tiff"], [(1, [175, 175, 225, 225], 1)], ["human melanoma"])))
    result = ev.evaluate(predictions, gt, spacing_um=0.5)  # centre 200 px * 0.5 um = 0.1 mm: a hit
    assert result.scores.per_tumour_type["human melanoma"]["tp"] == 1


def test_spacing_from_tiff_resolution_tags(tmp_path, dataset):
    tifffile = pytest.importorskip("tifffile")
    predictions, _, _ = dataset
    images = tmp_path / "images"
    images.mkdir()
    tifffile.imwrite(images / "001.tiff", np.zeros((8, 8, 3), np.uint8), resolution=(20000, 20000), resolutionunit=3)
    gt = tmp_path / "MIDOG.json"
    gt.write_text(json.dumps(midog_json(["001.tiff"], [(1, [175, 175, 225, 225], 1)])))
    assert ev.evaluate(predictions, gt, images_dir=images).scores.aggregates["tp"] == 1  # 0.5 um/px from the tags
    assert ev.evaluate(predictions, gt).scores.aggregates["tp"] == 0  # default 0.25 um/px: 0.05 mm, no hit


def test_cli_tables_missing_file_and_report(dataset, tmp_path, capsys):
    predictions, midog, _ = dataset
    report = tmp_path / "report"
    assert ev.main(["--predictions", str(predictions), "--ground-truth", str(midog), "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "missing prediction files (counted as no detections): 160" in out
    assert "overall (micro)" in out and "best probability threshold" in out
    for name in ("precision_recall.png", "f1_threshold.png"):
        assert_drawn_png(report / name)
    metrics = json.loads((report / "metrics.json").read_text())
    assert set(metrics["aggregates"]) >= {"tp", "fp", "fn", "precision", "recall", "f1", "ap"}
    assert metrics["missing_predictions"] == ["160"]
    assert metrics["per_image"]["160"]["fn"] == 1
    assert metrics["best_threshold"]["threshold"] == pytest.approx(0.9)  # dropping the 0.8 false positive
    assert metrics["best_threshold"]["f1"] == pytest.approx(0.5)


def test_help_states_every_default():
    for action in ev.get_args_parser()._actions:
        if action.option_strings and action.dest != "help":
            assert "default" in action.help or "required" in action.help, action.dest


def _run_with_prediction(tmp_path, capsys, document) -> tuple[int, str]:
    predictions = tmp_path / "bad"
    predictions.mkdir()
    (predictions / "001.json").write_text(document if isinstance(document, str) else json.dumps(document))
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"001.tiff": [[0.1, 0.1, 0]]}))
    code = ev.main(["--predictions", str(predictions), "--ground-truth", str(gt)])
    err = capsys.readouterr().err.strip()
    return code, err


def _document(**point):
    return {"name": "Points of interest", "type": "Multiple points", "points": [point], "version": {"major": 1}}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (_document(name="mitotic figure", point=[400, 400, 0], probability=0.9), "pixel coordinates"),
        (_document(name="mitotic figure", point=[0.1, 0.1, 0]), "'probability' must be a number in [0, 1]"),
        (_document(name="mitotic figure", point=[0.1, 0.1, 0], probability=1.5), "'probability'"),
        (_document(name="mitotic figure", point=[0.1, 0.1], probability=0.5), "'point' must be 3 finite numbers"),
        (_document(name="Mitotic figure", point=[0.1, 0.1, 0], probability=0.5), "'name' must be one of"),
        (_document(point=[0.1, 0.1, 0], probability=0.5, score=1), "unexpected key(s) ['score']"),
        ({"type": "Multiple points", "points": {}}, "'points' must be a list"),
        ({"type": "Single point", "points": []}, "'type' must be 'Multiple points'"),
        ("{not json", "not readable JSON"),
    ],
)
def test_bad_prediction_exits_1_naming_file_and_problem(tmp_path, capsys, document, message):
    code, err = _run_with_prediction(tmp_path, capsys, document)
    assert code == 1
    assert len(err.splitlines()) == 1 and "001.json" in err and message in err


def test_bad_ground_truth_exits_1(tmp_path, capsys):
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    for content, message in [
        ("[1, 2", "not readable JSON"),
        ('{"images": 3}', "neither a MIDOG annotation JSON"),
        ('{"001.tiff": [[400, 300, 0]]}', "pixel coordinates"),
    ]:
        gt = tmp_path / "gt.json"
        gt.write_text(content)
        assert ev.main(["--predictions", str(predictions), "--ground-truth", str(gt)]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err
    assert ev.main(["--predictions", str(predictions), "--ground-truth", str(tmp_path / "absent.json")]) == 1
    assert "not readable" in capsys.readouterr().err


def _torchmetrics_bbox(x: float, y: float) -> list[float]:
    """What torchmetrics hands COCOeval for the challenge's box: `Tensor([[x - h, y - h, x + h, y + h]])` (float32),
    then xyxy -> xywh in float32, then `.tolist()`."""
    half = 0.01125
    x1, y1, x2, y2 = (np.float32(value) for value in (x - half, y - half, x + half, y + half))
    return [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]


@pytest.mark.parametrize("seed", range(16))
def test_ap_equals_pycocotools_cocoeval(seed):
    """The official COCO evaluation (what torchmetrics' MeanAveragePrecision runs) on the challenge's boxes, with
    points exactly at the matching radius (IoU exactly 0.5 but for float32 rounding) and float32 score ties."""
    import contextlib
    import io

    cocoeval = pytest.importorskip("pycocotools.cocoeval")  # dev requirement; the other tests run without it
    from pycocotools.coco import COCO

    rng = np.random.default_rng(1000 + seed)
    gts, preds, scores = [], [], []
    for _ in range(int(rng.integers(1, 5))):
        targets = rng.uniform(0, 0.3, size=(int(rng.integers(0, 8)), 2))
        near = targets[: int(rng.integers(0, len(targets) + 1))]
        near = near + rng.normal(0, 0.004, size=near.shape)
        at_radius = targets[: int(rng.integers(0, 3))] + [metrics.MATCH_RADIUS_MM, 0.0]
        predictions = np.concatenate([near, at_radius, rng.uniform(0, 0.3, size=(int(rng.integers(0, 8)), 2))])
        gts.append(targets)
        preds.append(predictions)
        image_scores = rng.uniform(0, 1, size=len(predictions)).round(2)  # rounding makes score ties
        if seed % 2 and len(image_scores) > 1:  # equal in float32, not in float64
            image_scores[1] = np.nextafter(image_scores[0], 2.0)
        scores.append(image_scores)
    expected_gt = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "mitotic figure"}]}
    detections = []
    for image_id, (targets, predictions, image_scores) in enumerate(zip(gts, preds, scores, strict=True), start=1):
        expected_gt["images"].append({"id": image_id})
        for x, y in targets:
            bbox = _torchmetrics_bbox(x, y)
            expected_gt["annotations"].append(
                {
                    "id": len(expected_gt["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "iscrowd": 0,
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                }
            )
        for (x, y), score in zip(predictions, image_scores, strict=True):
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": 1,
                    "score": float(np.float32(score)),
                    "bbox": _torchmetrics_bbox(x, y),
                }
            )
    if not expected_gt["annotations"]:  # torchmetrics says -1 (COCOeval cannot load nothing): None here
        assert metrics.average_precision(gts, preds, scores).ap is None
        return
    if not detections:
        assert metrics.average_precision(gts, preds, scores).ap == 0.0
        return
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = expected_gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(detections)
        evaluation = cocoeval.COCOeval(coco_gt, coco_dt, "bbox")
        evaluation.params.iouThrs = np.array([0.5])
        evaluation.params.recThrs = np.arange(0, 1.01, 0.01)  # what the challenge passes to torchmetrics
        evaluation.params.maxDets = [1, 10, 1_000_000]
        evaluation.evaluate()
        evaluation.accumulate()
    precision = evaluation.eval["precision"][0, :, 0, 0, -1]
    expected = float(np.mean(precision[precision > -1]))
    assert metrics.average_precision(gts, preds, scores).ap == pytest.approx(expected, abs=1e-4)
