"""A downscaled picture of the detections for a person to look at (not used by the challenge)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from model.atomic_files import atomic_output
from model.matching import MATCH_RADIUS_UM
from model.spacing import px_from_um


def draw_overlay(
    image_rgb: np.ndarray,
    xy_px: np.ndarray,
    is_mitosis: np.ndarray,
    probability: np.ndarray,
    spacing_mm: tuple[float, float],
    path: Path,
    candidate_floor: float,
    max_side_px: int = 2048,
) -> None:
    """Green circles: mitotic figures; thin yellow: other candidates above half the lowest named probability (above
    the bundle's `candidate_floor` when nothing is named). Written atomically, in the format its suffix names."""
    scale = min(1.0, max_side_px / max(image_rgb.shape[:2]))
    step = max(1, int(round(1 / scale)))
    picture = Image.fromarray(np.ascontiguousarray(image_rgb[::step, ::step]))
    draw = ImageDraw.Draw(picture)
    radius = max(4.0, px_from_um(MATCH_RADIUS_UM, spacing_mm) / step)
    shown_floor = 0.5 * float(probability[is_mitosis].min()) if is_mitosis.any() else candidate_floor
    for (x, y), named, p in zip(np.asarray(xy_px).reshape(-1, 2), is_mitosis, probability, strict=True):
        if not named and p < shown_floor:
            continue
        cx, cy = x / step, y / step
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        draw.ellipse(box, outline=(0, 200, 0) if named else (230, 200, 0), width=3 if named else 1)
    picture_format = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    with atomic_output(path) as temporary:
        picture.save(temporary, format=picture_format)
