"""Macenko stain unmixing into hematoxylin, eosin and a residual, for the enrichment negatives (paper Figure 3).

Lafarge & Koelzer unmix unlabeled images into hematoxylin, eosin and a residual component; patches with a high optical
density in the residual (pigment, ink and other impostors that are neither stain) become extra negatives.

Library decision: own numpy code, as torchstain 1.4.1 takes no tissue mask and hides its H/E fit in private methods.
(Checked: on real fields it gives torchstain's NumpyMacenkoNormalizer HERef to 3 decimals, with Io=256.)
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Circle
from scipy.ndimage import gaussian_filter
from skimage.feature import peak_local_max

__all__ = [
    "macenko_stain_matrix",
    "optical_density",
    "residual_candidates",
    "residual_density",
    "unmix",
    "write_montage",
    "write_unmixing_figure",
]

# Fewer usable pixels than this make the percentile angles meaningless (a 20 x 20 px speck of tissue).
MIN_TISSUE_PIXELS = 400


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb must have shape (H, W, 3), got {rgb.shape}")
    return rgb


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Beer-Lambert optical density -log((I + 1) / 256) per channel: stains add up linearly in this space.

    The +1 keeps black pixels finite (OD <= log 256 = 5.55); glass (I ~ 240-255) is ~0.
    """
    rgb = _check_rgb(rgb)
    return (-np.log((rgb.astype(np.float32) + 1.0) / 256.0)).astype(np.float32)


def rgb_from_optical_density(density: np.ndarray) -> np.ndarray:
    """The inverse of `optical_density`, rounded to uint8: (..., 3) optical density -> (..., 3) uint8 RGB."""
    return np.clip(256.0 * np.exp(-density) - 1.0 + 0.5, 0, 255).astype(np.uint8)


def macenko_stain_matrix(
    rgb: np.ndarray, tissue: np.ndarray | None = None, beta: float = 0.15, alpha_percent: float = 1.0
) -> np.ndarray:
    """Rows = unit OD vectors [hematoxylin, eosin, residual] of this image (Macenko et al., ISBI 2009).

    Pixels with OD < ``beta`` in any channel (nearly transparent: glass, noise) and, if given, outside ``tissue`` are
    dropped. The two main eigenvectors of the OD covariance span the stain plane; the stains are the robust extreme
    angles (``alpha_percent`` and 100 - ``alpha_percent`` percentiles) in that plane. Hematoxylin is the one with the
    larger red OD (it absorbs red, eosin hardly does). The residual is orthogonal to both, so anything with OD along it
    is neither stain. Raises ValueError when fewer than MIN_TISSUE_PIXELS pixels are usable.
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
    """(H, W, 3) concentrations [H, E, residual] with OD = concentrations @ stain_matrix (exact 3 x 3 solve)."""
    stain_matrix = np.asarray(stain_matrix, dtype=np.float64)
    if stain_matrix.shape != (3, 3):
        raise ValueError(f"stain_matrix must be 3 x 3 (rows H, E, residual), got {stain_matrix.shape}")
    od = optical_density(rgb)
    concentrations = np.linalg.solve(stain_matrix.T, od.reshape(-1, 3).T.astype(np.float64)).T
    return concentrations.reshape(od.shape).astype(np.float32)


def residual_density(rgb: np.ndarray, stain_matrix: np.ndarray, sigma_px: float = 2.0) -> np.ndarray:
    """(H, W) absolute residual concentration, gaussian-smoothed so that isolated noisy (JPEG) pixels do not win."""
    residual = np.abs(unmix(rgb, stain_matrix)[..., 2])
    return gaussian_filter(residual, sigma=sigma_px).astype(np.float32)


def residual_fraction(rgb: np.ndarray, stain_matrix: np.ndarray, sigma_px: float = 2.0) -> np.ndarray:
    """(H, W) share of the residual in the total absolute concentration (smoothed like `residual_density`).

    Why: very dark hematoxylin (dense nuclei, mitoses among them) also leaves a residual through OD saturation, but as
    a small share of its total; pigment, ink and other off-plane colours have a large share. Enrichment keeps only
    the latter, so that no unannotated mitosis of an unlabeled image becomes a negative.
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
    """(N, 2) int (row, col) residual-density maxima above the image's own ``quantile``, strongest first.

    Relative to the image (not an absolute OD) because stain intensity varies between scanners and labs; the peaks
    are at least ``min_distance_px`` apart and ``border_px`` from the border so that a patch around each fits.
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


def write_montage(
    crops: np.ndarray,
    out_png: Path,
    columns: int = 8,
    title: str | None = None,
    captions: Sequence[str] | None = None,
) -> None:
    """Grid of uint8 RGB crops (N, h, w, 3) as a PNG, the paper's Figure 3; 0 crops give a 'no patches' figure."""
    crops = np.asarray(crops)
    count = 0 if crops.size == 0 else len(crops)
    if count and (crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8):
        raise ValueError(f"crops must be uint8 of shape (N, h, w, 3), got {crops.dtype} {crops.shape}")
    if captions is not None and len(captions) != count:
        raise ValueError(f"{len(captions)} captions for {count} crops")
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    if count == 0:
        figure = Figure(figsize=(4, 2))
        figure.text(0.5, 0.5, "no patches selected", ha="center", va="center", fontsize=14)
    else:
        columns = min(columns, count)
        rows = -(-count // columns)
        figure = Figure(figsize=(1.6 * columns, 1.6 * rows + (0.2 * rows if captions else 0)))
        axes = figure.subplots(rows, columns, squeeze=False)
        for index, ax in enumerate(axes.flat):
            ax.set_axis_off()
            if index < count:
                ax.imshow(crops[index])
                if captions:
                    ax.set_title(captions[index], fontsize=7)
        figure.tight_layout(pad=0.3)
    if title:
        figure.suptitle(title, fontsize=11)
        if count:
            figure.tight_layout(pad=0.3, rect=(0, 0, 1, 0.95))
    figure.savefig(out_png, dpi=100)


def write_unmixing_figure(
    rgb: np.ndarray, out_png: Path, stain_matrix: np.ndarray | None = None, max_circles: int = 10
) -> None:
    """RGB | H | E | residual density panels, top residual candidates circled: shows what the enrichment picks."""
    from training.data.real_data import tissue_mask

    rgb = _check_rgb(rgb)
    if stain_matrix is None:
        stain_matrix = macenko_stain_matrix(rgb, tissue=tissue_mask(rgb))
    concentrations = unmix(rgb, stain_matrix)
    density = residual_density(rgb, stain_matrix)
    border = min(64, min(rgb.shape[:2]) // 8)
    candidates = residual_candidates(rgb, stain_matrix, max_candidates=max_circles, border_px=border)
    panels = [
        ("RGB", rgb, None),
        ("hematoxylin concentration", np.clip(concentrations[..., 0], 0, None), "Blues"),
        ("eosin concentration", np.clip(concentrations[..., 1], 0, None), "RdPu"),
        ("residual optical density", density, "magma"),
    ]
    figure = Figure(figsize=(20, 5.6))
    axes = figure.subplots(1, 4)
    vectors = "  ".join(
        f"{name} [{', '.join(f'{value:.2f}' for value in row)}]" for name, row in zip("HER", stain_matrix, strict=True)
    )
    for ax, (name, image, cmap) in zip(axes, panels, strict=True):
        if cmap is None:
            ax.imshow(image)
        else:
            shown = ax.imshow(image, cmap=cmap, vmin=0, vmax=float(np.percentile(image, 99.5)) or 1.0)
            figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
        if name.startswith(("RGB", "residual")):
            for rank, (row, col) in enumerate(candidates, 1):
                ax.add_patch(Circle((col, row), 30, fill=False, edgecolor="cyan", linewidth=1.5))
                ax.text(col + 32, row - 32, str(rank), color="cyan", fontsize=8, fontweight="bold")
        ax.set_title(name, fontsize=11)
        ax.set_axis_off()
    figure.suptitle(f"Macenko unmixing (OD unit vectors: {vectors}); circles: top residual maxima", fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 0.95))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=80)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: the unmixing figure for one image, cropped around its strongest residual maximum."""
    from training.data.real_data import read_image, tissue_mask

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, required=True, help="RGB image (JPEG / PNG / WebP / TIFF)")
    parser.add_argument("--out", type=Path, required=True, help="output PNG")
    parser.add_argument(
        "--crop",
        type=int,
        default=768,
        help="square crop size in px around the strongest residual "
        "maximum (0: whole image); the stain matrix is always estimated on the whole image",
    )
    args = parser.parse_args(argv)
    rgb = read_image(args.image)
    stain_matrix = macenko_stain_matrix(rgb, tissue=tissue_mask(rgb))
    height, width = rgb.shape[:2]
    if 0 < args.crop < min(height, width):
        peaks = residual_candidates(rgb, stain_matrix, max_candidates=1)
        row, col = peaks[0] if len(peaks) else (height // 2, width // 2)
        top = int(np.clip(row - args.crop // 2, 0, height - args.crop))
        left = int(np.clip(col - args.crop // 2, 0, width - args.crop))
        rgb = rgb[top : top + args.crop, left : left + args.crop]
    write_unmixing_figure(rgb, args.out, stain_matrix=stain_matrix)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
