"""Is there a micrograph under a candidate? A guard against naming mitoses in inputs that are not tissue images.

The networks were trained on H&E micrographs only, and a 70-layer classifier extrapolates freely: on an image of
uniform random noise it gives probabilities above 0.9 at a hundred places. A microscope cannot produce such an image:
its optics blur at the scale of a pixel (40x, NA ~0.75: ~0.4 um resolution = 1.6 px at 0.25 um/px), so neighbouring
pixels are correlated. The roughness of a window, the mean absolute difference of neighbouring grey values divided by
their standard deviation, is 0.18-0.55 on every real source here (MIDOG 2021, TUPAC16, MIDOG++ crops, MiDeSeC fields,
MITOS 2012 fields, canine tiles: 3,300 windows, maximum 0.547) and 1.13 for independent noise (0.98 even after a
Gaussian blur of sigma 0.5 px). Points whose receptive-field window is rougher than `MAX_ROUGHNESS` keep their
probability but are never named "mitotic figure".
"""

from __future__ import annotations

import numpy as np

from model.geometry import RECEPTIVE_FIELD_PX

MAX_ROUGHNESS = 0.8
"""Between the roughest real window seen (0.55) and lightly blurred noise (0.98); see the module docstring."""


def roughness(window_rgb: np.ndarray) -> float:
    """Mean absolute neighbour difference of the grey values over their standard deviation (0 for a flat window)."""
    grey = np.asarray(window_rgb, dtype=np.float32).mean(axis=-1)
    if min(grey.shape) < 2:
        return 0.0
    step = (np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean()) / 2
    spread = float(grey.std())
    return float(step / spread) if spread > 1e-6 else 0.0


def looks_like_micrograph(image_rgb: np.ndarray, xy_px: np.ndarray) -> np.ndarray:
    """For each (x, y) point: is its receptive-field window (clipped to the image) no rougher than `MAX_ROUGHNESS`?"""
    half = RECEPTIVE_FIELD_PX // 2
    height, width = image_rgb.shape[:2]
    verdict = np.ones(len(xy_px), dtype=bool)
    for index, (x, y) in enumerate(np.asarray(xy_px, dtype=np.float64).reshape(-1, 2)):
        row, col = int(round(y)), int(round(x))
        window = image_rgb[max(row - half, 0) : min(row + half, height), max(col - half, 0) : min(col + half, width)]
        verdict[index] = roughness(window) <= MAX_ROUGHNESS
    return verdict
