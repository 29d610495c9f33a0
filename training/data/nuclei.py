"""Centres of hematoxylin-dense nuclei in an H&E image, to use as negative training sites that sit on nuclei.

Why: a mitosis classifier whose negatives are grid points learns "dark blob versus stroma", because most grid points
fall on stroma, cytoplasm or glass. It then fires on every nucleus. Negatives centred on nuclei (normal tumour nuclei,
lymphocytes, stromal and apoptotic cells) teach it "nucleus, but not mitosis". The sampler takes these centres and
drops the ones near an annotated mitosis. Mitotic figures are hematoxylin-dense too, so they get centres here as well.
In anaphase and telophase each daughter chromosome set gets its own centre, up to about 8 um from the annotated
centre, so the exclusion radius has to be wider than that.

How: take the hematoxylin optical density of Ruifrok & Johnston's colour deconvolution. It equals
``skimage.color.rgb2hed(rgb)[..., 0]``, but is computed from a 256-entry lookup table per channel in float32, so that
a whole 7215 x 5412 tile needs a few hundred MB and not rgb2hed's float64 copies. Smooth it with a gaussian whose
width is given in micrometres, then take its local maxima at least ``min_distance_um`` apart. A maximum counts when it
exceeds a threshold that adapts to the image's own stain: ``OTSU_FACTOR`` times Otsu's threshold of the smoothed
density over the tissue pixels. That threshold separates nuclei from cytoplasm and stroma whether the staining is
strong (MiDeSeC: about 0.035) or pale (MITOS 2012: about 0.01). The threshold never goes below ``MIN_HEMATOXYLIN``.
Blank glass, an image with almost no tissue, and a uniform image give no centres.

The local maxima use a small neighbourhood (``PEAK_RADIUS_UM``), and only after that are they thinned to
``min_distance_um``, strongest first. A pale vesicular nucleus next to a dark one then keeps its own centre; with a
neighbourhood as wide as the minimum distance, the flank of the dark neighbour would hide it.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from skimage.color import hed_from_rgb
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu

from model.spacing import px_from_um
from training.data.real_data import tissue_mask

SMOOTHING_UM: float = 2.0
"""Gaussian sigma of the hematoxylin map. It averages out chromatin texture and JPEG noise, so a large nucleus gets
one centre, not one per chromatin clump. A small lymphocyte (about 7 um wide) still keeps its own peak."""

PEAK_RADIUS_UM: float = 1.0
"""Half-width of the square neighbourhood in which a centre must be the maximum (before thinning to the minimum
distance)."""

OTSU_FACTOR: float = 0.8
"""Peak threshold = this times Otsu's threshold of the tissue's smoothed hematoxylin density. Set a little below 1 so
that pale (vesicular) nuclei, which are typical negatives, are kept."""

MIN_HEMATOXYLIN: float = 0.005
"""Absolute floor of the peak threshold, in rgb2hed units. Light grey glass (RGB about 240) is near 0.005, and the
palest stained tissue seen in the real data (MITOS 2012) has its Otsu threshold near 0.01."""

MIN_TISSUE_FRACTION: float = 0.001
"""If less than this share of the image is tissue, the image counts as blank and gets no centres."""

_THRESHOLD_SAMPLE_PIXELS = 1 << 21  # the Otsu threshold and tissue share come from a regular subsample of this size
_ROWS_PER_CHUNK = 512  # bounds the temporary arrays of the lookup on large images
_LOG_ADJUST = math.log(1e-6)  # rgb2hed's scale of the optical density


def _hematoxylin_lut() -> np.ndarray:
    """(3, 256) float32: the part of rgb2hed's hematoxylin channel that 8-bit value v of channel c adds."""
    values = np.maximum(np.arange(256, dtype=np.float64) / 255.0, 1e-6)
    density = np.log(values) / _LOG_ADJUST
    return (hed_from_rgb[:, 0][:, None] * density[None, :]).astype(np.float32)


_LUT = _hematoxylin_lut()


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb must have shape (H, W, 3), got {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be uint8, got {rgb.dtype}")
    return rgb


def hematoxylin_density(rgb: np.ndarray) -> np.ndarray:
    """Compute the hematoxylin optical density of a uint8 RGB image by colour deconvolution.

    The result equals ``skimage.color.rgb2hed(rgb)[..., 0]`` (up to float32 rounding): Ruifrok & Johnston's colour
    deconvolution [1]_ with skimage's HED matrix (``skimage.color.hed_from_rgb``). It is computed from a 256-entry
    lookup table per channel, in float32 and in blocks of rows, so that a whole slide tile needs a fraction of the
    memory of rgb2hed's float64 copies.

    Parameters
    ----------
    rgb : (H, W, 3) ndarray of uint8
        RGB image.

    Returns
    -------
    density : (H, W) ndarray of float32
        Hematoxylin density in rgb2hed's units: optical density ``-log(max(I / 255, 1e-6))`` divided by
        ``-log(1e-6)`` (so a decadic OD / 6), combined over the channels with the HED matrix. Negative densities are
        clipped to 0, as rgb2hed does; black (0, 0, 0) gives about 1.21. An image with no pixels (H or W = 0) gives
        an empty array of shape (H, W).

    Raises
    ------
    ValueError
        If `rgb` is not of shape (H, W, 3) or not uint8.

    See Also
    --------
    skimage.color.rgb2hed : The float64 computation this reproduces.

    Notes
    -----
    The scale differs from ``training.stain.optical_density`` (natural logarithm of (I + 1) / 256): thresholds in
    this module (``MIN_HEMATOXYLIN``) are in rgb2hed's units.

    References
    ----------
    .. [1] Ruifrok A. C. and Johnston D. A., "Quantification of histochemical staining by color deconvolution",
           Analytical and Quantitative Cytology and Histology 23(4), 2001, pp. 291-299.
    """
    rgb = _check_rgb(rgb)
    out = np.empty(rgb.shape[:2], dtype=np.float32)
    for start in range(0, rgb.shape[0], _ROWS_PER_CHUNK):
        block = rgb[start : start + _ROWS_PER_CHUNK]
        total = _LUT[0][block[..., 0]]
        total += _LUT[1][block[..., 1]]
        total += _LUT[2][block[..., 2]]
        np.maximum(total, 0.0, out=out[start : start + _ROWS_PER_CHUNK])  # rgb2hed clips negative densities to 0
    return out


def nucleus_centres(rgb: np.ndarray, spacing_mm: float, min_distance_um: float = 4.0) -> np.ndarray:
    """Find the centres of hematoxylin-dense nuclei in an H&E image.

    The centres serve as negative training sites that sit on nuclei, so that the classifier learns "nucleus, but not
    mitosis" rather than "dark blob versus stroma" (see the module docstring). The hematoxylin density
    (`hematoxylin_density`, colour deconvolution [1]_) is smoothed with a gaussian of sigma ``SMOOTHING_UM``; a centre
    is a maximum of its ``PEAK_RADIUS_UM`` square neighbourhood that exceeds ``max(OTSU_FACTOR * Otsu threshold of the
    smoothed density over the tissue, MIN_HEMATOXYLIN)`` (tissue share and Otsu threshold from every k-th row and
    column, k = max(1, isqrt(H * W // 2^21))), so the threshold adapts to strong and pale staining alike. The maxima
    are then thinned to `min_distance_um`, strongest first. Mitotic figures are hematoxylin-dense too and get centres
    here as well: callers drop the centres near annotated mitoses.

    Parameters
    ----------
    rgb : (H, W, 3) ndarray of uint8
        H&E image.
    spacing_mm : float
        Pixel size in mm (0.00025 at 0.25 um/px), the same along rows and columns.
    min_distance_um : float, optional
        Minimum (Euclidean) distance between two centres, in um; converted to px and rounded up, at least 1 px.

    Returns
    -------
    centres : (N, 2) ndarray of int64
        (row, col) pixel coordinates of the centres, at least `min_distance_um` apart and sorted strongest first
        (by decreasing smoothed hematoxylin density). The result is deterministic. Centres may lie on the image
        border. Empty, of shape (0, 2), for an image with no pixels, for blank glass (a tissue share below
        ``MIN_TISSUE_FRACTION``), for a uniform image, and when no maximum exceeds the threshold.

    Raises
    ------
    ValueError
        If `rgb` is not of shape (H, W, 3) or not uint8.

    References
    ----------
    .. [1] Ruifrok A. C. and Johnston D. A., "Quantification of histochemical staining by color deconvolution",
           Analytical and Quantitative Cytology and Histology 23(4), 2001, pp. 291-299.
    """
    rgb = _check_rgb(rgb)
    spacing = (float(spacing_mm), float(spacing_mm))
    empty = np.zeros((0, 2), dtype=np.int64)
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        return empty

    smoothed = ndimage.gaussian_filter(
        hematoxylin_density(rgb), sigma=px_from_um(SMOOTHING_UM, spacing), mode="nearest"
    )

    # tissue share and threshold from a regular subsample: the same answer as the full image, a fraction of the memory
    step = max(1, math.isqrt(rgb.shape[0] * rgb.shape[1] // _THRESHOLD_SAMPLE_PIXELS))
    tissue = tissue_mask(rgb[::step, ::step])
    if tissue.sum() < max(MIN_TISSUE_FRACTION * tissue.size, 1):
        return empty
    values = smoothed[::step, ::step][tissue]
    if float(values.max()) - float(values.min()) < 1e-4:  # uniform: no structure to find
        return empty
    threshold = max(OTSU_FACTOR * float(threshold_otsu(values)), MIN_HEMATOXYLIN)

    radius_px = max(1, round(px_from_um(PEAK_RADIUS_UM, spacing)))
    peaks = peak_local_max(
        smoothed,
        min_distance=max(1, math.ceil(px_from_um(min_distance_um, spacing))),
        threshold_abs=threshold,
        threshold_rel=None,
        exclude_border=False,
        footprint=np.ones((2 * radius_px + 1, 2 * radius_px + 1), dtype=bool),
        p_norm=2,
    )
    return np.asarray(peaks, dtype=np.int64).reshape(-1, 2)
