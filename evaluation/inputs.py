"""Reading what is evaluated: prediction JSONs (folder or platform layout) and ground truth in any of its formats.

Bad input raises `EvaluationInputError` with a one-line message meant for the user: pixel coordinates where mm are
expected would otherwise give F1 = 0 without complaint. With 2025 ground truth the 2025 input rules apply (a point
without a name, or with a coordinate below -7.5 um, is an error as well).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.output import MITOTIC_FIGURE, NON_MITOTIC_FIGURE
from evaluation.metrics import MATCH_RADIUS_MM
from evaluation.midog_annotations import MITOTIC_FIGURE as MIDOG_MITOTIC_CATEGORY_ID
from evaluation.midog_annotations import (
    box_centre_px,
    box_corners,
    in_unlabelled_range,
    is_annotation_file,
    is_finite_number,
    tumour_type_of,
)
from model.spacing import DEFAULT_SPACING_MM, PLAUSIBLE_SPACING_MM, describe_um

MAX_COORDINATE_MM: float = 10.0
"""A MIDOG region is ~1.7 mm wide: any coordinate above 10 means pixels were written where mm are expected."""
MIN_COORDINATE_MM_2025: float = -MATCH_RADIUS_MM
"""MIDOG 2025 rejects x or y below minus the matching radius: such a point cannot match anything in the image."""
DEFAULT_SPACING_UM: float = DEFAULT_SPACING_MM * 1000.0
"""Pixel size assumed for MIDOG JSON boxes when no image is at hand (the model's, `model.spacing`)."""
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

_ALLOWED_DOCUMENT_KEYS = {"name", "type", "points", "version"}
_ALLOWED_POINT_KEYS = {"name", "point", "probability"}
_POINT_NAMES = {MITOTIC_FIGURE, NON_MITOTIC_FIGURE}


class EvaluationInputError(ValueError):
    """Input that cannot be evaluated; the message is one line meant for the user."""


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


_EXCERPT_CHARACTERS = 160


def excerpt(value: object) -> str:
    """`value` as JSON, cut to a few words: messages stay one short line whatever the input holds (a list of a
    million numbers, an integer of thousands of digits, nesting deeper than the recursion limit)."""
    try:
        text = json.dumps(value)  # one line: JSON escapes newlines in strings
    except (TypeError, ValueError, RecursionError):  # too deep, too many digits: say what it is instead
        text = f"a {type(value).__name__} that cannot be shown"
    return text if len(text) <= _EXCERPT_CHARACTERS else text[: _EXCERPT_CHARACTERS - 3] + "..."


def _mm_problem(xy: Sequence[float]) -> str | None:
    if any(abs(float(value)) > MAX_COORDINATE_MM for value in xy):
        return f"coordinate {excerpt(list(xy))} is above {MAX_COORDINATE_MM:g}: pixel coordinates where mm are expected"
    return None


def _check_mm(xy: Sequence[float], where: str) -> None:
    problem = _mm_problem(xy)
    if problem is not None:
        raise EvaluationInputError(f"{where}: {problem}")


class _DuplicateKey(ValueError):
    """A JSON object naming the same key twice (Python's json keeps the last one silently)."""


def _refuse_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise _DuplicateKey(f"the key {excerpt(duplicate)} appears twice in one object")
    return result


def read_json(path: Path, label: str, unique_keys: bool = False) -> object:
    """Parse a JSON file; anything that stops it is one `EvaluationInputError` naming `label` and the problem.

    Besides syntax errors and unreadable files, Python's json raises RecursionError on nesting deeper than the
    interpreter's recursion limit and ValueError on a number of more than 4300 digits: input problems, not crashes.
    `unique_keys` refuses an object that names a key twice (json keeps the last one without a word), which in a
    ground-truth file would drop an image or its points.
    """
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise EvaluationInputError(f"{label}: not readable ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise EvaluationInputError(f"{label}: not readable JSON (not UTF-8 text: {error.reason})") from None
    try:
        return json.loads(text, object_pairs_hook=_refuse_duplicate_keys if unique_keys else None)
    except RecursionError:
        raise EvaluationInputError(f"{label}: not readable JSON (nested deeper than Python can parse)") from None
    except _DuplicateKey as error:
        raise EvaluationInputError(f"{label}: {error}") from None
    except ValueError as error:  # JSONDecodeError, or a number with more digits than int() accepts
        reason = str(error).split(";")[0]  # drop the int-conversion hint about sys.set_int_max_str_digits
        raise EvaluationInputError(f"{label}: not readable JSON ({reason})") from None


def read_predictions(path: Path, rules_2025: bool = False) -> ImagePredictions:
    """Read and validate one "Multiple points" file; every schema violation names the file and the problem.

    `rules_2025` adds what the MIDOG 2025 evaluation rejects and 2022 accepted: a point without a name (2022 counted
    it as a mitotic figure) and x or y below -7.5 um.
    """
    document = read_json(path, str(path))
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
    checked = _read_valid_points(points, rules_2025)
    if checked is not None:
        return checked
    xy_mm, probability, is_mitosis = [], [], []
    for index, entry in enumerate(points):
        problem = _point_problem(entry, rules_2025)
        if problem is not None:  # name the point itself too: an index alone is hard to find
            raise EvaluationInputError(f"{path}: points[{index}] {excerpt(entry)}: {problem}")
        xy_mm.append(entry["point"][:2])
        probability.append(float(entry["probability"]))
        is_mitosis.append(entry.get("name", MITOTIC_FIGURE) == MITOTIC_FIGURE)
    return ImagePredictions(
        np.asarray(xy_mm, dtype=np.float64).reshape(-1, 2),
        np.asarray(probability, dtype=np.float64),
        np.asarray(is_mitosis, dtype=bool),
    )


def _read_valid_points(points: list, rules_2025: bool) -> ImagePredictions | None:
    """All points at once when every one of them is valid (the usual case), else None.

    The same rules as `_point_problem`, checked on whole columns: checking point by point took 7 s of a 300,000-point
    file. Anything unusual (a wrong type anywhere, an integer too large for a float) answers None, and the point by
    point check then names the first bad point.
    """
    try:
        if not all(type(entry) is dict and entry.keys() <= _ALLOWED_POINT_KEYS for entry in points):
            return None
        coordinates = [entry["point"] for entry in points]
        scores = [entry["probability"] for entry in points]
        if rules_2025:
            names = [entry["name"] for entry in points]
        else:  # the 2022 challenge counts unnamed points as mitotic figures
            names = [entry.get("name", MITOTIC_FIGURE) for entry in points]
        if not all(type(point) is list and len(point) == 3 for point in coordinates):
            return None
        number_types = {type(value) for point in coordinates for value in point} | {type(value) for value in scores}
        if not number_types <= {int, float} or not set(names) <= _POINT_NAMES:
            return None  # bool is neither int nor float by type(): refused as in `is_finite_number`
        xyz = np.asarray(coordinates, dtype=np.float64).reshape(-1, 3)
        probability = np.asarray(scores, dtype=np.float64)
    except (KeyError, TypeError, OverflowError):  # a missing key, an unhashable name, a huge integer
        return None
    if not (np.isfinite(xyz).all() and np.isfinite(probability).all()):
        return None
    if (np.abs(xyz) > MAX_COORDINATE_MM).any() or ((probability < 0.0) | (probability > 1.0)).any():
        return None
    if rules_2025 and (xyz[:, :2] < MIN_COORDINATE_MM_2025).any():
        return None
    is_mitosis = np.fromiter((name == MITOTIC_FIGURE for name in names), dtype=bool, count=len(names))
    return ImagePredictions(xyz[:, :2].copy(), probability, is_mitosis)


def _point_problem(entry: object, rules_2025: bool) -> str | None:
    """What is wrong with one entry of 'points', or None. Builds no message for a good point: files hold up to
    hundreds of thousands of them."""
    if not isinstance(entry, dict):
        return "must be an object"
    if not entry.keys() <= _ALLOWED_POINT_KEYS:
        return f"has unexpected key(s) {sorted(set(entry) - _ALLOWED_POINT_KEYS)}"
    point = entry.get("point")
    if not (isinstance(point, list) and len(point) == 3 and all(is_finite_number(value) for value in point)):
        return f"'point' must be 3 finite numbers [x_mm, y_mm, 0], found {excerpt(point)}"
    problem = _mm_problem(point)
    if problem is not None:
        return problem
    if rules_2025 and min(point[:2]) < MIN_COORDINATE_MM_2025:
        return f"coordinate below {MIN_COORDINATE_MM_2025:g} mm (MIDOG 2025 rejects points outside the image)"
    score = entry.get("probability")
    if not (is_finite_number(score) and 0.0 <= score <= 1.0):
        return f"'probability' must be a number in [0, 1], found {excerpt(score)}"
    if rules_2025 and "name" not in entry:
        return f"no 'name' (MIDOG 2025 requires one of {sorted(_POINT_NAMES)})"
    name = entry.get("name", MITOTIC_FIGURE)  # the 2022 challenge counts unnamed points as mitotic figures
    if not (isinstance(name, str) and name in _POINT_NAMES):
        return f"'name' must be one of {sorted(_POINT_NAMES)}, found {excerpt(name)}"
    return None


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
        jobs = read_json(jobs_path, str(jobs_path))
    if not isinstance(jobs, list):
        return PredictionFiles(LAYOUT_FOLDER, {path.stem: path for path in sorted(folder.glob("*.json"))})
    others = sorted(path.name for path in folder.glob("*.json") if path.name != PLATFORM_JOBS_FILE)
    if not jobs and others:  # which layout, and why, rather than "no prediction file"
        raise EvaluationInputError(
            f"{jobs_path} holds an empty list, which makes this folder the platform's layout (a list of jobs), with no "
            f"job; the folder also holds {len(others)} per-image file(s) ({', '.join(others[:3])}"
            f"{', ...' if len(others) > 3 else ''}): remove or rename {PLATFORM_JOBS_FILE} to evaluate those"
        )
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


def _stem(file_name: str) -> str:
    return Path(file_name).stem


def _read_points_mm(points: object, where: str) -> np.ndarray:
    if not isinstance(points, list):
        raise EvaluationInputError(f"{where} must map to a list of [x_mm, y_mm, 0] points")
    for point in points:
        if not (isinstance(point, list) and len(point) in (2, 3) and all(is_finite_number(v) for v in point)):
            raise EvaluationInputError(f"{where}: ground-truth point must be [x_mm, y_mm, 0], found {excerpt(point)}")
        _check_mm(point, where)
    return np.asarray([point[:2] for point in points], dtype=np.float64).reshape(-1, 2)


def _add_image(images: dict[str, GroundTruthImage], image: GroundTruthImage, path: Path) -> None:
    """Key an image by its name stem, refusing a second image of the same stem.

    Predictions are matched to ground truth by stem (`<stem>.json`, or the stem of the platform job's image name), so
    `001.tiff` and `001.tif`, or `a/001.tiff` and `b/001.tiff`, would both claim the same prediction file; keeping
    one of them, as a dict would, silently drops the other image and its mitoses.
    """
    stem = _stem(image.file_name)
    if stem in images:
        raise EvaluationInputError(
            f"ground truth {path}: images {excerpt(images[stem].file_name)} and {excerpt(image.file_name)} have the "
            f"same name stem {excerpt(stem)}: a prediction file {stem}.json would belong to both"
        )
    images[stem] = image


def _read_container_ground_truth(payload: dict, path: Path) -> dict[str, GroundTruthImage]:
    images: dict[str, GroundTruthImage] = {}
    for file_name, points in payload.items():
        xy_mm = _read_points_mm(points, f"{path}: {excerpt(file_name)}")
        _add_image(images, GroundTruthImage(file_name, xy_mm, tumour_type_of(file_name)), path)
    return images


def _read_2025_ground_truth(payload: dict, path: Path) -> dict[str, GroundTruthImage]:
    """MIDOG 2025 container file: points under "annotations", plus the image's "tumor domain" and "roi type"."""
    images: dict[str, GroundTruthImage] = {}
    for file_name, entry in payload.items():
        where = f"{path}: {excerpt(file_name)}"
        if "annotations" not in entry:
            raise EvaluationInputError(f"{where}: no 'annotations' (MIDOG 2025 ground truth)")
        xy_mm = _read_points_mm(entry["annotations"], where)
        domain = entry.get("tumor domain")
        if not (isinstance(domain, int | str) and not isinstance(domain, bool)):
            raise EvaluationInputError(
                f"{where}: 'tumor domain' must be an integer or a string, found {excerpt(domain)}"
            )
        roi_type = entry.get("roi type")
        if roi_type not in ROI_TYPES:
            raise EvaluationInputError(
                f"{where}: 'roi type' must be one of {list(ROI_TYPES)}, found {excerpt(roi_type)}"
            )
        _add_image(images, GroundTruthImage(file_name, xy_mm, str(domain), roi_type), path)
    return images


def check_spacing_um(spacing_um: float) -> None:
    """Refuse a `--spacing-um` that is not a microscope's pixel size.

    It converts MIDOG JSON pixel boxes to mm, so a wrong value moves every ground-truth point: 0 or a negative value
    folds them onto the origin, infinity or NaN makes them undefined, and 1e9 puts them kilometres away, each a
    plausible score of 0 rather than an error. Accepted: any microscope's pixel size
    (`model.spacing.PLAUSIBLE_SPACING_MM`, 0.05-5 um/px; the MIDOG scanners: 0.23-0.25). The evaluation scores any
    detector's points, so it is not bound to the resolutions this detector serves.
    """
    low_um, high_um = (value * 1000.0 for value in PLAUSIBLE_SPACING_MM)
    if not (isinstance(spacing_um, int | float) and math.isfinite(spacing_um) and low_um <= spacing_um <= high_um):
        raise EvaluationInputError(
            f"--spacing-um must be a microscope's pixel size, {low_um:g}-{high_um:g} um/px (MIDOG scanners: about "
            f"{DEFAULT_SPACING_UM:g}), got {spacing_um}"
        )


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
    images: dict[str, GroundTruthImage] = {}
    skipped: list[str] = []
    if not isinstance(payload["images"], list) or not isinstance(payload["annotations"], list):
        raise EvaluationInputError(f"{path}: 'images' and 'annotations' must be lists")
    by_id = _midog_images_by_id(payload["images"], path)
    _add_mitotic_centres_px(payload["annotations"], by_id, path)
    for image, centres_px in by_id.values():
        file_name = image["file_name"]
        has_tumour_type = "tumor_type" in image
        if not has_tumour_type and not centres_px and in_unlabelled_range(file_name):
            skipped.append(file_name)
            continue
        xy_mm = _centres_mm(centres_px, file_name, spacing_um, images_dir, path)
        tumour_type = str(image["tumor_type"]) if has_tumour_type else tumour_type_of(file_name)
        _add_image(images, GroundTruthImage(file_name, xy_mm, tumour_type), path)
    return images, skipped


def _midog_images_by_id(images: list, path: Path) -> dict[int | str, tuple[dict, list]]:
    """Each "images" entry by its id, with an empty list for its mitotic figures' centres.

    Image ids must be unique (a repeated id would hand one image's annotations to the other and drop the first), and
    integers or strings (anything else cannot be looked up, or `true` would equal 1).
    """
    by_id: dict[int | str, tuple[dict, list]] = {}
    for image in images:
        if not (isinstance(image, dict) and isinstance(image.get("file_name"), str) and _is_id(image.get("id"))):
            raise EvaluationInputError(
                f"{path}: every image needs a 'file_name' and an integer or string 'id', found {excerpt(image)}"
            )
        if image["id"] in by_id:
            raise EvaluationInputError(
                f"{path}: images {excerpt(by_id[image['id']][0]['file_name'])} and {excerpt(image['file_name'])} "
                f"have the same id {excerpt(image['id'])}"
            )
        by_id[image["id"]] = (image, [])
    return by_id


def _add_mitotic_centres_px(annotations: list, by_id: dict[int | str, tuple[dict, list]], path: Path) -> None:
    """Append each mitotic figure's box centre (pixels) to its image's list; imposters are not ground truth."""
    for annotation in annotations:
        image_id = annotation.get("image_id") if isinstance(annotation, dict) else None
        if not (_is_id(image_id) and image_id in by_id):
            raise EvaluationInputError(f"{path}: annotation without a known 'image_id': {excerpt(annotation)}")
        if annotation.get("category_id") != MIDOG_MITOTIC_CATEGORY_ID:
            continue  # imposters (category 2) are not ground truth for the challenge
        box = box_corners(annotation.get("bbox"))
        if box is None:
            raise EvaluationInputError(
                f"{path}: annotation bbox must be [x1, y1, x2, y2] pixels, found {excerpt(annotation.get('bbox'))}"
            )
        by_id[image_id][1].append(box_centre_px(box))


def _centres_mm(
    centres_px: list[tuple[float, float]], file_name: str, spacing_um: float, images_dir: Path | None, path: Path
) -> np.ndarray:
    """Pixel centres times the image's spacing, refusing any beyond a region's size: a wrong spacing shows here."""
    spacing_mm = _spacing_mm_for(file_name, spacing_um, images_dir)
    xy_mm = np.asarray(centres_px, dtype=np.float64).reshape(-1, 2) * np.asarray(spacing_mm[:2])
    for xy in xy_mm.tolist():
        problem = _mm_problem(xy)
        if problem is not None:
            raise EvaluationInputError(
                f"{path}: {excerpt(file_name)} at {describe_um(spacing_mm)}: {problem}; check --spacing-um or the "
                "image's resolution tags"
            )
    return xy_mm


def _is_id(value: object) -> bool:
    return isinstance(value, int | str) and not isinstance(value, bool)


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
    check_spacing_um(spacing_um)
    payload = read_json(path, f"ground truth {path}", unique_keys=True)
    if is_annotation_file(payload):
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


def check_scorable(truth: GroundTruth, files: PredictionFiles, ground_truth_path: Path, predictions_dir: Path) -> None:
    """Refuse an evaluation whose numbers would only look like a score.

    - No ground-truth image (an empty file, or only the unlabelled MIDOG 2022 images): nothing to evaluate.
    - No mitotic figure in any image. A single image without one is legitimate and scored (MIDOG 2025's "random"
      regions can be empty; F1 is summed over images), but the challenges' test sets always hold mitoses: with none
      at all recall is 0/0, AP is torchmetrics' "no ground truth" value (-1) and the FROC recall is 0 at every
      threshold, so F1 would count false positives only and a wrong file (mitoses under another category id, the
      imposters' file, the wrong split) would read as an algorithm that finds nothing.
    - No prediction file, or none that belongs to a ground-truth image (files named after other images, a different
      naming scheme): every image would count as "no detections", F1 0 with exit code 0.
    """
    where = f"ground truth {ground_truth_path}"
    if not truth.images:
        skipped = f" ({len(truth.skipped_unlabelled)} unlabelled images skipped)" if truth.skipped_unlabelled else ""
        raise EvaluationInputError(f"{where}: no image to evaluate{skipped}")
    if not any(len(image.xy_mm) for image in truth.images.values()):
        raise EvaluationInputError(
            f"{where}: no mitotic figure in any of its {len(truth.images)} images: recall and AP are undefined "
            f"(MIDOG JSON: mitoses are category_id {MIDOG_MITOTIC_CATEGORY_ID})"
        )
    if not files.paths:
        raise EvaluationInputError(
            f"--predictions {predictions_dir}: no prediction file (<image stem>.json per image, or the platform's "
            f"{PLATFORM_JOBS_FILE})"
        )
    if not any(stem in truth.images for stem in files.paths):
        raise EvaluationInputError(
            f"--predictions {predictions_dir}: none of its {len(files.paths)} prediction files belongs to a "
            f"ground-truth image (predictions: {excerpt(sorted(files.paths)[:5])}; ground truth: "
            f"{excerpt(sorted(truth.images)[:5])})"
        )
