"""Macenko stain unmixing into hematoxylin, eosin and a residual, for the enrichment negatives (paper Figure 3).

Lafarge & Koelzer unmix unlabeled images into hematoxylin, eosin and a residual component; patches with a high optical
density in the residual (pigment, ink and other impostors that are neither stain) become extra negatives.

Library decision: own numpy code, as torchstain 1.4.1 takes no tissue mask and hides its H/E fit in private methods.
(Checked: on real fields it gives torchstain's NumpyMacenkoNormalizer HERef to 3 decimals, with Io=256.)

Its figures (the unmixing panels, the enrichment montage) are drawn by `training.figures`.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.feature import peak_local_max

__all__ = [
    "macenko_stain_matrix",
    "optical_density",
    "residual_candidates",
    "residual_density",
    "unmix",
]

# Fewer usable pixels than this make the percentile angles meaningless (a 20 x 20 px speck of tissue).
MIN_TISSUE_PIXELS = 400


def check_rgb(rgb: np.ndarray) -> np.ndarray:
    """`rgb` as an array, refused (ValueError) unless it has shape (H, W, 3)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb must have shape (H, W, 3), got {rgb.shape}")
    return rgb


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Convert an 8-bit RGB image to optical density (OD) per channel.

    The Beer-Lambert law [1]_ makes absorbance, not intensity, additive: in OD space ``-log((I + 1) / 256)`` (natural
    logarithm, per channel) the stains of a pixel add up linearly, which is what stain unmixing (`unmix`) and stain
    estimation (`macenko_stain_matrix`) rely on. The +1 keeps black pixels finite (OD <= log 256 = 5.55); glass
    (I ~ 240-255) is ~0.

    Parameters
    ----------
    rgb : (H, W, 3) ndarray
        RGB image with intensities in [0, 255] (normally uint8; any real dtype is read as 8-bit intensities).

    Returns
    -------
    density : (H, W, 3) ndarray of float32
        Optical density per channel, in [0, log 256 = 5.55] for intensities in [0, 255]: 0 for white (255), 5.55 for
        black (0). An image with no pixels (H or W = 0) gives an empty array of the same shape.

    Raises
    ------
    ValueError
        If `rgb` is not of shape (H, W, 3).

    See Also
    --------
    rgb_from_optical_density : The inverse.

    References
    ----------
    .. [1] Beer-Lambert law: absorbance is proportional to the concentration of the absorbing stain; its use for
           stain separation: Ruifrok A. C. and Johnston D. A., "Quantification of histochemical staining by color
           deconvolution", Analytical and Quantitative Cytology and Histology 23(4), 2001, pp. 291-299.
    """
    rgb = check_rgb(rgb)
    return (-np.log((rgb.astype(np.float32) + 1.0) / 256.0)).astype(np.float32)


def rgb_from_optical_density(density: np.ndarray) -> np.ndarray:
    """Convert optical density back to 8-bit RGB: the inverse of `optical_density`, rounded to uint8.

    Parameters
    ----------
    density : (..., 3) ndarray
        Optical density per channel (natural logarithm, as `optical_density` gives), of any leading shape.

    Returns
    -------
    rgb : (..., 3) ndarray of uint8
        Intensities ``256 * exp(-density) - 1`` rounded to the nearest integer and clipped to [0, 255], so negative
        densities become white (255) and densities above log 256 = 5.55 black (0). Same shape as `density`.
        ``rgb_from_optical_density(optical_density(rgb))`` returns every uint8 ``rgb`` unchanged.

    See Also
    --------
    optical_density : The forward conversion.
    """
    return np.clip(256.0 * np.exp(-density) - 1.0 + 0.5, 0, 255).astype(np.uint8)


def macenko_stain_matrix(
    rgb: np.ndarray, tissue: np.ndarray | None = None, beta: float = 0.15, alpha_percent: float = 1.0
) -> np.ndarray:
    """Estimate this image's hematoxylin, eosin and residual stain vectors with Macenko's method.

    Stain colours vary between labs and scanners, so the stain vectors are estimated from the image itself (Macenko
    et al., ISBI 2009 [1]_). Pixels with OD < `beta` in any channel (nearly transparent: glass, noise) and, if given,
    outside `tissue` are dropped. The two main eigenvectors of the OD covariance span the stain plane; the stains are
    the robust extreme angles (`alpha_percent` and 100 - `alpha_percent` percentiles) in that plane. Hematoxylin is
    the one with the larger red OD (it absorbs red, eosin hardly does). The residual is orthogonal to both, so
    anything with OD along it is neither stain.

    Parameters
    ----------
    rgb : (H, W, 3) ndarray
        RGB image with intensities in [0, 255] (normally uint8).
    tissue : (H, W) ndarray of bool, optional
        Tissue mask; pixels where it is False are not used. None uses every pixel that passes `beta`.
    beta : float, optional
        Minimum optical density (natural logarithm, as `optical_density`) a pixel must have in every channel to be
        used.
    alpha_percent : float, optional
        Percentile, in percent (0-100), of the angles in the stain plane taken as the extreme stain directions: the
        stains are at the `alpha_percent` and 100 - `alpha_percent` percentiles, robust to outliers.

    Returns
    -------
    stain_matrix : (3, 3) ndarray of float64
        Rows: unit optical-density vectors [hematoxylin, eosin, residual]; columns: the R, G and B channels. The
        residual row is the normalised cross product of the hematoxylin and eosin rows, signed so that its entries
        sum to a positive value (positive total OD for a neutral black or brown pigment). Hematoxylin and eosin are
        not orthogonal to each other in general.

    Raises
    ------
    ValueError
        If `rgb` is not of shape (H, W, 3); if `tissue` does not have the shape (H, W); if fewer than
        ``MIN_TISSUE_PIXELS`` (400) pixels are usable (with OD >= `beta` in every channel and inside `tissue`); or if
        the hematoxylin and eosin vectors coincide (the image shows a single stain).

    References
    ----------
    .. [1] Macenko M., Niethammer M., Marron J. S., Borland D., Woosley J. T., Guan X., Schmitt C. and Thomas N. E.,
           "A method for normalizing histology slides for quantitative analysis", IEEE International Symposium on
           Biomedical Imaging (ISBI), 2009, pp. 1107-1110. :DOI:`10.1109/ISBI.2009.5193250`
    """
    od = optical_density(rgb).reshape(-1, 3).astype(np.float64)
    keep = np.all(od >= beta, axis=1)
    if tissue is not None:
        tissue = np.asarray(tissue, dtype=bool)
        if tissue.shape != rgb.shape[:2]:
            raise ValueError(f"tissue mask shape {tissue.shape} does not match the image {rgb.shape[:2]}")
        keep &= tissue.reshape(-1)
    od = od[keep]
    if len(od) < MIN_TISSUE_PIXELS:
        raise ValueError(
            f"too few tissue pixels for Macenko stain estimation: {len(od)} with OD >= {beta} in every channel"
            f"{' inside the tissue mask' if tissue is not None else ''} (need {MIN_TISSUE_PIXELS})"
        )
    _, eigvecs = np.linalg.eigh(np.cov(od.T))
    plane = eigvecs[:, [2, 1]]  # largest eigenvalue first
    if plane[:, 0].sum() < 0:  # OD is positive: orient the main axis into it so angles stay within (-pi/2, pi/2)
        plane[:, 0] *= -1
    projected = od @ plane
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angles, [alpha_percent, 100.0 - alpha_percent])
    v_low = plane @ np.array([np.cos(low), np.sin(low)])
    v_high = plane @ np.array([np.cos(high), np.sin(high)])
    hematoxylin, eosin = (v_low, v_high) if v_low[0] > v_high[0] else (v_high, v_low)
    residual = np.cross(hematoxylin, eosin)
    norm = np.linalg.norm(residual)
    if norm < 1e-6:
        raise ValueError("hematoxylin and eosin vectors coincide: the image shows a single stain")
    residual /= norm
    if residual.sum() < 0:  # sign is arbitrary; positive total OD for a neutral (black/brown) pigment
        residual *= -1
    matrix = np.stack([hematoxylin, eosin, residual])
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def unmix(rgb: np.ndarray, stain_matrix: np.ndarray) -> np.ndarray:
    """Unmix an RGB image into hematoxylin, eosin and residual concentrations.

    Because stains add up linearly in optical density (Beer-Lambert), each pixel's OD is a combination of the three
    stain vectors: OD = concentrations @ stain_matrix, solved exactly (a 3 x 3 solve per pixel, not least squares).

    Parameters
    ----------
    rgb : (H, W, 3) ndarray
        RGB image with intensities in [0, 255] (normally uint8).
    stain_matrix : (3, 3) array_like
        Rows: unit OD vectors [hematoxylin, eosin, residual], as `macenko_stain_matrix` returns; must be invertible.

    Returns
    -------
    concentrations : (H, W, 3) ndarray of float32
        Per pixel the concentrations [H, E, residual], in optical-density units along each (unit) stain vector. They
        can be negative (noise, colours outside the stain model).

    Raises
    ------
    ValueError
        If `stain_matrix` is not 3 x 3 (rows H, E, residual), or `rgb` is not of shape (H, W, 3).
    numpy.linalg.LinAlgError
        If `stain_matrix` is singular.
    """
    stain_matrix = np.asarray(stain_matrix, dtype=np.float64)
    if stain_matrix.shape != (3, 3):
        raise ValueError(f"stain_matrix must be 3 x 3 (rows H, E, residual), got {stain_matrix.shape}")
    od = optical_density(rgb)
    concentrations = np.linalg.solve(stain_matrix.T, od.reshape(-1, 3).T.astype(np.float64)).T
    return concentrations.reshape(od.shape).astype(np.float32)


def residual_density(rgb: np.ndarray, stain_matrix: np.ndarray, sigma_px: float = 2.0) -> np.ndarray:
    """Map the absolute residual (neither hematoxylin nor eosin) concentration, gaussian-smoothed.

    The smoothing is there so that isolated noisy (JPEG) pixels do not win when the maxima are taken
    (`residual_candidates`).

    Parameters
    ----------
    rgb : (H, W, 3) ndarray
        RGB image with intensities in [0, 255] (normally uint8).
    stain_matrix : (3, 3) array_like
        Rows: unit OD vectors [hematoxylin, eosin, residual], as `macenko_stain_matrix` returns.
    sigma_px : float, optional
        Standard deviation of the gaussian, in px.

    Returns
    -------
    density : (H, W) ndarray of float32
        Smoothed absolute residual concentration (column 2 of `unmix`), in optical-density units, >= 0.
    """
    residual = np.abs(unmix(rgb, stain_matrix)[..., 2])
    return gaussian_filter(residual, sigma=sigma_px).astype(np.float32)


def residual_fraction(rgb: np.ndarray, stain_matrix: np.ndarray, sigma_px: float = 2.0) -> np.ndarray:
    """Map the share of the residual in the total absolute stain concentration (smoothed like `residual_density`).

    Why: very dark hematoxylin (dense nuclei, mitoses among them) also leaves a residual through OD saturation, but as
    a small share of its total; pigment, ink and other off-plane colours have a large share. Enrichment keeps only
    the latter, so that no unannotated mitosis of an unlabeled image becomes a negative.

    Parameters
    ----------
    rgb : (H, W, 3) ndarray
        RGB image with intensities in [0, 255] (normally uint8).
    stain_matrix : (3, 3) array_like
        Rows: unit OD vectors [hematoxylin, eosin, residual], as `macenko_stain_matrix` returns.
    sigma_px : float, optional
        Standard deviation, in px, of the gaussian applied to each absolute concentration before the ratio.

    Returns
    -------
    fraction : (H, W) ndarray of float32
        Smoothed |residual| / (smoothed |H| + smoothed |E| + smoothed |residual|), in [0, 1] (dimensionless). The
        denominator is floored at 1e-6, so blank white areas (zero OD) give 0, not NaN.
    """
    concentrations = np.abs(unmix(rgb, stain_matrix))
    smoothed = [gaussian_filter(concentrations[..., channel], sigma=sigma_px) for channel in range(3)]
    return (smoothed[2] / np.maximum(smoothed[0] + smoothed[1] + smoothed[2], 1e-6)).astype(np.float32)


def residual_candidates(
    rgb: np.ndarray,
    stain_matrix: np.ndarray,
    min_distance_px: int = 40,
    quantile: float = 0.999,
    max_candidates: int = 50,
    border_px: int = 64,
    density: np.ndarray | None = None,
) -> np.ndarray:
    """Find the residual-density maxima above the image's own `quantile`, strongest first.

    The threshold is relative to the image (not an absolute OD) because stain intensity varies between scanners and
    labs; the peaks are at least `min_distance_px` apart and `border_px` from the border so that a patch around each
    fits.

    Parameters
    ----------
    rgb : (H, W, 3) ndarray
        RGB image with intensities in [0, 255] (normally uint8). Not used when `density` is given.
    stain_matrix : (3, 3) array_like
        Rows: unit OD vectors [hematoxylin, eosin, residual], as `macenko_stain_matrix` returns. Not used when
        `density` is given.
    min_distance_px : int, optional
        Minimum distance between two peaks, in px (as `skimage.feature.peak_local_max`'s `min_distance`).
    quantile : float, optional
        Quantile, in [0, 1], of the density over the whole image (tissue and glass alike); a peak must be strictly
        above it.
    max_candidates : int, optional
        Maximum number of peaks returned (the strongest ones).
    border_px : int, optional
        Peaks lie at rows in [border_px, H - border_px) and columns in [border_px, W - border_px).
    density : (H, W) ndarray, optional
        The residual density map, ``residual_density(rgb, stain_matrix)``, for callers that have it already; None
        computes it (with its default smoothing).

    Returns
    -------
    peaks : (N, 2) ndarray of int64
        (row, col) pixel coordinates of the peaks, N <= `max_candidates`, sorted by decreasing density (ties keep
        `peak_local_max`'s order). Empty, of shape (0, 2), when the image is not larger than ``2 * border_px`` in
        either dimension, when `max_candidates` <= 0, or when no peak lies above the threshold.
    """
    if density is None:  # callers that also need the map pass it in, so it is computed once
        density = residual_density(rgb, stain_matrix)
    height, width = density.shape
    if height <= 2 * border_px or width <= 2 * border_px or max_candidates <= 0:
        return np.zeros((0, 2), dtype=np.int64)
    threshold = float(np.quantile(density, quantile))
    peaks = peak_local_max(
        density, min_distance=min_distance_px, threshold_abs=threshold, exclude_border=border_px
    ).reshape(-1, 2)
    rows, cols = peaks[:, 0], peaks[:, 1]
    inside = (rows >= border_px) & (rows < height - border_px) & (cols >= border_px) & (cols < width - border_px)
    peaks = peaks[inside & (density[rows, cols] > threshold)]
    order = np.argsort(-density[peaks[:, 0], peaks[:, 1]], kind="stable")
    return peaks[order][:max_candidates].astype(np.int64)
