"""The MIDOG annotation format, defined once: category ids, boxes, image ids and the MIDOG 2022 id ranges.

A MIDOG annotation file (`MIDOG.json`, `MIDOG2022_training.json`, `MIDOG++.json`) is COCO-style: "images" (id,
file_name, width, height, optionally tumor_type) and "annotations" (id, image_id, category_id, bbox as
``[x1, y1, x2, y2]`` absolute pixels, 50x50 and centred on the cell). Two readers use it and share this module: the
evaluation's ground truth (`evaluation.inputs`: the mitotic figures' centres, first problem raised) and training's
dataset reader (`training.data.midog_dataset`: both categories, every problem listed). It lives in `evaluation`
because the offline evaluation imports nothing from training.
"""

from __future__ import annotations

import math
import re

import numpy as np

MITOTIC_FIGURE: int = 1
"""Category id of a mitotic figure (the positive class, and the challenge's only ground truth)."""
IMPOSTER: int = 2
"""Category id of a "not mitotic figure": a look-alike annotated as a hard negative."""
CATEGORY_NAMES: dict[int, str] = {MITOTIC_FIGURE: "mitotic figure", IMPOSTER: "not mitotic figure"}
BOX_SIZE_PX: int = 50
"""Side of every MIDOG annotation box; the cell is at its centre."""

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

Box = tuple[float, float, float, float]

_LARGEST_FLOAT_INTEGER = int(np.finfo(np.float64).max)


def is_finite_number(value: object) -> bool:
    """A JSON number that is neither a boolean nor NaN / infinity, nor an integer too large for a float (a 400-digit
    integer is valid JSON; `math.isfinite` would raise OverflowError on it)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and -_LARGEST_FLOAT_INTEGER <= value <= _LARGEST_FLOAT_INTEGER


def is_annotation_file(payload: object) -> bool:
    """Whether a parsed JSON document is a MIDOG annotation file (an object with "images" and "annotations")."""
    return isinstance(payload, dict) and "images" in payload and "annotations" in payload


def box_corners(bbox: object) -> Box | None:
    """(x1, y1, x2, y2) in pixels from a JSON box of four finite numbers; None when it is not one."""
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_finite_number(v) for v in bbox)):
        return None
    x1, y1, x2, y2 = (float(v) for v in bbox)
    return x1, y1, x2, y2


def box_centre_px(box: Box) -> tuple[float, float]:
    """The annotated cell's position: the centre of its box, (x, y) in pixels."""
    x1, y1, x2, y2 = box
    return (x1 + x2) / 2.0, (y1 + y2) / 2.0


def first_integer(file_name: str) -> int | None:
    """The image id as the MIDOG validators define it: the first integer in the file name (None if there is none, or
    if it has more digits than any id: int() refuses more than 4300 of them)."""
    match = re.search(r"\d+", file_name)
    digits = (match.group().lstrip("0") or "0") if match else ""
    return int(digits) if 0 < len(digits) <= 18 else None


def tumour_type_of(file_name: str) -> str:
    """MIDOG 2022 tumour type from the id ranges; files outside the ranges are 'unknown'."""
    image_id = first_integer(file_name)
    for low, high, tumour_type in MIDOG2022_TUMOUR_TYPES:
        if image_id is not None and low <= image_id <= high:
            return tumour_type
    return UNKNOWN_TUMOUR_TYPE


def in_unlabelled_range(file_name: str) -> bool:
    """Whether the file name's id is one of MIDOG 2022's unlabelled images (human melanoma, 355-405)."""
    image_id = first_integer(file_name)
    low, high = UNLABELLED_ID_RANGE
    return image_id is not None and low <= image_id <= high
