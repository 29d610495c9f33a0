"""What the two dataset makers (`training.data.synthetic`, `training.data.composite`) share: positions kept apart by a
minimum distance, and the MIDOG 2022 annotation file they write (the format `training.data.midog_dataset` reads)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from training.data.midog_dataset import BOX_SIZE_PX, CATEGORY_NAMES


def spaced_positions(
    candidates: Iterable[tuple[int, int]],
    count: int,
    min_distance_px: float,
    taken: Sequence[tuple[int, int]] = (),
) -> list[tuple[int, int]]:
    """The first `count` candidates (in the order given) at least `min_distance_px` from each other and from `taken`.

    `candidates` may be a lazy generator that draws random numbers as it goes: it is advanced only until `count`
    positions are found, so a seeded generator's later draws do not depend on how many candidates were not needed.
    Positions are pairs in one convention, (x, y) or (y, x), the same for `candidates` and `taken`.
    """
    chosen: list[tuple[int, int]] = []
    if count <= 0:
        return chosen
    for a, b in candidates:
        if all((a - ta) ** 2 + (b - tb) ** 2 >= min_distance_px**2 for ta, tb in [*taken, *chosen]):
            chosen.append((a, b))
            if len(chosen) == count:
                break
    return chosen


def midog_image_entry(image_id: int, file_name: str, width_px: int, height_px: int, tumour_type: str) -> dict:
    """One `images` entry of a MIDOG 2022 annotation file."""
    return {
        "license": 1,
        "file_name": file_name,
        "id": image_id,
        "width": width_px,
        "height": height_px,
        "tumor_type": tumour_type,
    }


def write_midog_json(
    path: Path, info: dict, licence: dict, images: Sequence[dict], cells: Iterable[tuple[int, int, int, int]]
) -> Path:
    """Write a MIDOG 2022 annotation file: `images` (`midog_image_entry`), and one annotation per cell (image id,
    x px, y px, category id) as a `BOX_SIZE_PX` box centred on it, numbered from 1 in the order given."""
    half_box_px = BOX_SIZE_PX // 2
    annotations = [
        {
            "bbox": [x - half_box_px, y - half_box_px, x + half_box_px, y + half_box_px],
            "category_id": label,
            "image_id": image_id,
            "id": number,
        }
        for number, (image_id, x, y, label) in enumerate(cells, start=1)
    ]
    payload = {
        "info": info,
        "licenses": [licence | {"id": 1}],
        "images": list(images),
        "categories": [{"id": k, "name": name} for k, name in CATEGORY_NAMES.items()],
        "annotations": annotations,
    }
    Path(path).write_text(json.dumps(payload, indent=1) + "\n")
    return Path(path)
