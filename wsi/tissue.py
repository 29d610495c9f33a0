"""Tissue on a slide's thumbnail: which tiles to read, how much tissue the count is per, where a hotspot may lie.

The pixel rule is the project's (`model.tissue.tissue_mask`: stained, not bright glass, not grey); on a slide it is
cleaned at the thumbnail's scale, because dust, pen marks' grey edges and single stained pixels on glass would
otherwise count as tissue: holes smaller than `MIN_HOLE_UM2` are filled and specks smaller than `MIN_TISSUE_UM2`
removed (a 50 um speck is smaller than a high-power field's detail and holds no countable tumour).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import morphology

from model.tissue import tissue_mask

MIN_TISSUE_UM2 = 50.0 * 50.0
"""Connected tissue smaller than this (a 50 um square) is a speck, not tissue."""
MIN_HOLE_UM2 = 100.0 * 100.0
"""Holes in tissue smaller than this (lumina, fat cells) still count as tissue area, as a pathologist's area does."""


def thumbnail_tissue(thumbnail_rgb: np.ndarray, um_per_thumbnail_px: float) -> np.ndarray:
    """Boolean tissue mask on the thumbnail's grid."""
    mask = tissue_mask(thumbnail_rgb)
    mask = ndimage.binary_closing(mask, structure=np.ones((3, 3), bool))
    px_area_um2 = um_per_thumbnail_px**2
    # max_size: holes and specks of at most this many pixels go
    mask = morphology.remove_small_holes(mask, max_size=max(0, int(MIN_HOLE_UM2 / px_area_um2) - 1))
    return morphology.remove_small_objects(mask, max_size=max(0, int(MIN_TISSUE_UM2 / px_area_um2) - 1))


def tissue_area_mm2(mask: np.ndarray, um_per_thumbnail_px: float) -> float:
    """Area of the mask in mm2."""
    return float(mask.sum()) * (um_per_thumbnail_px / 1000.0) ** 2
