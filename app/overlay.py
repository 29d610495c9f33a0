"""A downscaled picture of the detections for a person to look at (not used by the challenge).

Rings of the challenge's matching radius: green for the named mitotic figures, thin yellow for the next most likely
candidates, each with its probability beside it; a legend in the top-left corner says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from model.atomic_files import atomic_output
from model.matching import MATCH_RADIUS_UM
from model.spacing import px_from_um

MITOSIS_COLOUR = (0, 200, 0)
CANDIDATE_COLOUR = (230, 200, 0)


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
    """Green rings: mitotic figures; thin yellow: other candidates above half the lowest named probability (above
    the bundle's `candidate_floor` when nothing is named). Written atomically, in the format its suffix names."""
    scale = min(1.0, max_side_px / max(image_rgb.shape[:2]))
    step = max(1, int(round(1 / scale)))
    picture = Image.fromarray(np.ascontiguousarray(image_rgb[::step, ::step]))
    draw = ImageDraw.Draw(picture)
    radius = max(4.0, px_from_um(MATCH_RADIUS_UM, spacing_mm) / step)
    font = ImageFont.load_default(size=max(10, min(24, round(radius))))
    shown_floor = 0.5 * float(probability[is_mitosis].min()) if is_mitosis.any() else candidate_floor
    shown = is_mitosis | (np.asarray(probability) >= shown_floor)
    points = zip(np.asarray(xy_px).reshape(-1, 2)[shown], is_mitosis[shown], probability[shown], strict=True)
    for (x, y), named, p in points:
        cx, cy = x / step, y / step
        colour = MITOSIS_COLOUR if named else CANDIDATE_COLOUR
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), outline=colour, width=3 if named else 1)
        draw.text((cx + radius + 2, cy - radius), f"{p:.2f}", fill=colour, font=font, stroke_width=1, stroke_fill=0)
    _draw_legend(draw, font, int(is_mitosis.sum()), int((shown & ~is_mitosis).sum()), shown_floor)
    picture_format = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    with atomic_output(path) as temporary:
        picture.save(temporary, format=picture_format)


def _draw_legend(
    draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont, named: int, others: int, shown_floor: float
) -> None:
    """What the colours and numbers mean, on a white box in the top-left corner."""
    lines = [
        (MITOSIS_COLOUR, f"{named} mitotic figure{'s' * (named != 1)} (named by the detector)"),
        (CANDIDATE_COLOUR, f"{others} other candidate{'s' * (others != 1)} with probability >= {shown_floor:.2f}"),
        ((0, 0, 0), "number beside a ring: its probability"),
    ]
    height = font.size + 6
    width = max(draw.textlength(text, font=font) for _, text in lines) + 3 * height
    draw.rectangle((0, 0, width, height * len(lines) + 6), fill=(255, 255, 255))
    for row, (colour, text) in enumerate(lines):
        top = 4 + row * height
        if colour != (0, 0, 0):
            draw.ellipse((6, top + 2, 6 + height - 6, top + height - 4), outline=colour, width=2)
        draw.text((2 * height, top), text, fill=(0, 0, 0), font=font)
