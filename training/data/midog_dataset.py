"""Reader for MIDOG-format datasets: MIDOG 2021 (`MIDOG.json`), MIDOG 2022 (`MIDOG2022_training.json`) and MIDOG++.

A MIDOG dataset is one annotation JSON (`info, licenses, images, categories, annotations`) next to a folder of
TIFF images (`001.tiff`, `002.tiff`, ...). Annotations are `[x1, y1, x2, y2]` boxes in absolute pixels, always
50x50 and centred on the cell; category 1 is a mitotic figure, category 2 an imposter (a "not mitotic figure", which
training uses as a hard negative). The format itself (category ids, boxes, MIDOG 2022 id ranges) is defined once in
`evaluation.midog_annotations`, which the evaluation's ground-truth reader uses too.

Why this module exists: the 354 labelled MIDOG 2022 images are ~40 GB decoded, so the reader lists records and reads
pixel windows lazily from the TIFF tiles / strips (`read_window`); and a broken download (missing file, box outside
the image, duplicated ids) must be reported in one go (`DatasetError` lists every problem) rather than one crash per
training run. The reader also works on the annotation file alone (``images_dir=None``) for statistics.

Domains (tumour type and scanner) come from the image's ``tumor_type`` key when present (MIDOG++), else from the
published id ranges of MIDOG 2021 / 2022; they drive the stratified split in `training.data.split`.

Example::

    from training.data.midog_dataset import load_dataset, read_window
    dataset = load_dataset("MIDOG2022_training.json", images_dir="images/")
    window = read_window(dataset.images[0], x0_px=1000, y0_px=2000, width_px=256, height_px=256)
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import tifffile

from evaluation.midog_annotations import (
    BOX_SIZE_PX,
    CATEGORY_NAMES,
    IMPOSTER,
    MIDOG2022_TUMOUR_TYPES,
    MITOTIC_FIGURE,
    UNLABELLED_ID_RANGE,
    Box,
    box_centre_px,
    box_corners,
)
from model.command_line import command_parser
from model.image_io import read_spacing_mm
from model.spacing import DEFAULT_SPACING_MM

__all__ = [
    "BOX_SIZE_PX",
    "CATEGORY_NAMES",
    "IMAGE_SUFFIXES",
    "IMPOSTER",
    "MITOTIC_FIGURE",
    "Annotation",
    "DatasetError",
    "ImageRecord",
    "MidogDataset",
    "load_dataset",
    "read_scanner_csv",
    "read_spacing_mm",
    "read_window",
    "unlisted_images",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES: tuple[str, ...] = (".tiff", ".tif")
BORDER_TOLERANCE_PX: float = BOX_SIZE_PX / 2
"""How far a box centre may lie outside its image and still be a real annotation: MIDOG++ has two cells cut by
the image border whose centres are 2 and 5 px outside (annotation ids 15363, 15728). Farther means a wrong image."""

# MIDOG 2021 and the breast part of MIDOG 2022 / MIDOG++: scanner by image id (inclusive ranges). 151-200 (Leica
# GT450) carry no annotations in MIDOG.json / MIDOG++.json: verified against the files (test_midog_dataset.py).
_BREAST_SCANNERS: tuple[tuple[int, int, str], ...] = (
    (1, 50, "Hamamatsu XR"),
    (51, 100, "Hamamatsu S360"),
    (101, 150, "Aperio CS2"),
    (151, 200, "Leica GT450"),
)
_UNLABELLED_BREAST_IDS: tuple[int, int] = next(
    (low, high) for low, high, name in _BREAST_SCANNERS if name == "Leica GT450"
)
_HUMAN_BREAST = "human breast cancer"
# MIDOG 2022 training set by id (inclusive): tumour type, scanner, labelled. The id ranges are the evaluation's
# (`evaluation.midog_annotations.MIDOG2022_TUMOUR_TYPES`, the one definition); the scanners are added here.
_MIDOG2022_SCANNERS: dict[str, str | None] = {
    _HUMAN_BREAST: None,  # from _BREAST_SCANNERS
    "canine lung cancer": "3D Histech",
    "canine lymphoma": "3D Histech",
    "canine cutaneous mast cell tumor": "Aperio CS2",
    "human neuroendocrine tumor": "Hamamatsu XR",
}
_MIDOG2022_RANGES: tuple[tuple[int, int, str, str | None, bool], ...] = tuple(
    (low, high, tumour_type, _MIDOG2022_SCANNERS[tumour_type], True)
    for low, high, tumour_type in MIDOG2022_TUMOUR_TYPES
) + ((*UNLABELLED_ID_RANGE, "human melanoma", "Hamamatsu XR", False),)
# Scanner of each MIDOG++ tumour type other than breast (from MIDOG++'s datasets_xvalidation.csv). The soft tissue
# sarcomas come from two labs with the same scanner model.
_MIDOGPP_SCANNERS: dict[str, str] = {
    "canine lung cancer": "3D Histech",
    "canine lymphosarcoma": "3D Histech",
    "canine lymphoma": "3D Histech",
    "canine cutaneous mast cell tumor": "Aperio CS2",
    "human neuroendocrine tumor": "Hamamatsu XR",
    "canine soft tissue sarcoma": "3D Histech",
    "human melanoma": "Hamamatsu XR",
}
FLAVOURS: tuple[str, ...] = ("auto", "midog2021", "midog2022", "midog++")


class DatasetError(ValueError):
    """A dataset has problems; ``problems`` lists every one of them (the message too, one per line)."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        listing = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in {source}:\n{listing}")


@dataclass(frozen=True)
class Annotation:
    """One annotated cell: the centre of its 50x50 box in pixels (x = column, y = row) and its category."""

    x_px: float
    y_px: float
    label: int
    annotation_id: int
    bbox_px: Box

    @property
    def is_mitotic_figure(self) -> bool:
        return self.label == MITOTIC_FIGURE


@dataclass
class ImageRecord:
    """One image of a dataset: metadata and annotations only; pixels are read on request with `read_window`.

    ``path`` is None when the dataset was loaded without an image folder. ``domain`` joins tumour type and scanner
    (e.g. "human breast cancer / Aperio CS2") and is what the train/validation split stratifies on. ``labeled`` is
    False for the images that the challenge ships without annotations (MIDOG 2021 Leica, MIDOG 2022 melanoma).
    """

    file_name: str
    image_id: int
    width_px: int
    height_px: int
    tumor_type: str
    scanner: str | None
    labeled: bool
    annotations: list[Annotation] = field(default_factory=list)
    path: Path | None = None
    _spacing_mm: tuple[float, float] | None = field(default=None, repr=False, compare=False)

    @property
    def domain(self) -> str:
        return self.tumor_type if self.scanner is None else f"{self.tumor_type} / {self.scanner}"

    @property
    def width(self) -> int:
        return self.width_px

    @property
    def height(self) -> int:
        return self.height_px

    def count(self, label: int) -> int:
        """Number of annotations of one category."""
        return sum(1 for annotation in self.annotations if annotation.label == label)

    @property
    def n_mitotic_figures(self) -> int:
        return self.count(MITOTIC_FIGURE)

    @property
    def n_imposters(self) -> int:
        return self.count(IMPOSTER)

    def centres_px(self, label: int | None = None) -> np.ndarray:
        """(N, 2) float array of (x, y) pixel centres, optionally of one category only."""
        rows = [(a.x_px, a.y_px) for a in self.annotations if label is None or a.label == label]
        return np.asarray(rows, dtype=np.float64).reshape(-1, 2)

    @property
    def spacing_mm(self) -> tuple[float, float]:
        """(x, y) pixel spacing in mm from the TIFF resolution tags (cached; default 0.25 um/px with a warning)."""
        if self._spacing_mm is None:
            if self.path is None:
                raise FileNotFoundError(f"{self.file_name}: no image folder given, spacing unknown")
            self._spacing_mm = read_spacing_mm(self.path)
        return self._spacing_mm


@dataclass
class MidogDataset:
    """All records of one annotation file; ``flavour`` says which id-range conventions were applied."""

    source: Path
    flavour: str
    images: list[ImageRecord]
    info: dict
    images_dir: Path | None = None

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self):
        return iter(self.images)

    def by_id(self, image_id: int) -> ImageRecord:
        for record in self.images:
            if record.image_id == image_id:
                return record
        raise KeyError(image_id)

    @property
    def labeled_images(self) -> list[ImageRecord]:
        return [record for record in self.images if record.labeled]

    def counts(self, key: str = "tumor_type") -> dict[str, tuple[int, int, int]]:
        """Per ``key`` ("tumor_type" or "domain"): (images, mitotic figures, imposters), sorted by key."""
        table: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])
        for record in self.images:
            row = table[getattr(record, key)]
            row[0] += 1
            row[1] += record.n_mitotic_figures
            row[2] += record.n_imposters
        return {name: (row[0], row[1], row[2]) for name, row in sorted(table.items())}

    def totals(self) -> tuple[int, int]:
        """(mitotic figures, imposters) over the whole dataset."""
        return (sum(r.n_mitotic_figures for r in self.images), sum(r.n_imposters for r in self.images))


def _detect_flavour(payload: dict) -> str:
    """Which id-range conventions apply: MIDOG++ has ``tumor_type`` per image; 2021 and 2022 are told apart by the
    ``info.description`` year, else by the highest image id (MIDOG 2021 has 200 images, MIDOG 2022 405)."""
    images = payload.get("images") or []
    if images and all(isinstance(image, dict) and "tumor_type" in image for image in images):
        return "midog++"
    description = str((payload.get("info") or {}).get("description", ""))
    if "2021" in description:
        return "midog2021"
    if "2022" in description:
        return "midog2022"
    ids = [image.get("id") for image in images if isinstance(image, dict) and isinstance(image.get("id"), int)]
    return "midog2022" if ids and max(ids) > 200 else "midog2021"


def _breast_scanner(image_id: int) -> str | None:
    for low, high, scanner in _BREAST_SCANNERS:
        if low <= image_id <= high:
            return scanner
    return None


def _domain_of(image: dict, flavour: str, scanners: dict[int, str]) -> tuple[str, str | None, bool]:
    """(tumour type, scanner, labelled) of one image entry under the given conventions."""
    image_id = int(image["id"])
    scanner = scanners.get(image_id)
    if "tumor_type" in image:
        tumor_type = str(image["tumor_type"])
        if flavour == "midog++":
            if tumor_type == _HUMAN_BREAST:
                scanner = scanner or _breast_scanner(image_id)
                return tumor_type, scanner, not (_UNLABELLED_BREAST_IDS[0] <= image_id <= _UNLABELLED_BREAST_IDS[1])
            return tumor_type, scanner or _MIDOGPP_SCANNERS.get(tumor_type), True
        return tumor_type, scanner, True
    if flavour == "midog2021":
        labelled = not (_UNLABELLED_BREAST_IDS[0] <= image_id <= _UNLABELLED_BREAST_IDS[1])
        return _HUMAN_BREAST, scanner or _breast_scanner(image_id), labelled
    for low, high, tumor_type, range_scanner, labeled in _MIDOG2022_RANGES:
        if low <= image_id <= high:
            if range_scanner is None:
                range_scanner = _breast_scanner(image_id)
            return tumor_type, scanner or range_scanner, labeled
    return "unknown", scanner, True


def read_scanner_csv(path: str | Path) -> dict[int, str]:
    """Scanner per image id from a MIDOG++ ``datasets_xvalidation.csv``-style file (``Slide;...;Scanner;...``).

    The synthetic generator writes one too, so its scanner domains reach the split without extra JSON keys.
    """
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter=";"))
    if rows and ("Slide" not in rows[0] or "Scanner" not in rows[0]):
        raise DatasetError(str(path), ["scanner csv needs the columns 'Slide' and 'Scanner' (';'-separated)"])
    # MIDOG++'s file spells one scanner "Hamammatsu XR"; normalise so domains match the id-range names.
    return {int(row["Slide"]): row["Scanner"].replace("Hamammatsu", "Hamamatsu") for row in rows}


def _find_image(images_dir: Path, file_name: str) -> Path | None:
    """The image file of a JSON entry: its exact name, else the same stem with another TIFF suffix."""
    path = images_dir / file_name
    if path.is_file():
        return path
    stem = Path(file_name).stem
    for suffix in IMAGE_SUFFIXES:
        candidate = images_dir / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _outside_px(x_px: float, y_px: float, width_px: int, height_px: int) -> float:
    """Distance in pixels by which a point lies outside the pixel-centre extent [0, size - 1]; 0 inside."""
    return max(0.0, -x_px, x_px - (width_px - 1), -y_px, y_px - (height_px - 1))


def _image_where(image_id: object, file_name: object) -> str:
    """How problems name an image entry."""
    return f"image id {image_id} ({file_name})"


_T = TypeVar("_T")


class _Problems:
    """Every problem found in one annotation file, so that a broken download is reported in one go.

    Each validator below checks one thing and raises a `DatasetError` with one problem; `passes` and `value` run a
    validator, keep its problem and let the reading go on, and `raise_if_any` raises them all together."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: list[str] = []

    def value(self, validator: Callable[..., _T], *args: object) -> _T | None:
        """What `validator(*args)` returns, or None (its problem kept) when it raises."""
        try:
            return validator(*args)
        except DatasetError as error:
            self.lines.extend(error.problems)
            return None

    def passes(self, validator: Callable[..., object], *args: object) -> bool:
        """Whether `validator(*args)` raises no problem (its problem kept when it does)."""
        count = len(self.lines)
        self.value(validator, *args)
        return len(self.lines) == count

    def raise_if_any(self) -> None:
        if self.lines:
            raise DatasetError(self.source, self.lines)


# Validators: one check each, raising DatasetError(source, [one line naming the entry]).


def _read_json(path: Path, source: str) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DatasetError(source, [f"cannot read annotation file: {error}"]) from error


def _check_object(payload: object, source: str) -> dict:
    if not isinstance(payload, dict):
        raise DatasetError(source, ["top level is not a JSON object"])
    return payload


def _check_top_level_list(payload: dict, key: str, source: str) -> None:
    if not isinstance(payload.get(key), list):
        raise DatasetError(source, [f"top-level key '{key}' missing or not a list"])


def _check_images_dir(images_dir: Path, source: str) -> None:
    if not images_dir.is_dir():
        raise DatasetError(source, [f"image folder {images_dir} does not exist"])


def _check_entry(item: object, where: str, keys: tuple[str, ...], source: str) -> dict:
    """`item` itself when it is a JSON object with every key in `keys` (the rest of its checks can read it)."""
    if not isinstance(item, dict):
        raise DatasetError(source, [f"{where}: not an object"])
    missing = [key for key in keys if key not in item]
    if missing:
        raise DatasetError(source, [f"{where}: missing key(s) {', '.join(missing)}"])
    return item


def _check_image_id(image_id: object, where: str, source: str) -> None:
    if not isinstance(image_id, int) or isinstance(image_id, bool):
        raise DatasetError(source, [f"{where}: image id {image_id!r} is not an integer"])


def _check_image_size(width: object, height: object, where: str, source: str) -> None:
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise DatasetError(source, [f"{where}: width/height {width!r}x{height!r} are not positive integers"])


def _check_new_image_id(record: ImageRecord, records: dict[int, ImageRecord], source: str) -> None:
    if record.image_id in records:
        first = records[record.image_id].file_name
        raise DatasetError(source, [f"duplicate image id {record.image_id} ({first} and {record.file_name})"])


def _check_new_file_name(record: ImageRecord, file_names: dict[str, int], source: str) -> None:
    if record.file_name in file_names:
        first = file_names[record.file_name]
        raise DatasetError(
            source, [f"duplicate file name {record.file_name} (image ids {first} and {record.image_id})"]
        )


def _image_file(images_dir: Path, record: ImageRecord, source: str) -> Path:
    path = _find_image(images_dir, record.file_name)
    if path is None:
        where = _image_where(record.image_id, record.file_name)
        raise DatasetError(source, [f"{where}: image file missing in {images_dir}"])
    return path


def _check_tiff_size(record: ImageRecord, source: str) -> None:
    """The TIFF header's size (no pixel data read) against the JSON's."""
    where = _image_where(record.image_id, record.file_name)
    try:
        with tifffile.TiffFile(record.path) as tiff:
            height_px, width_px = tiff.pages.first.shape[:2]
    except (OSError, tifffile.TiffFileError) as error:
        raise DatasetError(source, [f"{where}: cannot open image: {error}"]) from error
    if (width_px, height_px) != (record.width_px, record.height_px):
        raise DatasetError(
            source,
            [f"{where}: file is {width_px}x{height_px} px, JSON says {record.width_px}x{record.height_px} px"],
        )


def _check_new_annotation_id(annotation_id: object, seen: set, source: str) -> None:
    if annotation_id in seen:
        raise DatasetError(source, [f"duplicate annotation id {annotation_id}"])


def _check_category(category: object, where: str, source: str) -> None:
    if category not in CATEGORY_NAMES:
        raise DatasetError(source, [f"{where}: unknown category_id {category!r} (expected 1 or 2)"])


def _box_corners(bbox: object, where: str, source: str) -> Box:
    """(x1, y1, x2, y2) in pixels from a JSON box of four finite numbers."""
    box = box_corners(bbox)
    if box is None:
        raise DatasetError(source, [f"{where}: bbox {bbox!r} is not [x1, y1, x2, y2]"])
    return box


def _check_box_order(box: Box, bbox: list, where: str, source: str) -> None:
    x1, y1, x2, y2 = box
    if not (x2 > x1 and y2 > y1):
        raise DatasetError(source, [f"{where}: bbox {bbox} does not have x2 > x1 and y2 > y1"])


def _annotated_image(records: dict[int, ImageRecord], image_id: object, where: str, source: str) -> ImageRecord:
    record = records.get(image_id)
    if record is None:
        raise DatasetError(source, [f"{where}: refers to unknown image id {image_id!r}"])
    return record


def _check_centre_inside(box: Box, record: ImageRecord, where: str, source: str) -> None:
    """A centre more than `BORDER_TOLERANCE_PX` outside means a wrong image; closer, a cell cut by the border (kept,
    with a warning)."""
    x_px, y_px = box_centre_px(box)
    margin_px = _outside_px(x_px, y_px, record.width_px, record.height_px)
    if margin_px > BORDER_TOLERANCE_PX:
        raise DatasetError(
            source,
            [f"{where}: centre ({x_px:g}, {y_px:g}) px outside the {record.width_px}x{record.height_px} px image"],
        )
    if margin_px > 0:
        logger.warning(
            "%s: %s: centre (%g, %g) px lies %g px outside the image (a cell cut by the border); kept",
            source,
            where,
            x_px,
            y_px,
            margin_px,
        )


# Warnings: what a usable file may lack or misname.


def _warn_missing_optional_keys(payload: dict, source: str) -> None:
    for key in ("info", "licenses", "categories"):
        if key not in payload:
            logger.warning("%s: top-level key '%s' missing", source, key)


def _warn_unexpected_category_names(categories: list, source: str) -> None:
    for category in categories:
        if isinstance(category, dict) and category.get("id") in CATEGORY_NAMES:
            expected = CATEGORY_NAMES[category["id"]]
            if category.get("name") != expected:
                logger.warning(
                    "%s: category %s is named %r, expected %r", source, category["id"], category.get("name"), expected
                )


# Composition: each entry is read through its validators; a failed check skips the entry or only marks it unusable.

_IMAGE_KEYS = ("file_name", "id", "width", "height")
_ANNOTATION_KEYS = ("bbox", "category_id", "image_id", "id")


def _top_level(path: Path, source: str) -> dict:
    """The annotation file's object, with its "images" and "annotations" lists (both checked before raising)."""
    payload = _check_object(_read_json(path, source), source)
    problems = _Problems(source)
    for key in ("images", "annotations"):
        problems.passes(_check_top_level_list, payload, key, source)
    problems.raise_if_any()
    return payload


def _image_record(image: object, where: str, flavour: str, scanners: dict[int, str], source: str) -> ImageRecord:
    """The record of one "images" entry (no file yet); raises the first problem that leaves nothing to read."""
    image = _check_entry(image, where, _IMAGE_KEYS, source)
    _check_image_id(image["id"], where, source)
    _check_image_size(image["width"], image["height"], _image_where(image["id"], image["file_name"]), source)
    tumor_type, scanner, labeled = _domain_of(image, flavour, scanners)
    return ImageRecord(
        file_name=str(image["file_name"]),
        image_id=image["id"],
        width_px=image["width"],
        height_px=image["height"],
        tumor_type=tumor_type,
        scanner=scanner,
        labeled=labeled,
    )


def _image_records(
    images: list,
    flavour: str,
    scanners: dict[int, str],
    images_dir: Path | None,
    check_image_sizes: bool,
    problems: _Problems,
) -> dict[int, ImageRecord]:
    """Records by image id. An image whose file is missing or shares its name is kept (its annotations are still
    checked against it); its problem is still reported."""
    source = problems.source
    records: dict[int, ImageRecord] = {}
    file_names: dict[str, int] = {}
    for position, image in enumerate(images):
        record = problems.value(_image_record, image, f"images[{position}]", flavour, scanners, source)
        if record is None or not problems.passes(_check_new_image_id, record, records, source):
            continue
        problems.passes(_check_new_file_name, record, file_names, source)
        file_names[record.file_name] = record.image_id
        if images_dir is not None:
            record.path = problems.value(_image_file, images_dir, record, source)
            if record.path is not None and check_image_sizes:
                problems.passes(_check_tiff_size, record, source)
        records[record.image_id] = record
    return records


def _attach_annotations(annotations: list, records: dict[int, ImageRecord], problems: _Problems) -> None:
    """Add each valid "annotations" entry to its image's record; every problem of an entry is reported."""
    source = problems.source
    seen_ids: set = set()
    for position, entry in enumerate(annotations):
        annotation = problems.value(_check_entry, entry, f"annotations[{position}]", _ANNOTATION_KEYS, source)
        if annotation is None:
            continue
        annotation_id, category = annotation["id"], annotation["category_id"]
        where = f"annotation id {annotation_id} (image id {annotation['image_id']})"
        usable = problems.passes(_check_new_annotation_id, annotation_id, seen_ids, source)
        seen_ids.add(annotation_id)
        usable &= problems.passes(_check_category, category, where, source)
        box = problems.value(_box_corners, annotation["bbox"], where, source)
        if box is None:
            continue
        usable &= problems.passes(_check_box_order, box, annotation["bbox"], where, source)
        record = problems.value(_annotated_image, records, annotation["image_id"], where, source)
        if record is None:
            continue
        usable &= problems.passes(_check_centre_inside, box, record, where, source)
        if usable:
            record.annotations.append(Annotation(*box_centre_px(box), int(category), int(annotation_id), box))


def load_dataset(
    annotations_path: str | Path,
    images_dir: str | Path | None = None,
    flavour: str = "auto",
    scanner_csv: str | Path | None = None,
    check_image_sizes: bool = False,
) -> MidogDataset:
    """Read and validate a MIDOG annotation file (and, when given, check it against an image folder).

    Parameters
    ----------
    annotations_path : path of ``MIDOG2022_training.json`` / ``MIDOG.json`` / ``MIDOG++.json``.
    images_dir : folder with the TIFFs; None reads annotations only (statistics, splits).
    flavour : "auto", "midog2021", "midog2022" or "midog++": which id ranges give tumour type and scanner when an
        image has no ``tumor_type`` key. "auto" decides from the file (see `_detect_flavour`).
    scanner_csv : optional ``datasets_xvalidation.csv``-style file overriding the scanner per image id.
    check_image_sizes : also open every TIFF header and compare its size with the JSON (cheap, no pixel data).

    Returns
    -------
    MidogDataset with one `ImageRecord` per JSON image, sorted by image id.

    Raises
    ------
    DatasetError listing every problem found: malformed entries, duplicate image / annotation ids, unknown category,
    annotation of an unknown image, box not ``x2 > x1`` / ``y2 > y1``, box centre outside its image, missing image
    file, image size different from the JSON. A centre up to `BORDER_TOLERANCE_PX` outside is kept with a warning.
    """
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}")
    annotations_path = Path(annotations_path)
    source = str(annotations_path)
    payload = _top_level(annotations_path, source)
    _warn_missing_optional_keys(payload, source)
    flavour = _detect_flavour(payload) if flavour == "auto" else flavour
    scanners = read_scanner_csv(scanner_csv) if scanner_csv is not None else {}
    images_dir = Path(images_dir) if images_dir is not None else None
    if images_dir is not None:
        _check_images_dir(images_dir, source)

    problems = _Problems(source)
    records = _image_records(payload["images"], flavour, scanners, images_dir, check_image_sizes, problems)
    _warn_unexpected_category_names(payload.get("categories") or [], source)
    _attach_annotations(payload["annotations"], records, problems)
    problems.raise_if_any()
    images = sorted(records.values(), key=lambda record: record.image_id)
    for record in images:
        if not record.labeled and record.annotations:  # an image we believed unlabelled is annotated: trust the file
            record.labeled = True
    return MidogDataset(
        source=annotations_path, flavour=flavour, images=images, info=payload.get("info") or {}, images_dir=images_dir
    )


def unlisted_images(dataset: MidogDataset) -> list[Path]:
    """TIFFs in the image folder that the annotation file does not list (MIDOG 2022's unlabelled melanoma images
    and the synthetic generator's ``--unlabeled`` images), sorted by the first integer in the name."""
    if dataset.images_dir is None:
        return []
    listed = {record.path.name for record in dataset.images if record.path is not None}
    found = [p for p in dataset.images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.name not in listed]

    def sort_key(path: Path) -> tuple[int, str]:
        match = re.search(r"\d+", path.stem)
        return (int(match.group()) if match else -1, path.name)

    return sorted(found, key=sort_key)


def _segment_grid(page: tifffile.TiffPage) -> tuple[int, int]:
    """(segment height, segment width) in pixels: a tile, or a strip of ``rowsperstrip`` full rows."""
    if page.is_tiled:
        return page.tilelength, page.tilewidth
    return min(page.rowsperstrip, page.imagelength), page.imagewidth


def _read_region(tiff: tifffile.TiffFile, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Pixels [y0:y1, x0:x1] (inside the image) of the first page, decoding only the tiles / strips that overlap."""
    page = tiff.pages.first
    if page.is_memmappable and page.planarconfig == 1 and page.is_contiguous:
        # Uncompressed and contiguous: map the file itself and copy only the window.
        shape = page.shaped[-3:] if page.samplesperpixel > 1 else page.shape
        mapped = np.memmap(
            tiff.filehandle.path,
            dtype=page.dtype.newbyteorder(tiff.byteorder),
            mode="r",
            offset=page.dataoffsets[0],
            shape=shape,
        )
        return np.array(mapped[y0:y1, x0:x1])
    if page.planarconfig != 1:
        return np.asarray(page.asarray()[y0:y1, x0:x1])  # planar separate: rare, read whole page
    segment_h, segment_w = _segment_grid(page)
    per_row = -(-page.imagewidth // segment_w)
    samples = page.samplesperpixel
    out = np.zeros((y1 - y0, x1 - x0, samples), dtype=page.dtype)
    handle = tiff.filehandle
    for row in range(y0 // segment_h, (y1 - 1) // segment_h + 1):
        for col in range(x0 // segment_w, (x1 - 1) // segment_w + 1):
            index = row * per_row + col
            handle.seek(page.dataoffsets[index])
            data, _, _ = page.decode(handle.read(page.databytecounts[index]), index)
            tile = data.reshape(data.shape[-3:]) if data is not None else None
            top, left = row * segment_h, col * segment_w
            ys, ye = max(y0, top), min(y1, top + segment_h)
            xs, xe = max(x0, left), min(x1, left + segment_w)
            if tile is not None:
                out[ys - y0 : ye - y0, xs - x0 : xe - x0] = tile[ys - top : ye - top, xs - left : xe - left]
    return out


def _to_rgb_uint8(region: np.ndarray) -> np.ndarray:
    if region.ndim == 2:
        region = region[..., None]
    if region.shape[-1] == 1:
        region = np.repeat(region, 3, axis=-1)
    region = region[..., :3]  # drop alpha
    if region.dtype != np.uint8:
        if np.issubdtype(region.dtype, np.integer) and np.iinfo(region.dtype).max == 65535:
            region = (region // 257).astype(np.uint8)
        else:
            region = np.clip(region, 0, 255).astype(np.uint8)
    return region


def read_window(
    record: ImageRecord | str | Path,
    x0_px: int,
    y0_px: int,
    width_px: int,
    height_px: int,
    padding: str = "reflect",
) -> np.ndarray:
    """Read a ``height_px x width_px x 3`` uint8 RGB window whose top-left pixel is (x0_px, y0_px).

    Only the TIFF tiles / strips that overlap the window are decoded (or the memory map is sliced for uncompressed
    contiguous files), so whole-slide-sized images are never loaded. Parts of the window outside the image are
    filled by ``padding``: "reflect" mirrors the image at its border without repeating the edge pixel
    (``numpy.pad(mode="reflect")``, the same as the dense inference padding), "constant" fills white (255, empty
    glass), so a patch centred near the border still has natural-looking context.
    """
    if padding not in ("reflect", "constant"):
        raise ValueError(f"padding must be 'reflect' or 'constant', got {padding!r}")
    if width_px <= 0 or height_px <= 0:
        raise ValueError(f"window size must be positive, got width_px={width_px}, height_px={height_px}")
    path = record.path if isinstance(record, ImageRecord) else Path(record)
    if path is None:
        raise FileNotFoundError(f"{record.file_name}: dataset loaded without images_dir")
    x0_px, y0_px = int(x0_px), int(y0_px)
    with tifffile.TiffFile(path) as tiff:
        image_h, image_w = tiff.pages.first.shape[:2]
        ys, ye = max(0, y0_px), min(image_h, y0_px + height_px)
        xs, xe = max(0, x0_px), min(image_w, x0_px + width_px)
        if ys >= ye or xs >= xe:
            if padding == "constant":
                return np.full((height_px, width_px, 3), 255, dtype=np.uint8)
            # Entirely outside: reflect a 1-px-deep border read around the nearest edge point.
            ys, ye = min(max(0, y0_px), image_h - 1), min(max(0, y0_px), image_h - 1) + 1
            xs, xe = min(max(0, x0_px), image_w - 1), min(max(0, x0_px), image_w - 1) + 1
        region = _to_rgb_uint8(_read_region(tiff, ys, ye, xs, xe))
    pad = ((ys - y0_px, y0_px + height_px - ye), (xs - x0_px, x0_px + width_px - xe), (0, 0))
    pad = tuple((max(0, before), max(0, after)) for before, after in pad)
    if any(before or after for before, after in pad):
        if padding == "constant":
            region = np.pad(region, pad, mode="constant", constant_values=255)
        else:
            region = _reflect_pad(region, pad)
    return region[:height_px, :width_px]


def _reflect_pad(region: np.ndarray, pad: Sequence[tuple[int, int]]) -> np.ndarray:
    """numpy reflect padding that also works when the pad exceeds the region (reflects repeatedly; a 1-px region
    is repeated, because there is nothing to mirror)."""
    if min(region.shape[0], region.shape[1]) == 1:
        return np.pad(region, pad, mode="edge")
    return np.pad(region, pad, mode="reflect")


def _summary_lines(dataset: MidogDataset) -> Iterable[str]:
    yield f"{dataset.source} ({dataset.flavour}): {len(dataset)} images"
    for key in ("tumor_type", "domain"):
        yield f"by {key}: images, mitotic figures, imposters"
        for name, (n_images, n_mitoses, n_imposters) in dataset.counts(key).items():
            yield f"  {name:<55} {n_images:4d} {n_mitoses:6d} {n_imposters:6d}"
    n_mitoses, n_imposters = dataset.totals()
    yield f"total: {n_mitoses} mitotic figures, {n_imposters} imposters"


DESCRIPTION = "Validate a MIDOG-format dataset and print counts per tumour type and domain."
"""What `--help` says first."""


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = command_parser("training.data.midog_dataset", DESCRIPTION, add_help)
    parser.add_argument("annotations", type=Path, help="annotation JSON (MIDOG2022_training.json, MIDOG++.json, ...)")
    parser.add_argument(
        "--images-dir",
        type=Path,
        default=None,
        help="folder with the TIFF images; default: none (annotations only, no file checks)",
    )
    parser.add_argument(
        "--flavour",
        choices=FLAVOURS,
        default="auto",
        help="id-range conventions for tumour type / scanner (default: auto)",
    )
    parser.add_argument(
        "--scanner-csv",
        type=Path,
        default=None,
        help="datasets_xvalidation.csv-style file giving the scanner per image id (default: none)",
    )
    parser.add_argument(
        "--check-sizes",
        action="store_true",
        help="open every TIFF header and compare its size with the JSON (default: off)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    dataset = load_dataset(args.annotations, args.images_dir, args.flavour, args.scanner_csv, args.check_sizes)
    for line in _summary_lines(dataset):
        logger.info(line)
    if dataset.images_dir is not None:
        logger.info(
            "%d image(s) in the folder are not in the annotation file (unlabelled)", len(unlisted_images(dataset))
        )
    logger.info("spacing default when a TIFF has no resolution tags: %.5f mm", DEFAULT_SPACING_MM)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
