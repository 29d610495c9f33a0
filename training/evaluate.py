"""Offline evaluation with the MIDOG challenges' own rules, so that local numbers equal leaderboard numbers.

Usage: `python -m training.evaluate --predictions DIR --ground-truth GT [--report DIR] [--spacing-um 0.25]
[--images DIR]`.

- Predictions: a folder of grand-challenge "Multiple points" JSONs, one per image named `<image stem>.json`
  (coordinates in mm), or the platform's evaluation layout: `predictions.json` (a list of jobs: `pk`, the input
  image's `inputs[].image.name`, and the `outputs[]` entry whose `interface.slug` is "mitotic-figures" with its
  `relative_path`) beside `<pk>/output/<relative_path>`. Detected from the content of `predictions.json`.
- Ground truth, detected from its structure: the MIDOG 2022 evaluation container's file
  (`{"007.tiff": [[x_mm, y_mm, 0], ...]}`), the MIDOG 2025 one (`{"007.tiff": {"annotations": [...],
  "tumor domain": 0, "roi type": "hotspot"}}`), or a MIDOG annotation JSON (bbox [x1, y1, x2, y2] in pixels,
  centre = cell, category 1 = mitotic figure).
- F1 (the ranking metric): only points named "mitotic figure" (or, under the 2022 rules, unnamed) count, matched
  greedily within 7.5 um exactly as `evalutils.scorers.score_detection`; TP/FP/FN are summed over images before F1.
- AP: every point of both names scored by its probability; each point (ground truth too) becomes a +/-11.25 um
  square and AP is COCO's 101-point interpolated AP at IoU 0.5 over all images (what torchmetrics'
  MeanAveragePrecision with a huge detection limit computes for one class, float32 tensors included),
  re-implemented here with numpy so that evaluation needs neither torch nor pycocotools.
- FROC (MIDOG 2025): every point of both names; 40 probability thresholds from the lowest to the highest
  probability, recall and mean false positives per image at each (same greedy matching), recall interpolated at 50
  false-positive rates in [0, 8] and integrated (0..8).
- Everything overall, per tumour type (2025: tumour domain) and, for 2025 ground truth, per ROI type;
  `Evaluation.leaderboard` repeats the numbers under the 2025 platform's own names and arithmetic.

With 2025 ground truth the 2025 input rules apply: a point without a name, or with a coordinate below -7.5 um, is an
error as well. Bad input fails with a one-line message and exit code 1 rather than a traceback or, worse, a plausible
wrong score: pixel coordinates where mm are expected would otherwise give F1 = 0 without complaint.
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
from model.spacing import DEFAULT_SPACING_MM

MATCH_RADIUS_MM: float = MATCH_RADIUS_UM / 1000.0
AP_BOX_HALF_SIZE_MM: float = 0.01125
"""The challenge turns each point into a 22.5 um square (+/- 11.25 um: 90 px at 0.25 um/px) to compute AP with a box
metric."""
AP_IOU_THRESHOLD: float = 0.5
MAX_COORDINATE_MM: float = 10.0
"""A MIDOG region is ~1.7 mm wide: any coordinate above 10 means pixels were written where mm are expected."""
MIN_COORDINATE_MM_2025: float = -MATCH_RADIUS_MM
"""MIDOG 2025 rejects x or y below minus the matching radius: such a point cannot match anything in the image."""
DEFAULT_SPACING_UM: float = DEFAULT_SPACING_MM * 1000.0
"""Pixel size assumed for MIDOG JSON boxes when no image is at hand (the model's, `model.spacing`)."""
MIDOG_MITOTIC_CATEGORY_ID: int = 1

FROC_THRESHOLDS: int = 40
"""MIDOG 2025: probability thresholds evenly spaced from the lowest to the highest probability of all points."""
FROC_MAX_FP_PER_IMAGE: float = 8.0
"""Upper end of the false-positives-per-image axis (as in the JAMA CAMELYON16 FROC the challenge cites)."""
FROC_SAMPLES: int = 50
"""Points in [0, FROC_MAX_FP_PER_IMAGE] at which recall is interpolated before the trapezoidal area."""
PLATFORM_EPSILON: float = 1e-6
"""The platform adds 1e-6 to every precision / recall / F1 denominator (and F1 numerator) and to the FROC recall."""

ROI_TYPES: tuple[str, ...] = ("hotspot", "challenging", "random")
"""MIDOG 2025 region-of-interest types, in the order the platform reports them."""
PLATFORM_INPUT_SLUG = "histopathology-region-of-interest-cropout"
PLATFORM_OUTPUT_SLUG = "mitotic-figures"
PLATFORM_JOBS_FILE = "predictions.json"

GROUND_TRUTH_CONTAINER_2022 = "container-2022"
GROUND_TRUTH_CONTAINER_2025 = "container-2025"
GROUND_TRUTH_MIDOG_JSON = "midog-json"
LAYOUT_FOLDER = "folder"
LAYOUT_PLATFORM = "platform"

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
    """Mitotic figure positions (mm) of one image, its tumour type (2025: tumour domain) and 2025 ROI type."""

    file_name: str
    xy_mm: np.ndarray
    tumour_type: str
    roi_type: str | None = None


def is_finite_number(value: object) -> bool:
    """A JSON number that is neither a boolean nor NaN / infinity."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_mm(xy: Sequence[float], where: str) -> None:
    if any(abs(float(value)) > MAX_COORDINATE_MM for value in xy):
        raise EvaluationInputError(
            f"{where}: coordinate {list(xy)} is above {MAX_COORDINATE_MM:g}: pixel coordinates where mm are expected"
        )


def read_predictions(path: Path, rules_2025: bool = False) -> ImagePredictions:
    """Read and validate one "Multiple points" file; every schema violation names the file and the problem.

    `rules_2025` adds what the MIDOG 2025 evaluation rejects and 2022 accepted: a point without a name (2022 counted
    it as a mitotic figure) and x or y below -7.5 um.
    """
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
        where = f"{where} {json.dumps(entry)}"  # name the point itself too: an index alone is hard to find
        point = entry.get("point")
        if not (isinstance(point, list) and len(point) == 3 and all(is_finite_number(value) for value in point)):
            raise EvaluationInputError(f"{where}: 'point' must be 3 finite numbers [x_mm, y_mm, 0], found {point!r}")
        _check_mm(point, where)
        if rules_2025 and min(point[:2]) < MIN_COORDINATE_MM_2025:
            raise EvaluationInputError(
                f"{where}: coordinate below {MIN_COORDINATE_MM_2025:g} mm (MIDOG 2025 rejects points outside the image)"
            )
        score = entry.get("probability")
        if not (is_finite_number(score) and 0.0 <= score <= 1.0):
            raise EvaluationInputError(f"{where}: 'probability' must be a number in [0, 1], found {score!r}")
        if rules_2025 and "name" not in entry:
            raise EvaluationInputError(f"{where}: no 'name' (MIDOG 2025 requires one of {sorted(_POINT_NAMES)})")
        name = entry.get("name", MITOTIC_FIGURE)  # the 2022 challenge counts unnamed points as mitotic figures
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


@dataclass
class PredictionFiles:
    """Where each image's "Multiple points" file is, by image stem, in the order the evaluation meets them.

    The platform ranks AP detections of equal score in the order its jobs are listed in `predictions.json`, so that
    order is kept; a plain folder is taken in name order.
    """

    layout: str
    paths: dict[str, Path]


def _job_image_name(job: dict, where: str) -> str:
    """The input image's name: the platform's input socket if present, else the only input that is an image."""
    inputs = job.get("inputs")
    if not isinstance(inputs, list):
        raise EvaluationInputError(f"{where}: 'inputs' must be a list")
    named = [
        entry
        for entry in inputs
        if isinstance(entry, dict)
        and isinstance(entry.get("image"), dict)
        and isinstance(entry["image"].get("name"), str)
    ]
    preferred = [
        entry
        for entry in named
        if isinstance(entry.get("interface"), dict) and entry["interface"].get("slug") == PLATFORM_INPUT_SLUG
    ]
    candidates = preferred or named
    if len(candidates) != 1:
        raise EvaluationInputError(f"{where}: expected one input image (inputs[].image.name), found {len(candidates)}")
    return candidates[0]["image"]["name"]


def _job_output_path(job: dict, folder: Path, where: str) -> Path:
    pk = job.get("pk")
    if not isinstance(pk, str | int) or isinstance(pk, bool) or not str(pk):
        raise EvaluationInputError(f"{where}: no 'pk'")
    outputs = job.get("outputs")
    if not isinstance(outputs, list):
        raise EvaluationInputError(f"{where}: 'outputs' must be a list")
    for entry in outputs:
        interface = entry.get("interface") if isinstance(entry, dict) else None
        if isinstance(interface, dict) and interface.get("slug") == PLATFORM_OUTPUT_SLUG:
            relative_path = interface.get("relative_path")
            if not isinstance(relative_path, str) or not relative_path:
                raise EvaluationInputError(f"{where}: output '{PLATFORM_OUTPUT_SLUG}' has no 'relative_path'")
            path = folder / str(pk) / "output" / relative_path
            if not path.is_file():
                raise EvaluationInputError(f"{where}: output file {path} not found")
            return path
    raise EvaluationInputError(f"{where}: no output with interface slug '{PLATFORM_OUTPUT_SLUG}'")


def find_prediction_files(folder: Path) -> PredictionFiles:
    """Either prediction layout: the platform's (`predictions.json` holding a list of jobs) or `<image stem>.json`.

    A `predictions.json` holding an object is an ordinary per-image file (of an image named "predictions").
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationInputError(f"--predictions {folder}: not a folder")
    jobs_path = folder / PLATFORM_JOBS_FILE
    jobs = None
    if jobs_path.is_file():
        try:
            jobs = json.loads(jobs_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise EvaluationInputError(f"{jobs_path}: not readable JSON ({error})") from None
    if not isinstance(jobs, list):
        return PredictionFiles(LAYOUT_FOLDER, {path.stem: path for path in sorted(folder.glob("*.json"))})
    paths: dict[str, Path] = {}
    first_job: dict[str, int] = {}
    for index, job in enumerate(jobs):
        where = f"{jobs_path}: job [{index}]"
        if not isinstance(job, dict):
            raise EvaluationInputError(f"{where} must be an object")
        image_name = _job_image_name(job, where)
        stem = _stem(image_name)
        if stem in paths:
            raise EvaluationInputError(
                f"{where}: image {image_name!r} was already predicted by job [{first_job[stem]}]"
            )
        paths[stem] = _job_output_path(job, folder, f"{where} (image {image_name!r})")
        first_job[stem] = index
    return PredictionFiles(LAYOUT_PLATFORM, paths)


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


def _read_points_mm(points: object, where: str) -> np.ndarray:
    if not isinstance(points, list):
        raise EvaluationInputError(f"{where} must map to a list of [x_mm, y_mm, 0] points")
    for point in points:
        if not (isinstance(point, list) and len(point) in (2, 3) and all(is_finite_number(v) for v in point)):
            raise EvaluationInputError(f"{where}: ground-truth point must be [x_mm, y_mm, 0], found {point!r}")
        _check_mm(point, where)
    return np.asarray([point[:2] for point in points], dtype=np.float64).reshape(-1, 2)


def _read_container_ground_truth(payload: dict, path: Path) -> dict[str, GroundTruthImage]:
    images = {}
    for file_name, points in payload.items():
        xy_mm = _read_points_mm(points, f"{path}: {file_name!r}")
        images[_stem(file_name)] = GroundTruthImage(file_name, xy_mm, tumour_type_of(file_name))
    return images


def _read_2025_ground_truth(payload: dict, path: Path) -> dict[str, GroundTruthImage]:
    """MIDOG 2025 container file: points under "annotations", plus the image's "tumor domain" and "roi type"."""
    images = {}
    for file_name, entry in payload.items():
        where = f"{path}: {file_name!r}"
        if "annotations" not in entry:
            raise EvaluationInputError(f"{where}: no 'annotations' (MIDOG 2025 ground truth)")
        xy_mm = _read_points_mm(entry["annotations"], where)
        domain = entry.get("tumor domain")
        if not (isinstance(domain, int | str) and not isinstance(domain, bool)):
            raise EvaluationInputError(f"{where}: 'tumor domain' must be an integer or a string, found {domain!r}")
        roi_type = entry.get("roi type")
        if roi_type not in ROI_TYPES:
            raise EvaluationInputError(f"{where}: 'roi type' must be one of {list(ROI_TYPES)}, found {roi_type!r}")
        images[_stem(file_name)] = GroundTruthImage(file_name, xy_mm, str(domain), roi_type)
    return images


def _spacing_mm_for(file_name: str, spacing_um: float, images_dir: Path | None) -> tuple[float, float]:
    if images_dir is None:
        return spacing_um / 1000.0, spacing_um / 1000.0
    from model.image_io import read_spacing_mm  # tifffile is only needed with --images

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
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_finite_number(v) for v in bbox)):
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


@dataclass
class GroundTruth:
    """Ground-truth images by stem, unlabelled images skipped, and which format it came in (which rules apply)."""

    images: dict[str, GroundTruthImage]
    skipped_unlabelled: list[str]
    format: str

    @property
    def rules_2025(self) -> bool:
        """2025 ground truth is scored by the 2025 evaluation, whose input checks are stricter."""
        return self.format == GROUND_TRUTH_CONTAINER_2025


def load_ground_truth(
    path: Path, spacing_um: float = DEFAULT_SPACING_UM, images_dir: Path | None = None
) -> GroundTruth:
    """Any of the three ground-truth formats, detected from its structure."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EvaluationInputError(f"ground truth {path}: not readable JSON ({error})") from None
    if isinstance(payload, dict) and "images" in payload and "annotations" in payload:
        images, skipped = _read_midog_ground_truth(payload, path, spacing_um, images_dir)
        return GroundTruth(images, skipped, GROUND_TRUTH_MIDOG_JSON)
    if isinstance(payload, dict) and all(isinstance(value, list) for value in payload.values()):
        return GroundTruth(_read_container_ground_truth(payload, path), [], GROUND_TRUTH_CONTAINER_2022)
    if isinstance(payload, dict) and all(isinstance(value, dict) for value in payload.values()):
        return GroundTruth(_read_2025_ground_truth(payload, path), [], GROUND_TRUTH_CONTAINER_2025)
    raise EvaluationInputError(
        f"ground truth {path}: neither a MIDOG annotation JSON (images/annotations) "
        'nor an evaluation-container file ({"007.tiff": [[x_mm, y_mm, 0], ...]} or, 2025, '
        '{"007.tiff": {"annotations": [...], "tumor domain": 0, "roi type": "hotspot"}})'
    )


def read_ground_truth(
    path: Path, spacing_um: float = DEFAULT_SPACING_UM, images_dir: Path | None = None
) -> tuple[dict[str, GroundTruthImage], list[str]]:
    """Any ground-truth format, detected from its structure; returns images by stem and skipped unlabelled files."""
    ground_truth = load_ground_truth(path, spacing_um, images_dir)
    return ground_truth.images, ground_truth.skipped_unlabelled


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

    def as_dict(self) -> dict:
        """tp, fp, fn, precision, recall, f1: how every report writes counts."""
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
        }


def detection_counts(targets_xy_mm: np.ndarray, predictions_xy_mm: np.ndarray) -> Counts:
    """TP/FP/FN of one image exactly as `evalutils.scorers.score_detection(radius=7.5e-3)`."""
    tp = len(greedy_match(targets_xy_mm, predictions_xy_mm, MATCH_RADIUS_MM))
    return Counts(tp, len(predictions_xy_mm) - tp, len(targets_xy_mm) - tp)


def _boxes(xy_mm: np.ndarray) -> np.ndarray:
    """COCO [x, y, w, h] boxes as the challenge hands them to COCOeval: the corners become a float32 tensor
    (`torch.Tensor`), width and height are subtracted in float32 (xyxy -> xywh), COCOeval then works in float64."""
    xy_mm = np.asarray(xy_mm, dtype=np.float64).reshape(-1, 2)
    low = (xy_mm - AP_BOX_HALF_SIZE_MM).astype(np.float32)
    high = (xy_mm + AP_BOX_HALF_SIZE_MM).astype(np.float32)
    return np.concatenate([low, high - low], axis=1).astype(np.float64)


def _box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of xywh boxes with pycocotools' arithmetic (maskApi `bbIou`), `boxes_a` being the detections."""
    width = np.minimum(boxes_a[:, None, 2] + boxes_a[:, None, 0], boxes_b[None, :, 2] + boxes_b[None, :, 0])
    width = width - np.maximum(boxes_a[:, None, 0], boxes_b[None, :, 0])
    height = np.minimum(boxes_a[:, None, 3] + boxes_a[:, None, 1], boxes_b[None, :, 3] + boxes_b[None, :, 1])
    height = height - np.maximum(boxes_a[:, None, 1], boxes_b[None, :, 1])
    overlapping = (width > 0) & (height > 0)
    intersection = np.where(overlapping, width * height, 0.0)
    area_a = boxes_a[:, 2] * boxes_a[:, 3]
    area_b = boxes_b[:, 2] * boxes_b[:, 3]
    union = area_a[:, None] + area_b[None, :] - intersection
    return np.where(overlapping, intersection / np.where(overlapping, union, 1.0), 0.0)


def _platform_scores(scores: np.ndarray) -> np.ndarray:
    """Scores as the challenge ranks them: torchmetrics holds them in a float32 tensor, so nearer ones tie."""
    return np.asarray(scores, dtype=np.float64).astype(np.float32).astype(np.float64)


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
    Scores and boxes go through float32 first, as the challenge's torch tensors do, so that ties and IoU = 0.5
    borders fall as on the leaderboard.
    """
    recall_thresholds = np.linspace(0.0, 1.0, 101)
    all_scores, all_tp = [], []
    for targets, predictions, image_scores in zip(targets_xy_mm, predictions_xy_mm, scores, strict=True):
        image_scores = _platform_scores(image_scores)
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


@dataclass
class FrocCurve:
    """The MIDOG 2025 FROC score and the curve behind it.

    `thresholds` ascend; `recall` and `fp_per_image` belong to them; `fp_grid` / `recall_on_grid` are the sampled curve
    whose trapezoidal area is `score` (0 to FROC_MAX_FP_PER_IMAGE).
    """

    score: float
    thresholds: np.ndarray
    recall: np.ndarray
    fp_per_image: np.ndarray
    fp_grid: np.ndarray
    recall_on_grid: np.ndarray


def froc(
    targets_xy_mm: Sequence[np.ndarray], predictions_xy_mm: Sequence[np.ndarray], scores: Sequence[np.ndarray]
) -> FrocCurve | None:
    """FROC score of several images as the MIDOG 2025 evaluation computes it; None where it says NaN (no point).

    Every point counts, whatever its name. Thresholds: 40 evenly spaced from the lowest to the highest probability of
    all points (one if they are all equal); at each, points with probability >= threshold are matched per image
    (greedy, 7.5 um), recall = TP / (TP + FN + 1e-6) over all images and false positives are averaged over images.
    The (FP per image, recall) pairs are ordered by `np.argsort` of the FP rates, listed by ascending threshold, as
    the platform orders them: that sort is not stable, and among equal FP rates np.interp uses the last one, so
    there the result is whatever numpy's sort gives (identical for the same numpy on the same CPU). Recall is then
    interpolated at 50 FP rates evenly spaced in [0, 8] (0 left of the data, the last recall right of it) and
    integrated with the trapezoidal rule.
    """
    scores = [np.asarray(s, dtype=np.float64).reshape(-1) for s in scores]
    predictions_xy_mm = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in predictions_xy_mm]
    nonempty = [s for s in scores if len(s)]
    if not nonempty:
        return None
    every_score = np.concatenate(nonempty)
    low, high = float(every_score.min()), float(every_score.max())
    # the platform keys its results by threshold value: equal values from linspace count once, in first position
    thresholds = np.asarray(
        list(dict.fromkeys(np.linspace(low, high, FROC_THRESHOLDS).tolist())) if low != high else [low]
    )
    recall, fp_per_image = [], []
    for threshold in thresholds:
        total, false_positives = Counts(), []
        for targets, predictions, image_scores in zip(targets_xy_mm, predictions_xy_mm, scores, strict=True):
            counts = detection_counts(targets, predictions[image_scores >= threshold])
            total = total + counts
            false_positives.append(counts.fp)
        recall.append(total.tp / (total.tp + total.fn + PLATFORM_EPSILON))
        fp_per_image.append(float(np.mean(false_positives)))
    recall_array, fp_array = np.asarray(recall), np.asarray(fp_per_image)
    order = np.argsort(fp_array)  # default kind on purpose: the platform's tie order, see above
    fp_grid = np.linspace(0.0, FROC_MAX_FP_PER_IMAGE, FROC_SAMPLES)
    recall_on_grid = np.interp(fp_grid, fp_array[order], recall_array[order], left=0.0, right=recall_array[order][-1])
    score = float(np.trapezoid(recall_on_grid, fp_grid))
    return FrocCurve(score, thresholds, recall_array, fp_array, fp_grid, recall_on_grid)


def _platform_ratio(numerator: float, denominator: float) -> float:
    return numerator / (denominator + PLATFORM_EPSILON)


def platform_group_metrics(counts: Counts, ap: float | None, froc_score: float | None, prefix: str) -> dict:
    """One group's numbers under the 2025 platform's names and with its arithmetic, quirks included.

    Its ratios carry a 1e-6 guard (so an empty group has precision 0, recall 0 and F1 1), AP is a float32 and -1
    without ground truth (torchmetrics), FROC is NaN without any point: null here, JSON has no NaN. The overall F1 is
    `f1_score`, a group's is `<prefix>f1`.
    """
    return {
        f"{prefix}precision": _platform_ratio(counts.tp, counts.tp + counts.fp),
        f"{prefix}recall": _platform_ratio(counts.tp, counts.tp + counts.fn),
        f"{prefix}f1" if prefix else "f1_score": (2 * counts.tp + PLATFORM_EPSILON)
        / (2 * counts.tp + counts.fp + counts.fn + PLATFORM_EPSILON),
        f"{prefix}AP": -1.0 if ap is None else float(np.float32(ap)),
        f"{prefix}froc_auc": froc_score,
    }


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
    return {"threshold": float(thresholds[index]), **counts[index].as_dict()}


# ---------------------------------------------------------------------------------------------------- evaluation


@dataclass
class Evaluation:
    """Everything one evaluation found.

    `aggregates`, `per_tumour_type`, `per_roi_type` and `per_image` hold exact ratios (None where undefined);
    `leaderboard` holds the same results under the MIDOG 2025 platform's names and with its arithmetic (its 1e-6
    guards, float32 AP, -1 for AP without ground truth), so that it can be compared with the leaderboard key by key.
    """

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
    per_roi_type: dict = field(default_factory=dict)
    leaderboard: dict = field(default_factory=dict)
    froc_curve: FrocCurve | None = None
    ground_truth_format: str = GROUND_TRUTH_CONTAINER_2022
    predictions_layout: str = LAYOUT_FOLDER

    def to_json(self) -> dict:
        return {
            "aggregates": self.aggregates,
            "per_image": self.per_image,
            "per_tumour_type": self.per_tumour_type,
            "per_roi_type": self.per_roi_type,
            "leaderboard": self.leaderboard,
            "missing_predictions": self.missing_predictions,
            "extra_predictions": self.extra_predictions,
            "skipped_unlabelled": self.skipped_unlabelled,
            "best_threshold": self.best_threshold,
            "rules": "2025" if self.ground_truth_format == GROUND_TRUTH_CONTAINER_2025 else "2022",
            "predictions_layout": self.predictions_layout,
        }


def evaluate(
    predictions_dir: Path,
    ground_truth_path: Path,
    spacing_um: float = DEFAULT_SPACING_UM,
    images_dir: Path | None = None,
) -> Evaluation:
    """Challenge metrics of a predictions folder against a ground-truth file (raises EvaluationInputError).

    Images are taken in the order the platform would meet them (its job order; then images without predictions),
    which decides AP among equal scores; the tables list them by name.
    """
    files = find_prediction_files(predictions_dir)
    truth = load_ground_truth(ground_truth_path, spacing_um, images_dir)
    ground_truth = truth.images
    stems = [stem for stem in files.paths if stem in ground_truth]
    stems += sorted(stem for stem in ground_truth if stem not in files.paths)
    missing = sorted(stem for stem in ground_truth if stem not in files.paths)
    extra = sorted(stem for stem in files.paths if stem not in ground_truth)
    predictions = {
        stem: read_predictions(files.paths[stem], truth.rules_2025) if stem in files.paths else ImagePredictions()
        for stem in stems
    }

    per_image, by_tumour, by_roi = {}, {}, {}
    for stem in stems:
        targets, image = ground_truth[stem].xy_mm, predictions[stem]
        counts = detection_counts(targets, image.xy_mm[image.is_mitosis])
        image_ap = average_precision([targets], [image.xy_mm], [image.probability]).ap
        image_froc = froc([targets], [image.xy_mm], [image.probability])
        tumour_type, roi_type = ground_truth[stem].tumour_type, ground_truth[stem].roi_type
        per_image[stem] = {
            "file_name": ground_truth[stem].file_name,
            "tumour_type": tumour_type,
            **({"roi_type": roi_type} if roi_type is not None else {}),
            "n_ground_truth": len(targets),
            "n_mitotic_figure_points": int(image.is_mitosis.sum()),
            "n_points": len(image.probability),
            **counts.as_dict(),
            "ap": image_ap,
            "froc": None if image_froc is None else image_froc.score,
            "missing_prediction": stem in missing,
        }
        by_tumour.setdefault(tumour_type, []).append(stem)
        if roi_type is not None:
            by_roi.setdefault(roi_type, []).append(stem)

    def summary(selected: list[str]) -> tuple[dict, PrecisionRecall, FrocCurve | None]:
        total = sum((Counts(per_image[s]["tp"], per_image[s]["fp"], per_image[s]["fn"]) for s in selected), Counts())
        arguments = (
            [ground_truth[s].xy_mm for s in selected],
            [predictions[s].xy_mm for s in selected],
            [predictions[s].probability for s in selected],
        )
        curve, froc_curve = average_precision(*arguments), froc(*arguments)
        froc_score = None if froc_curve is None else froc_curve.score
        return {"n_images": len(selected), **total.as_dict(), "ap": curve.ap, "froc": froc_score}, curve, froc_curve

    aggregates, curve, froc_curve = summary(stems)
    per_tumour_type = {name: summary(selected)[0] for name, selected in sorted(by_tumour.items())}
    per_roi_type = {name: summary(by_roi[name])[0] for name in ROI_TYPES if name in by_roi}
    leaderboard = _leaderboard(aggregates, per_tumour_type, per_roi_type if truth.rules_2025 else None)
    thresholds, threshold_counts = f1_by_threshold(
        [ground_truth[s].xy_mm for s in stems],
        [predictions[s].xy_mm[predictions[s].is_mitosis] for s in stems],
        [predictions[s].probability[predictions[s].is_mitosis] for s in stems],
    )
    return Evaluation(
        aggregates,
        {stem: per_image[stem] for stem in sorted(per_image)},
        per_tumour_type,
        missing,
        extra,
        truth.skipped_unlabelled,
        best_threshold(thresholds, threshold_counts),
        curve,
        thresholds,
        threshold_counts,
        per_roi_type,
        leaderboard,
        froc_curve,
        truth.format,
        files.layout,
    )


def _leaderboard(aggregates: dict, per_tumour_type: dict, per_roi_type: dict | None) -> dict:
    """The platform's `aggregates` object: overall, every tumour domain present, and (2025) all three ROI types,
    present or not, as the platform always reports them."""

    def group(metrics: dict | None, prefix: str) -> dict:
        metrics = metrics or {"tp": 0, "fp": 0, "fn": 0, "ap": None, "froc": None}
        counts = Counts(metrics["tp"], metrics["fp"], metrics["fn"])
        return platform_group_metrics(counts, metrics["ap"], metrics["froc"], prefix)

    leaderboard = group(aggregates, "")
    for name, metrics in per_tumour_type.items():
        leaderboard.update(group(metrics, f"tumor_{name}_"))
    if per_roi_type is not None:
        for name in ROI_TYPES:
            leaderboard.update(group(per_roi_type.get(name), f"roi_type_{name}_"))
    return leaderboard


# ---------------------------------------------------------------------------------------------------------- output


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _row(label: str, metrics: dict, width: int) -> str:
    return (
        f"{label:<{width}} {metrics['tp']:>6} {metrics['fp']:>6} {metrics['fn']:>6} "
        f"{_fmt(metrics['precision']):>9} {_fmt(metrics['recall']):>9} "
        f"{_fmt(metrics['f1']):>9} {_fmt(metrics['ap']):>9} {_fmt(metrics.get('froc')):>9}"
    )


def format_tables(evaluation: Evaluation) -> str:
    """Per-image, per-tumour-type, per-ROI-type (2025) and overall tables for the terminal."""
    labels = [*evaluation.per_image, *evaluation.per_tumour_type, *evaluation.per_roi_type, "overall (micro)"]
    width = max(len(label) for label in labels) + 2
    header = (
        f"{'':<{width}} {'TP':>6} {'FP':>6} {'FN':>6} {'precision':>9} {'recall':>9} {'F1':>9} {'AP':>9} {'FROC':>9}"
    )
    lines = ["per image", header]
    for stem, metrics in evaluation.per_image.items():
        lines.append(_row(stem, metrics, width) + ("  (no prediction file)" if metrics["missing_prediction"] else ""))
    is_2025 = evaluation.ground_truth_format == GROUND_TRUTH_CONTAINER_2025
    lines += ["", "per tumour domain" if is_2025 else "per tumour type", header]
    lines += [_row(name, metrics, width) for name, metrics in evaluation.per_tumour_type.items()]
    if evaluation.per_roi_type:
        lines += ["", "per ROI type", header]
        lines += [_row(name, metrics, width) for name, metrics in evaluation.per_roi_type.items()]
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
    """metrics.json (atomic), the precision-recall curve, F1 against the probability threshold and the FROC curve."""
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
    paths = [metrics_path, pr_path, f1_path]

    froc_curve = evaluation.froc_curve
    if froc_curve is not None:  # no point at all: the platform's FROC is NaN, there is no curve to draw
        figure, axes = plt.subplots(figsize=(6, 4))
        order = np.argsort(froc_curve.fp_per_image, kind="stable")
        axes.plot(froc_curve.fp_per_image[order], froc_curve.recall[order], "o", ms=3, label="thresholds")
        axes.plot(froc_curve.fp_grid, froc_curve.recall_on_grid, lw=1.5, label="interpolated")
        axes.set(xlabel="false positives per image", ylabel="recall", xlim=(0, FROC_MAX_FP_PER_IMAGE), ylim=(0, 1.02))
        axes.set_title(f"FROC score {froc_curve.score:.4f} (area, 0..{FROC_MAX_FP_PER_IMAGE:g}; all points)")
        axes.legend(loc="lower right")
        froc_path = report_dir / "froc.png"
        figure.savefig(froc_path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        paths.append(froc_path)
    return paths


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="MIDOG 2022 / 2025 offline evaluation: challenge-identical F1 (micro, 7.5 um greedy matching), AP "
        "and FROC, overall, per tumour type and per ROI type.",
        add_help=add_help,
    )
    parser.add_argument(
        "--predictions",
        type=Path,
        required=True,
        help="folder with one grand-challenge 'Multiple points' JSON per image, named <image stem>.json, or in the "
        "platform's evaluation layout (predictions.json listing the jobs, <pk>/output/mitotic-figures.json; "
        "detected automatically; required)",
    )
    parser.add_argument(
        "--ground-truth",
        type=Path,
        required=True,
        help='evaluation-container ground truth: 2022 ({"007.tiff": [[x_mm, y_mm, 0], ...]}) or 2025 ({"007.tiff": '
        '{"annotations": [...], "tumor domain": 0, "roi type": "hotspot"}}, with the 2025 input checks), or a MIDOG '
        "annotation JSON (format detected automatically; required)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        help="folder for metrics.json, precision_recall.png, f1_threshold.png and froc.png (default: none, terminal "
        "only)",
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
