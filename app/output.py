"""The grand-challenge "Multiple points" output.

Written through `model.atomic_files` (a crash never leaves a partial file).

Schema (MIDOG 2022 and 2025, track 1; no extra keys anywhere):
`{"name": "Points of interest", "type": "Multiple points", "points": [{"name": "mitotic figure",
"point": [x_mm, y_mm, 0], "probability": 0.93}, ...], "version": {"major": 1, "minor": 0}}`
"""

from __future__ import annotations

import numpy as np

MITOTIC_FIGURE = "mitotic figure"
NON_MITOTIC_FIGURE = "non-mitotic figure"
_DECIMALS_MM = 7  # 0.1 nm: far below a pixel, keeps files small and diffs stable


def multiple_points(xy_mm: np.ndarray, probability: np.ndarray, is_mitosis: np.ndarray) -> dict:
    """Build the platform document from physical positions (mm), probabilities and the mitosis decision."""
    points = [
        {
            "name": MITOTIC_FIGURE if named else NON_MITOTIC_FIGURE,
            "point": [round(float(x), _DECIMALS_MM), round(float(y), _DECIMALS_MM), 0],
            "probability": round(min(1.0, max(0.0, float(p))), 6),
        }
        for (x, y), p, named in zip(np.asarray(xy_mm).reshape(-1, 2), probability, is_mitosis, strict=True)
    ]
    return {
        "name": "Points of interest",
        "type": "Multiple points",
        "points": points,
        "version": {"major": 1, "minor": 0},
    }
