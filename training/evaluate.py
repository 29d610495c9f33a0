"""Offline evaluation with the MIDOG 2022 challenge's own rules, so that local numbers equal leaderboard numbers.

Usage: `python -m training.evaluate --predictions DIR --ground-truth GT [--report DIR] [--spacing-um 0.25]
[--images DIR]`.

- Predictions: one grand-challenge "Multiple points" JSON per image, `<image stem>.json`, coordinates in mm.
- Ground truth: the evaluation container's file (`{"007.tiff": [[x_mm, y_mm, 0], ...]}`) or a MIDOG annotation JSON
  (bbox [x1, y1, x2, y2] in pixels, centre = cell, category 1 = mitotic figure), detected automatically.
- F1 (the ranking metric): only points named "mitotic figure" (or unnamed) count, matched greedily within 7.5 um
  exactly as `evalutils.scorers.score_detection`; TP/FP/FN are summed over images before F1 (micro).
- AP: every point of both names scored by its probability; each point (ground truth too) becomes a +/-11.25 um
  square and AP is COCO's 101-point interpolated AP at IoU 0.5 over all images (what torchmetrics'
  MeanAveragePrecision with a huge detection limit computes for one class), re-implemented here with numpy so that
  evaluation needs neither torch nor pycocotools.

Bad input fails with a one-line message and exit code 1 rather than a traceback or, worse, a plausible wrong score:
pixel coordinates where mm are expected would otherwise give F1 = 0 without complaint.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.matching import MATCH_RADIUS_UM, greedy_match
from model.output import MITOTIC_FIGURE, NON_MITOTIC_FIGURE, write_json_atomically

MATCH_RADIUS_MM: float = MATCH_RADIUS_UM / 1000.0
AP_BOX_HALF_SIZE_MM: float = 0.01125
"""The challenge turns each point into a 22.5 um square (50 px at 0.225 um/px) to compute AP with a box metric."""
AP_IOU_THRESHOLD: float = 0.5
MAX_COORDINATE_MM: float = 10.0
"""A MIDOG region is ~1.7 mm wide: any coordinate above 10 means pixels were written where mm are expected."""
DEFAULT_SPACING_UM: float = 0.25
MIDOG_MITOTIC_CATEGORY_ID: int = 1

# MIDOG 2022 tumour type by image id (first integer in the file name). 355-405 (human melanoma) are unlabelled.
MIDOG2022_TUMOUR_TYPES: tuple[tuple[int, int, str], ...] = (
    (1, 150, "human breast cancer"),
    (151, 194, "canine lung cancer"),
    (195, 249, "canine lymphoma"),
    (250, 299, "canine cutaneous mast cell tumor"),
    (300, 354, "human neuroendocrine tumor"),
)
UNLABELLED_ID_RANGE: tuple[int, int] = (355, 405)
UNKNOWN_TUMOUR_TYPE = "unknown"

_ALLOWED_DOCUMENT_KEYS = {"name", "type", "points", "version"}
_ALLOWED_POINT_KEYS = {"name", "point", "probability"}
_POINT_NAMES = {MITOTIC_FIGURE, NON_MITOTIC_FIGURE}


class EvaluationInputError(ValueError):
    """Input that cannot be evaluated; the message is one line meant for the user."""


# ----------------------------------------------------------------------------------------------------------- input


@dataclass
class ImagePredictions:
    """All points of one image: positions (mm), probabilities and whether each is named "mitotic figure"."""

    xy_mm: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    probability: np.ndarray = field(default_factory=lambda: np.zeros(0))
    is_mitosis: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))


@dataclass
class GroundTruthImage:
    """Mitotic figure positions (mm) of one image and its tumour type (for the per-domain table)."""

    file_name: str
    xy_mm: np.ndarray
    tumour_type: str


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_mm(xy: Sequence[float], where: str) -> None:
    if any(abs(float(value)) > MAX_COORDINATE_MM for value in xy):
        raise EvaluationInputError(
            f"{where}: coordinate {list(xy)} is above {MAX_COORDINATE_MM:g}: pixel coordinates where mm are expected"
        )


def read_predictions(path: Path) -> ImagePredictions:
    """Read and validate one "Multiple points" file; every schema violation names the file and the problem."""
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EvaluationInputError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(document, dict):
        raise EvaluationInputError(f"{path}: expected a JSON object, found {type(document).__name__}")
    extra = sorted(set(document) - _ALLOWED_DOCUMENT_KEYS)
    if extra:
        raise EvaluationInputError(f"{path}: unexpected key(s) {extra} (the platform allows no extra keys)")
    if document.get("type") != "Multiple points":
        raise EvaluationInputError(f"{path}: 'type' must be 'Multiple points', found {document.get('type')!r}")
    points = document.get("points")
    if not isinstance(points, list):
        raise EvaluationInputError(f"{path}: 'points' must be a list")
    xy_mm, probability, is_mitosis = [], [], []
    for index, entry in enumerate(points):
        where = f"{path}: points[{index}]"
        if not isinstance(entry, dict):
            raise EvaluationInputError(f"{where} must be an object")
        extra = sorted(set(entry) - _ALLOWED_POINT_KEYS)
        if extra:
            raise EvaluationInputError(f"{where} has unexpected key(s) {extra}")
        point = entry.get("point")
        if not (isinstance(point, list) and len(point) == 3 and all(_is_number(value) for value in point)):
            raise EvaluationInputError(f"{where}: 'point' must be 3 finite numbers [x_mm, y_mm, 0], found {point!r}")
        _check_mm(point, where)
        score = entry.get("probability")
        if not (_is_number(score) and 0.0 <= score <= 1.0):
            raise EvaluationInputError(f"{where}: 'probability' must be a number in [0, 1], found {score!r}")
        name = entry.get("name", MITOTIC_FIGURE)  # the challenge counts unnamed points as mitotic figures
        if name not in _POINT_NAMES:
            raise EvaluationInputError(f"{where}: 'name' must be one of {sorted(_POINT_NAMES)}, found {name!r}")
        xy_mm.append(point[:2])
        probability.append(float(score))
        is_mitosis.append(name == MITOTIC_FIGURE)
    return ImagePredictions(
        np.asarray(xy_mm, dtype=np.float64).reshape(-1, 2),
        np.asarray(probability, dtype=np.float64),
        np.asarray(is_mitosis, dtype=bool),
    )


def first_integer(file_name: str) -> int | None:
    """The image id as the MIDOG validators define it: the first integer in the file name."""
    match = re.search(r"\d+", file_name)
    return int(match.group()) if match else None


def tumour_type_of(file_name: str) -> str:
    """MIDOG 2022 tumour type from the id ranges; files outside the ranges are 'unknown'."""
    image_id = first_integer(file_name)
    for low, high, tumour_type in MIDOG2022_TUMOUR_TYPES:
        if image_id is not None and low <= image_id <= high:
            return tumour_type
    return UNKNOWN_TUMOUR_TYPE


def _stem(file_name: str) -> str:
    return Path(file_name).stem


def _read_container_ground_truth(payload: dict, path: Path) -> dict[str, GroundTruthImage]:
    images = {}
    for file_name, points in payload.items():
        where = f"{path}: {file_name!r}"
        if not isinstance(points, list):
            raise EvaluationInputError(f"{where} must map to a list of [x_mm, y_mm, 0] points")
        for point in points:
            if not (isinstance(point, list) and len(point) in (2, 3) and all(_is_number(v) for v in point)):
                raise EvaluationInputError(f"{where}: ground-truth point must be [x_mm, y_mm, 0], found {point!r}")
            _check_mm(point, where)
        xy_mm = np.asarray([point[:2] for point in points], dtype=np.float64).reshape(-1, 2)
        images[_stem(file_name)] = GroundTruthImage(file_name, xy_mm, tumour_type_of(file_name))
    return images


def _spacing_mm_for(file_name: str, spacing_um: float, images_dir: Path | None) -> tuple[float, float]:
    if images_dir is None:
        return spacing_um / 1000.0, spacing_um / 1000.0
    from training.midog_dataset import read_spacing_mm  # tifffile is only needed with --images

    image_path = Path(images_dir) / file_name
    if not image_path.is_file():
        raise EvaluationInputError(f"--images {images_dir}: {file_name} not found (needed for its pixel spacing)")
    try:
        return read_spacing_mm(image_path)
    except Exception as error:  # any tifffile failure is a bad image for the user, not a crash
        raise EvaluationInputError(f"{image_path}: cannot read resolution tags ({error})") from None


def _read_midog_ground_truth(
    payload: dict, path: Path, spacing_um: float, images_dir: Path | None
) -> tuple[dict[str, GroundTruthImage], list[str]]:
    """MIDOG annotation JSON -> per-image mitotic-figure centres in mm; also the skipped unlabelled images."""
    images, skipped = {}, []
    if not isinstance(payload["images"], list) or not isinstance(payload["annotations"], list):
        raise EvaluationInputError(f"{path}: 'images' and 'annotations' must be lists")
    by_id: dict[object, tuple[dict, list]] = {}
    for image in payload["images"]:
        if not (isinstance(image, dict) and isinstance(image.get("file_name"), str) and "id" in image):
            raise EvaluationInputError(f"{path}: every image needs 'file_name' and 'id', found {image!r}")
        by_id[image["id"]] = (image, [])
    for annotation in payload["annotations"]:
        if not isinstance(annotation, dict) or annotation.get("image_id") not in by_id:
            raise EvaluationInputError(f"{path}: annotation without a known 'image_id': {annotation!r}")
        if annotation.get("category_id") != MIDOG_MITOTIC_CATEGORY_ID:
            continue  # imposters (category 2) are not ground truth for the challenge
        bbox = annotation.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise EvaluationInputError(f"{path}: annotation bbox must be [x1, y1, x2, y2] pixels, found {bbox!r}")
        by_id[annotation["image_id"]][1].append(((bbox[0] + bbox[2]) / 2.0, (bbox[1] + bbox[3]) / 2.0))
    for image, centres_px in by_id.values():
        file_name = image["file_name"]
        has_tumour_type = "tumor_type" in image
        image_id = first_integer(file_name)
        low, high = UNLABELLED_ID_RANGE
        if not has_tumour_type and not centres_px and image_id is not None and low <= image_id <= high:
            skipped.append(file_name)
            continue
        spacing_mm = _spacing_mm_for(file_name, spacing_um, images_dir)
        xy_mm = np.asarray(centres_px, dtype=np.float64).reshape(-1, 2) * np.asarray(spacing_mm[:2])
        tumour_type = str(image["tumor_type"]) if has_tumour_type else tumour_type_of(file_name)
        images[_stem(file_name)] = GroundTruthImage(file_name, xy_mm, tumour_type)
    return images, skipped


def read_ground_truth(
    path: Path, spacing_um: float = DEFAULT_SPACING_UM, images_dir: Path | None = None
) -> tuple[dict[str, GroundTruthImage], list[str]]:
    """Either ground-truth format, detected from its structure; returns images by stem and skipped unlabelled files."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EvaluationInputError(f"ground truth {path}: not readable JSON ({error})") from None
    if isinstance(payload, dict) and "images" in payload and "annotations" in payload:
        return _read_midog_ground_truth(payload, path, spacing_um, images_dir)
    if isinstance(payload, dict) and all(isinstance(value, list) for value in payload.values()):
        return _read_container_ground_truth(payload, path), []
    raise EvaluationInputError(
        f"ground truth {path}: neither a MIDOG annotation JSON (images/annotations) "
        'nor an evaluation-container file ({"007.tiff": [[x_mm, y_mm, 0], ...]})'
    )


# --------------------------------------------------------------------------------------------------------- metrics


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def f1(self) -> float | None:
        """2TP / (2TP + FP + FN): the challenge's formula; undefined (None) when there is nothing to count."""
        denominator = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denominator if denominator else None


def detection_counts(targets_xy_mm: np.ndarray, predictions_xy_mm: np.ndarray) -> Counts:
    """TP/FP/FN of one image exactly as `evalutils.scorers.score_detection(radius=7.5e-3)`."""
    tp = len(greedy_match(targets_xy_mm, predictions_xy_mm, MATCH_RADIUS_MM))
    return Counts(tp, len(predictions_xy_mm) - tp, len(targets_xy_mm) - tp)


def _boxes(xy_mm: np.ndarray) -> np.ndarray:
    xy_mm = np.asarray(xy_mm, dtype=np.float64).reshape(-1, 2)
    return np.concatenate([xy_mm - AP_BOX_HALF_SIZE_MM, xy_mm + AP_BOX_HALF_SIZE_MM], axis=1)


def _box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    width = np.minimum(boxes_a[:, None, 2], boxes_b[None, :, 2]) - np.maximum(boxes_a[:, None, 0], boxes_b[None, :, 0])
    height = np.minimum(boxes_a[:, None, 3], boxes_b[None, :, 3]) - np.maximum(boxes_a[:, None, 1], boxes_b[None, :, 1])
    intersection = np.clip(width, 0, None) * np.clip(height, 0, None)
    area_a = (boxes_a[:, 2] - boxes_a[:, 0]) * (boxes_a[:, 3] - boxes_a[:, 1])
    area_b = (boxes_b[:, 2] - boxes_b[:, 0]) * (boxes_b[:, 3] - boxes_b[:, 1])
    return intersection / (area_a[:, None] + area_b[None, :] - intersection)


def _match_by_score(targets_xy_mm: np.ndarray, predictions_xy_mm: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """COCO matching of one image: predictions by decreasing score (stable), each takes the unmatched ground truth
    with the highest IoU >= 0.5 (equal IoU: the later ground truth, as pycocotools' `<` comparison does).
    Returns whether each prediction (in input order) is a true positive."""
    is_tp = np.zeros(len(scores), dtype=bool)
    if len(targets_xy_mm) == 0 or len(scores) == 0:
        return is_tp
    iou = _box_iou(_boxes(predictions_xy_mm), _boxes(targets_xy_mm))
    taken = np.zeros(len(targets_xy_mm), dtype=bool)
    for prediction in np.argsort(-scores, kind="mergesort"):
        candidates = np.where(taken, -1.0, iou[prediction])
        best_iou = candidates.max()
        if best_iou < min(AP_IOU_THRESHOLD, 1 - 1e-10):
            continue
        best = len(candidates) - 1 - int(np.argmax(candidates[::-1]))  # last of the maxima
        taken[best] = True
        is_tp[prediction] = True
    return is_tp


@dataclass
class PrecisionRecall:
    """AP and the curve behind it; `ap` is None when there is no ground truth (torchmetrics would say -1)."""

    ap: float | None
    recall: np.ndarray
    precision: np.ndarray
    recall_thresholds: np.ndarray
    interpolated_precision: np.ndarray


def average_precision(
    targets_xy_mm: Sequence[np.ndarray], predictions_xy_mm: Sequence[np.ndarray], scores: Sequence[np.ndarray]
) -> PrecisionRecall:
    """COCO AP at IoU 0.5 over several images (one class, no detection limit), as the challenge reports it.

    Matching is per image; detections of all images are then ranked together by score (stable: image order, then
    score order within the image), precision is made monotone from the right, and sampled at 101 recall points.
    """
    recall_thresholds = np.linspace(0.0, 1.0, 101)
    all_scores, all_tp = [], []
    for targets, predictions, image_scores in zip(targets_xy_mm, predictions_xy_mm, scores, strict=True):
        image_scores = np.asarray(image_scores, dtype=np.float64)
        order = np.argsort(-image_scores, kind="mergesort")
        all_scores.append(image_scores[order])
        all_tp.append(_match_by_score(np.asarray(targets), np.asarray(predictions), image_scores)[order])
    n_targets = sum(len(np.asarray(targets).reshape(-1, 2)) for targets in targets_xy_mm)
    if n_targets == 0:
        empty = np.zeros(0)
        return PrecisionRecall(None, empty, empty, recall_thresholds, np.zeros_like(recall_thresholds))
    merged_scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    merged_tp = np.concatenate(all_tp) if all_tp else np.zeros(0, dtype=bool)
    order = np.argsort(-merged_scores, kind="mergesort")
    tp_cumulative = np.cumsum(merged_tp[order]).astype(np.float64)
    fp_cumulative = np.cumsum(~merged_tp[order]).astype(np.float64)
    recall = tp_cumulative / n_targets
    precision = tp_cumulative / (tp_cumulative + fp_cumulative + np.spacing(1))
    if len(precision) == 0:  # ground truth but no detections anywhere: AP 0
        return PrecisionRecall(0.0, recall, precision, recall_thresholds, np.zeros_like(recall_thresholds))
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    indices = np.searchsorted(recall, recall_thresholds, side="left")
    interpolated = np.where(indices < len(envelope), envelope[np.minimum(indices, len(envelope) - 1)], 0.0)
    return PrecisionRecall(float(np.mean(interpolated)), recall, precision, recall_thresholds, interpolated)


def f1_by_threshold(
    targets_xy_mm: Sequence[np.ndarray], predictions_xy_mm: Sequence[np.ndarray], scores: Sequence[np.ndarray]
) -> tuple[np.ndarray, list[Counts]]:
    """Micro counts if only mitotic-figure points with probability >= t were kept, for every distinct t.

    Greedy matching is not monotone in the kept set, so each image is re-matched at each of its own probabilities;
    an image's counts only change there, so the union of thresholds is covered by looking up each image's last
    change (cost: sum over images of points squared, not images x thresholds).
    """
    nonempty = [np.asarray(s, dtype=np.float64) for s in scores if len(s)]
    thresholds = np.unique(np.concatenate(nonempty)) if nonempty else np.zeros(0)
    totals = np.zeros((len(thresholds), 3), dtype=np.int64)
    for targets, predictions, image_scores in zip(targets_xy_mm, predictions_xy_mm, scores, strict=True):
        image_scores = np.asarray(image_scores, dtype=np.float64)
        own = np.unique(image_scores)
        own_counts = []
        for threshold in own:
            counts = detection_counts(targets, np.asarray(predictions).reshape(-1, 2)[image_scores >= threshold])
            own_counts.append((counts.tp, counts.fp, counts.fn))
        own_counts.append((0, 0, len(targets)))  # above the image's highest probability: nothing kept
        totals += np.asarray(own_counts, dtype=np.int64)[np.searchsorted(own, thresholds, side="left")]
    return thresholds, [Counts(*map(int, row)) for row in totals]


def best_threshold(thresholds: np.ndarray, counts: list[Counts]) -> dict | None:
    """The probability threshold (keep >= t) with the highest micro F1; ties go to the lowest threshold."""
    f1 = [c.f1 if c.f1 is not None else -1.0 for c in counts]
    if not f1 or max(f1) < 0:
        return None
    index = int(np.argmax(f1))
    return {"threshold": float(thresholds[index]), **_counts_dict(counts[index])}


# ---------------------------------------------------------------------------------------------------- evaluation


def _counts_dict(counts: Counts) -> dict:
    return {
        "tp": counts.tp,
        "fp": counts.fp,
        "fn": counts.fn,
        "precision": counts.precision,
        "recall": counts.recall,
        "f1": counts.f1,
    }


@dataclass
class Evaluation:
    aggregates: dict
    per_image: dict
    per_tumour_type: dict
    missing_predictions: list[str]
    extra_predictions: list[str]
    skipped_unlabelled: list[str]
    best_threshold: dict | None
    curve: PrecisionRecall
    thresholds: np.ndarray
    threshold_counts: list[Counts]

    def to_json(self) -> dict:
        return {
            "aggregates": self.aggregates,
            "per_image": self.per_image,
            "per_tumour_type": self.per_tumour_type,
            "missing_predictions": self.missing_predictions,
            "extra_predictions": self.extra_predictions,
            "skipped_unlabelled": self.skipped_unlabelled,
            "best_threshold": self.best_threshold,
        }


def evaluate(
    predictions_dir: Path,
    ground_truth_path: Path,
    spacing_um: float = DEFAULT_SPACING_UM,
    images_dir: Path | None = None,
) -> Evaluation:
    """Challenge metrics of a predictions folder against a ground-truth file (raises EvaluationInputError)."""
    predictions_dir = Path(predictions_dir)
    if not predictions_dir.is_dir():
        raise EvaluationInputError(f"--predictions {predictions_dir}: not a folder")
    ground_truth, skipped = read_ground_truth(ground_truth_path, spacing_um, images_dir)
    stems = sorted(ground_truth)
    missing, predictions = [], {}
    for stem in stems:
        path = predictions_dir / f"{stem}.json"
        if path.is_file():
            predictions[stem] = read_predictions(path)
        else:
            missing.append(stem)
            predictions[stem] = ImagePredictions()
    extra = sorted(p.stem for p in predictions_dir.glob("*.json") if p.stem not in ground_truth)

    per_image, groups = {}, {}
    for stem in stems:
        targets, image = ground_truth[stem].xy_mm, predictions[stem]
        counts = detection_counts(targets, image.xy_mm[image.is_mitosis])
        image_ap = average_precision([targets], [image.xy_mm], [image.probability]).ap
        tumour_type = ground_truth[stem].tumour_type
        per_image[stem] = {
            "file_name": ground_truth[stem].file_name,
            "tumour_type": tumour_type,
            "n_ground_truth": len(targets),
            "n_mitotic_figure_points": int(image.is_mitosis.sum()),
            "n_points": len(image.probability),
            **_counts_dict(counts),
            "ap": image_ap,
            "missing_prediction": stem in missing,
        }
        groups.setdefault(tumour_type, []).append(stem)

    def summary(selected: list[str]) -> tuple[dict, PrecisionRecall]:
        total = sum((Counts(per_image[s]["tp"], per_image[s]["fp"], per_image[s]["fn"]) for s in selected), Counts())
        curve = average_precision(
            [ground_truth[s].xy_mm for s in selected],
            [predictions[s].xy_mm for s in selected],
            [predictions[s].probability for s in selected],
        )
        return {"n_images": len(selected), **_counts_dict(total), "ap": curve.ap}, curve

    aggregates, curve = summary(stems)
    per_tumour_type = {name: summary(selected)[0] for name, selected in sorted(groups.items())}
    thresholds, threshold_counts = f1_by_threshold(
        [ground_truth[s].xy_mm for s in stems],
        [predictions[s].xy_mm[predictions[s].is_mitosis] for s in stems],
        [predictions[s].probability[predictions[s].is_mitosis] for s in stems],
    )
    return Evaluation(
        aggregates,
        per_image,
        per_tumour_type,
        missing,
        extra,
        skipped,
        best_threshold(thresholds, threshold_counts),
        curve,
        thresholds,
        threshold_counts,
    )


# ---------------------------------------------------------------------------------------------------------- output


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _row(label: str, metrics: dict, width: int) -> str:
    return (
        f"{label:<{width}} {metrics['tp']:>6} {metrics['fp']:>6} {metrics['fn']:>6} "
        f"{_fmt(metrics['precision']):>9} {_fmt(metrics['recall']):>9} "
        f"{_fmt(metrics['f1']):>9} {_fmt(metrics['ap']):>9}"
    )


def format_tables(evaluation: Evaluation) -> str:
    """Per-image, per-tumour-type and overall tables for the terminal."""
    labels = list(evaluation.per_image) + list(evaluation.per_tumour_type) + ["overall (micro)"]
    width = max(len(label) for label in labels) + 2
    header = f"{'':<{width}} {'TP':>6} {'FP':>6} {'FN':>6} {'precision':>9} {'recall':>9} {'F1':>9} {'AP':>9}"
    lines = ["per image", header]
    for stem, metrics in evaluation.per_image.items():
        lines.append(_row(stem, metrics, width) + ("  (no prediction file)" if metrics["missing_prediction"] else ""))
    lines += ["", "per tumour type", header]
    lines += [_row(name, metrics, width) for name, metrics in evaluation.per_tumour_type.items()]
    lines += ["", header, _row("overall (micro)", evaluation.aggregates, width)]
    if evaluation.missing_predictions:
        lines.append(
            f"missing prediction files (counted as no detections): {', '.join(evaluation.missing_predictions)}"
        )
    if evaluation.extra_predictions:
        lines.append(f"prediction files without ground truth (ignored): {', '.join(evaluation.extra_predictions)}")
    if evaluation.skipped_unlabelled:
        lines.append(f"skipped unlabelled images: {len(evaluation.skipped_unlabelled)}")
    best = evaluation.best_threshold
    if best is not None:
        lines.append(
            f"best probability threshold on 'mitotic figure' points: {best['threshold']:.6g} "
            f"(F1 {_fmt(best['f1'])}, precision {_fmt(best['precision'])}, recall {_fmt(best['recall'])})"
        )
    return "\n".join(lines)


def write_report(evaluation: Evaluation, report_dir: Path) -> list[Path]:
    """metrics.json (atomic), the precision-recall curve and F1 against the probability threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = report_dir / "metrics.json"
    write_json_atomically(evaluation.to_json(), metrics_path)

    curve = evaluation.curve
    figure, axes = plt.subplots(figsize=(5, 5))
    axes.plot(curve.recall, curve.precision, lw=1, alpha=0.6, label="raw")
    axes.plot(curve.recall_thresholds, curve.interpolated_precision, lw=1.5, label="101-point interpolated")
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    axes.set_title(f"AP@0.5 = {_fmt(curve.ap)} (all points)")
    axes.legend(loc="lower left")
    pr_path = report_dir / "precision_recall.png"
    figure.savefig(pr_path, dpi=100, bbox_inches="tight")
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(6, 4))
    # keep-if-p>=t: the counts at threshold t_i hold on (t_(i-1), t_i], hence "steps-pre"
    for metric in ("f1", "precision", "recall"):
        values = [getattr(c, metric) for c in evaluation.threshold_counts]
        values = [np.nan if value is None else value for value in values]
        axes.plot(evaluation.thresholds, values, drawstyle="steps-pre", lw=1.5 if metric == "f1" else 1, label=metric)
    best = evaluation.best_threshold
    if best is not None:
        axes.axvline(best["threshold"], color="grey", ls="--", lw=1)
        axes.set_title(f"best threshold {best['threshold']:.4g}: F1 {_fmt(best['f1'])}")
    axes.set(xlabel="probability threshold ('mitotic figure' points kept if >=)", ylabel="score", xlim=(0, 1))
    axes.legend(loc="lower left")
    f1_path = report_dir / "f1_threshold.png"
    figure.savefig(f1_path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return [metrics_path, pr_path, f1_path]


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="MIDOG 2022 offline evaluation: challenge-identical F1 (micro, 7.5 um greedy matching) and AP.",
        add_help=add_help,
    )
    parser.add_argument(
        "--predictions",
        type=Path,
        required=True,
        help="folder with one grand-challenge 'Multiple points' JSON per image, named <image stem>.json (required)",
    )
    parser.add_argument(
        "--ground-truth",
        type=Path,
        required=True,
        help='evaluation-container ground truth ({"007.tiff": [[x_mm, y_mm, 0], ...]}) or a MIDOG annotation JSON '
        "(format detected automatically; required)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        help="folder for metrics.json, precision_recall.png and f1_threshold.png (default: none, terminal only)",
    )
    parser.add_argument(
        "--spacing-um",
        type=float,
        default=DEFAULT_SPACING_UM,
        help="pixel spacing in um/px to convert MIDOG JSON pixel boxes to mm (default: %(default)s)",
    )
    parser.add_argument(
        "--images",
        type=Path,
        default=None,
        help="folder with the TIFFs named in a MIDOG JSON: per-image spacing from their resolution tags instead of "
        "--spacing-um (default: none)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if not args.spacing_um > 0:
        print(f"error: --spacing-um must be positive, got {args.spacing_um}", file=sys.stderr)
        return 1
    try:
        evaluation = evaluate(args.predictions, args.ground_truth, args.spacing_um, args.images)
    except EvaluationInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(format_tables(evaluation))
    if args.report is not None:
        paths = write_report(evaluation, args.report)
        print("report: " + ", ".join(str(path) for path in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
