"""Synthetic H&E-like dataset in the exact MIDOG 2022 layout, for tests, CI and pipeline smoke runs.

Why: the real MIDOG images are not available offline, yet every part of the training tooling (reader, split, patch
sampling, hard negative mining, stain unmixing, evaluation) needs images with known mitotic figures and imposters.
The content is built so that detection is a *morphology* problem: mitotic figures (condensed spiky clumps,
metaphase plates, anaphase / telophase pairs) and imposters (apoptotic bodies, pyknotic nuclei, lymphocytes) draw
their hematoxylin density and halo from the same distributions, so colour alone does not separate them; the
difference is the outline (spiky / plate-like vs smooth / round) and the arrangement.

Rendering happens in optical-density (OD) space (Beer-Lambert): per-pixel stain concentrations are accumulated by
vectorised stamping of precomputed nucleus sprites (`numpy.bincount` over flat indices, no per-pixel Python loop),
then ``I = white * 10 ** -(c_H * v_H + c_E * v_E + c_P * v_P)`` with per-domain stain vectors, followed by the
scanner's colour response, optical blur, noise and a JPEG round trip (compression artefacts). Pigment, ink and debris
use colours off the hematoxylin-eosin plane (what the stain-unmixing enrichment looks for).

Output (MIDOG 2022 layout)::

    OUT/001.tiff ... OUT/NNN.tiff          RGB uint8, tiled, 0.25 um/px (40000 px/cm, ResolutionUnit CENTIMETER)
    OUT/MIDOG2022_training.json            info, licenses, images, categories, annotations ([x1, y1, x2, y2], 50x50)
    OUT/synthetic_domains.csv              Slide;Dataset;Tumor;Scanner;Origin;Species (like MIDOG++'s csv)

Images get a MIDOG++-style ``tumor_type`` key; ``--unlabeled M`` adds M more TIFFs after the labelled ids that the
JSON does not list (like MIDOG 2022's melanoma set). Output is byte-identical for a given seed and arguments.

Example::

    python -m training.data.synthetic --out /tmp/synthetic --images 8 --seed 0 --size 2048 2048 --unlabeled 2
"""

from __future__ import annotations

import argparse
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, ImageDraw
from scipy import ndimage
from tqdm import tqdm

from model.command_line import command_parser
from model.spacing import DEFAULT_SPACING_MM
from training.data.dataset_making import midog_image_entry, spaced_positions, write_midog_json
from training.data.midog_dataset import BOX_SIZE_PX, IMPOSTER, MITOTIC_FIGURE

__all__ = [
    "ANNOTATION_FILE",
    "DOMAIN_FILE",
    "SCANNERS",
    "TUMOUR_TYPES",
    "Scanner",
    "SyntheticImage",
    "TumourType",
    "generate_dataset",
    "get_args_parser",
    "main",
    "render_image",
    "write_preview",
    "write_tiff",
]

logger = logging.getLogger(__name__)

ANNOTATION_FILE = "MIDOG2022_training.json"
DOMAIN_FILE = "synthetic_domains.csv"
PIXELS_PER_CM: int = round(10.0 / DEFAULT_SPACING_MM)  # 40000 px/cm = 0.25 um/px
_HALF_BOX_PX = BOX_SIZE_PX // 2
_BORDER_PX = 40  # annotated cells stay this far from the border: their 50x50 boxes lie inside the image
_SPRITE_PX = 48  # ordinary nuclei sprites
_FIGURE_PX = 72  # mitotic figures / imposters (anaphase pairs need room)

# Stain OD vectors (Ruifrok & Johnston 2001, normalised): hematoxylin, eosin; domains perturb them.
_HEMATOXYLIN_OD = np.array([0.650, 0.704, 0.286])
_EOSIN_OD = np.array([0.072, 0.990, 0.105])
# Off-plane colours: melanin-like brown pigment, and marking inks / debris.
_PIGMENT_OD = np.array([0.28, 0.57, 0.77])
_INKS_OD = {
    "green": np.array([0.85, 0.25, 0.70]),
    "blue": np.array([0.85, 0.55, 0.10]),
    "black": np.array([0.58, 0.58, 0.58]),
}


@dataclass(frozen=True)
class TumourType:
    """Tissue parameters: nucleus spacing (density), radius, annotated cells per megapixel."""

    name: str
    nucleus_spacing_px: float
    nucleus_radius_px: tuple[float, float]
    mitoses_per_mp: float
    imposters_per_mp: float
    lymphocyte_share: float
    pigment_per_mp: float


@dataclass(frozen=True)
class Scanner:
    """Colour response: white point, per-channel gain / gamma, stain strength, blur, noise and JPEG quality."""

    name: str
    white: tuple[float, float, float]
    gamma: tuple[float, float, float]
    stain_scale: tuple[float, float]
    blur_sigma_px: float
    noise_sigma: float
    jpeg_quality: int


TUMOUR_TYPES: tuple[TumourType, ...] = (
    TumourType("synthetic carcinoma", 30.0, (8.0, 12.0), 4.0, 5.0, 0.05, 0.5),
    TumourType("synthetic lymphoma", 22.0, (6.0, 9.0), 8.0, 8.0, 0.35, 0.3),
    TumourType("synthetic sarcoma", 34.0, (7.0, 11.0), 3.0, 4.0, 0.05, 0.5),
    TumourType("synthetic melanoma", 32.0, (9.0, 14.0), 3.0, 4.0, 0.05, 6.0),
)
SCANNERS: tuple[Scanner, ...] = (
    Scanner("synthetic scanner A", (242.0, 238.0, 246.0), (1.00, 1.05, 0.95), (1.00, 1.00), 0.6, 2.0, 92),
    Scanner("synthetic scanner B", (236.0, 240.0, 232.0), (0.90, 1.00, 1.10), (1.25, 0.80), 1.1, 3.0, 75),
    Scanner("synthetic scanner C", (248.0, 242.0, 240.0), (1.10, 0.95, 1.00), (0.85, 1.20), 0.9, 4.0, 60),
)


@dataclass
class SyntheticImage:
    """One rendered image and its annotated cells: (x_px, y_px, category) rows."""

    pixels: np.ndarray
    annotations: list[tuple[int, int, int]]
    tumour_type: TumourType
    scanner: Scanner


# --------------------------------------------------------------------------------------------------------- sprites
def _polar_grid(size_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (y, x) relative to the sprite's centre pixel ``size_px // 2`` (where the cell centre lands)."""
    offsets = np.arange(size_px, dtype=np.float32) - size_px // 2
    return np.meshgrid(offsets, offsets, indexing="ij")


def _soft(distance: np.ndarray, edge_px: float) -> np.ndarray:
    """Antialiased inside-mask from a signed distance (positive inside): 0..1 over ``edge_px``."""
    return np.clip(distance / edge_px + 0.5, 0.0, 1.0)


def _outline(theta: np.ndarray, rng: np.random.Generator, low: float, spiky: float) -> np.ndarray:
    """Relative radius per angle: smooth low harmonics (``low``) plus thin spikes (``spiky``, condensed chromatin)."""
    shape = np.ones_like(theta)
    for order in (2, 3):
        shape += low * rng.uniform(-1, 1) * np.cos(order * theta + rng.uniform(0, 2 * np.pi))
    if spiky > 0:
        for _ in range(3):
            order = int(rng.integers(7, 17))
            shape += spiky * np.maximum(0.0, np.cos(order * theta + rng.uniform(0, 2 * np.pi))) ** 4
    return shape


def _texture(rng: np.random.Generator, shape: Sequence[int], sigma_px: float) -> np.ndarray:
    """Zero-mean unit-std smoothed noise (chromatin granularity)."""
    sigma = (0,) * (len(shape) - 2) + (sigma_px, sigma_px)
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return noise / (noise.std(axis=(-2, -1), keepdims=True) + 1e-6)


def _nucleus_bank(
    rng: np.random.Generator, count: int, radius_px: tuple[float, float], lymphocyte_share: float
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` ordinary nuclei: (hematoxylin, eosin) OD sprites of ``_SPRITE_PX`` squared.

    Ellipses with wavy outlines, vesicular chromatin texture, a darker membrane rim, nucleoli, and a faint
    cytoplasm (eosin) around them; a share are lymphocytes (small, round, dense) and ~10% are hyperchromatic, so
    darkness alone does not mark a mitosis.
    """
    yy, xx = _polar_grid(_SPRITE_PX)
    hematoxylin = np.zeros((count, _SPRITE_PX, _SPRITE_PX), np.float32)
    eosin = np.zeros_like(hematoxylin)
    textures = _texture(rng, (count, _SPRITE_PX, _SPRITE_PX), 1.2)
    for k in range(count):
        lymphocyte = rng.random() < lymphocyte_share
        radius = rng.uniform(5.5, 7.5) if lymphocyte else rng.uniform(*radius_px)
        aspect = 1.0 + (rng.uniform(0.0, 0.1) if lymphocyte else rng.uniform(0.1, 0.7))
        angle = rng.uniform(0, np.pi)
        u = xx * np.cos(angle) + yy * np.sin(angle)
        v = -xx * np.sin(angle) + yy * np.cos(angle)
        rho = np.hypot(u / aspect, v)
        theta = np.arctan2(v, u)
        boundary = radius * _outline(theta, rng, 0.0 if lymphocyte else 0.06, 0.0)
        inside = _soft(boundary - rho, 1.5)
        if lymphocyte:
            density = rng.uniform(0.8, 1.3) * (1.0 + 0.15 * textures[k])
        else:
            base = rng.uniform(0.7, 1.1) if rng.random() < 0.1 else rng.uniform(0.3, 0.65)
            density = base * (1.0 + 0.45 * textures[k])
            rim = np.exp(-((rho - boundary + 1.0) ** 2) / 2.0)
            density = density + 0.25 * base * rim
            for _ in range(int(rng.integers(0, 3))):
                ny, nx = rng.uniform(-0.4, 0.4, 2) * radius
                density = density + 0.5 * np.exp(-((yy - ny) ** 2 + (xx - nx) ** 2) / 3.0)
        hematoxylin[k] = inside * np.clip(density, 0.05, None)
        cytoplasm = radius * (1.3 if lymphocyte else rng.uniform(1.5, 2.0))
        eosin[k] = 0.12 * _soft(cytoplasm - np.hypot(xx, yy), 4.0) * (1.0 - inside)
    return hematoxylin, eosin


def _figure_sprite(
    rng: np.random.Generator, mitotic: bool, radius_px: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray, str]:
    """One annotated cell of ``_FIGURE_PX`` squared: (hematoxylin, eosin, kind).

    Both classes draw peak hematoxylin density from U(0.9, 1.7) and the surrounding cytoplasm's eosin from the same
    range; mitotic figures are spiky condensed clumps, metaphase plates or anaphase / telophase pairs, imposters are
    smooth and round (apoptotic bodies, possibly fragmented; pyknotic nuclei; lymphocytes).
    """
    yy, xx = _polar_grid(_FIGURE_PX)
    peak = rng.uniform(0.9, 1.7)
    angle = rng.uniform(0, np.pi)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    texture = _texture(rng, (_FIGURE_PX, _FIGURE_PX), 0.8)
    mean_radius = float(np.mean(radius_px))
    halo_radius = mean_radius * rng.uniform(1.5, 2.1)
    if mitotic:
        kind = str(rng.choice(["prometaphase", "metaphase", "anaphase", "telophase"], p=[0.35, 0.3, 0.2, 0.15]))
        if kind == "prometaphase":
            radius = mean_radius * rng.uniform(0.6, 0.9)
            theta = np.arctan2(v, u)
            inside = _soft(radius * _outline(theta, rng, 0.12, rng.uniform(0.25, 0.5)) - np.hypot(u, v), 1.0)
        else:
            # A plate: thin along u, long along v, with a ragged (spiky) edge and a slight bend.
            half_length = mean_radius * rng.uniform(0.8, 1.3)
            half_width = rng.uniform(2.0, 3.5)
            bend = rng.uniform(-0.04, 0.04)
            ragged = 1.5 * np.maximum(0.0, np.sin(v * rng.uniform(1.2, 2.0) + rng.uniform(0, 6))) ** 3
            ragged = np.clip(ragged + 0.6 * texture, -1.0, None)
            separation = {"metaphase": 0.0, "anaphase": rng.uniform(5.0, 9.0), "telophase": rng.uniform(10.0, 14.0)}
            gap = separation[kind]
            inside = np.zeros_like(u)
            for side in (0.0,) if gap == 0 else (-1.0, 1.0):
                across = np.abs(u - side * gap + bend * v**2)
                along = np.abs(v) / half_length
                width = (half_width * (1.0 + 0.3 * (kind == "telophase")) + ragged) * np.sqrt(
                    np.clip(1 - along**2, 0, 1)
                )
                inside = np.maximum(inside, _soft(width - across, 1.0) * (along < 1.0))
            if kind != "metaphase":
                halo_radius *= 1.25
        density = peak * (0.85 + 0.2 * texture)
        halo_od = rng.uniform(0.03, 0.22)
    else:
        kind = str(rng.choice(["apoptotic", "pyknotic", "lymphocyte"], p=[0.45, 0.3, 0.25]))
        theta = np.arctan2(v, u)
        if kind == "apoptotic":
            inside = np.zeros_like(u)
            fragments = int(rng.integers(1, 5))
            for _ in range(fragments):
                cy, cx = (rng.uniform(-1, 1, 2) * mean_radius * 0.5) if fragments > 1 else (0.0, 0.0)
                radius = mean_radius * rng.uniform(0.3, 0.55) if fragments > 1 else mean_radius * rng.uniform(0.5, 0.8)
                inside = np.maximum(inside, _soft(radius - np.hypot(yy - cy, xx - cx), 1.2))
        elif kind == "pyknotic":
            radius = mean_radius * rng.uniform(0.55, 0.85)
            inside = _soft(radius * _outline(theta, rng, 0.05, 0.0) - np.hypot(u, v), 1.2)
        else:
            radius = rng.uniform(5.5, 7.5)
            inside = _soft(radius - np.hypot(u, v), 1.2)
            halo_radius = radius * 1.3
        density = peak * (0.92 + 0.1 * texture)
        halo_od = rng.uniform(0.03, 0.22)
    hematoxylin = inside * np.clip(density, 0.1, None)
    eosin = halo_od * _soft(halo_radius - np.hypot(xx, yy), 3.0) * (1.0 - inside)
    return hematoxylin.astype(np.float32), eosin.astype(np.float32), kind


# --------------------------------------------------------------------------------------------------------- tissue
def _smooth_field(
    rng: np.random.Generator, height_px: int, width_px: int, scale_px: float, anisotropy: float = 1.0
) -> np.ndarray:
    """Low-frequency noise in [0, 1]: filtered on a grid ``scale_px / 3`` coarser (at least 2), then bilinearly
    upsampled (filtering at full resolution would dominate the rendering time)."""
    step = max(2, int(scale_px / 3))
    coarse = rng.standard_normal((height_px // step + 3, width_px // step + 3)).astype(np.float32)
    coarse = ndimage.gaussian_filter(coarse, (scale_px / step, scale_px / step * anisotropy), mode="wrap")
    coarse = (coarse - coarse.mean()) / (coarse.std() + 1e-6)
    field = ndimage.zoom(coarse, step, order=1)[:height_px, :width_px]
    return 1.0 / (1.0 + np.exp(-1.5 * field))


def _stamp(canvas: np.ndarray, sprites: np.ndarray, centres_yx: np.ndarray, pad_px: int) -> None:
    """Add ``sprites[i]`` centred at ``centres_yx[i]`` into the padded ``canvas`` (OD adds: Beer-Lambert)."""
    if len(centres_yx) == 0:
        return
    size = sprites.shape[-1]
    height, width = canvas.shape
    offsets = (np.arange(size)[:, None] * width + np.arange(size)[None, :]).ravel()
    top_left = (centres_yx[:, 0] + pad_px - size // 2) * width + (centres_yx[:, 1] + pad_px - size // 2)
    index = (top_left[:, None] + offsets[None, :]).ravel()
    weights = sprites.reshape(len(sprites), -1).astype(np.float64).ravel()
    canvas += np.bincount(index, weights=weights, minlength=height * width).reshape(height, width)


def _dihedral_variants(sprites: np.ndarray, variant: int) -> np.ndarray:
    """One of the 8 rot90 / flip variants of a sprite stack, so a small bank looks like many nuclei."""
    turned = np.rot90(sprites, variant % 4, axes=(-2, -1))
    return np.ascontiguousarray(turned[..., ::-1] if variant >= 4 else turned)


def _random_positions(rng: np.random.Generator, count: int, height_px: int, width_px: int) -> np.ndarray:
    """(count, 2) integer (y, x) positions anywhere in the image."""
    return np.stack([rng.integers(0, height_px, count), rng.integers(0, width_px, count)], axis=1)


def _pick_sites(
    rng: np.random.Generator,
    weight: np.ndarray,
    count: int,
    min_distance_px: float,
    border_px: int,
    taken: list[tuple[int, int]],
) -> list[tuple[int, int]]:
    """``count`` (y, x) positions drawn with probability ``weight`` (tissue), at least ``min_distance_px`` from each
    other and from ``taken``, at least ``border_px`` from the image border."""
    height, width = weight.shape
    coarse = weight[::8, ::8]
    probability = coarse.ravel() / coarse.sum()
    draws = rng.choice(coarse.size, size=count * 20 + 20, p=probability)

    def candidates():  # lazy: the within-cell offsets are drawn only for candidates that are looked at
        for flat in draws:
            y = int(flat // coarse.shape[1]) * 8 + int(rng.integers(0, 8))
            x = int(flat % coarse.shape[1]) * 8 + int(rng.integers(0, 8))
            if border_px <= y < height - border_px and border_px <= x < width - border_px:
                yield y, x

    return spaced_positions(candidates(), count, min_distance_px, taken)


def _stain_vectors(rng: np.random.Generator, scanner: Scanner) -> tuple[np.ndarray, np.ndarray]:
    """Per-image stain OD vectors: the reference vectors, scaled by the scanner, with a small random rotation."""
    vectors = []
    for base, scale in ((_HEMATOXYLIN_OD, scanner.stain_scale[0]), (_EOSIN_OD, scanner.stain_scale[1])):
        vector = base + rng.normal(0.0, 0.04, 3)
        vector = np.clip(vector, 0.02, None)
        vectors.append(vector / np.linalg.norm(vector) * scale * rng.uniform(0.9, 1.1))
    return vectors[0], vectors[1]


def render_image(
    rng: np.random.Generator,
    width_px: int,
    height_px: int,
    tumour_type: TumourType,
    scanner: Scanner,
    annotate: bool = True,
) -> SyntheticImage:
    """Render one image: tissue, nuclei, annotated mitotic figures and imposters, pigment / ink / debris, scanner.

    ``annotate=False`` still draws mitotic figures and imposters (unlabeled images have them too) but returns no
    annotations. The steps draw from `rng` in a fixed order: a seed gives the same image bit for bit.
    """
    if width_px < 2 * _BORDER_PX + 8 or height_px < 2 * _BORDER_PX + 8:
        raise ValueError(f"image size {width_px}x{height_px} px is too small (min {2 * _BORDER_PX + 8} px a side)")
    pad = _FIGURE_PX
    canvas_shape = (height_px + 2 * pad, width_px + 2 * pad)
    hematoxylin = np.zeros(canvas_shape, np.float32)
    eosin = np.zeros(canvas_shape, np.float32)
    pigment = np.zeros(canvas_shape, np.float32)
    ink = np.zeros(canvas_shape, np.float32)

    tissue, stroma, cellularity = _tissue_layers(rng, height_px, width_px)
    eosin[pad:-pad, pad:-pad] += stroma
    spacing = tumour_type.nucleus_spacing_px
    centres = _nucleus_centres(rng, cellularity, spacing)
    area_mp = width_px * height_px / 1e6
    sites, labels = _annotated_sites(rng, tumour_type, tissue * (0.3 + cellularity) + 1e-6, area_mp)
    centres = _make_room(centres, sites, spacing)
    _stamp_nuclei(rng, hematoxylin, eosin, centres, tumour_type, pad)
    figures = [_figure_sprite(rng, label == MITOTIC_FIGURE, tumour_type.nucleus_radius_px) for label in labels]
    if figures:
        _stamp(hematoxylin, np.stack([figure[0] for figure in figures]), np.asarray(sites), pad)
        _stamp(eosin, np.stack([figure[1] for figure in figures]), np.asarray(sites), pad)
    _stamp_pigment(rng, pigment, tumour_type.pigment_per_mp * area_mp, pad)
    ink_name = _draw_ink_and_debris(rng, ink, tissue, area_mp, pad)
    crop = (slice(pad, pad + height_px), slice(pad, pad + width_px))
    concentrations = np.stack([hematoxylin[crop], eosin[crop], pigment[crop], ink[crop]], axis=-1)
    pixels = _scan(rng, concentrations, _INKS_OD[ink_name], scanner)
    annotations = [(x, y, label) for (y, x), label in zip(sites, labels, strict=True)] if annotate else []
    return SyntheticImage(pixels, annotations, tumour_type, scanner)


def _tissue_layers(rng: np.random.Generator, height_px: int, width_px: int) -> tuple[np.ndarray, ...]:
    """(tissue, stroma eosin, cellularity) maps: mostly tissue with lumens / glass holes, stroma with fibres, and
    cellular nests."""
    tissue = np.clip((_smooth_field(rng, height_px, width_px, 180.0) - 0.22) * 6.0, 0.0, 1.0)
    fibres = _smooth_field(rng, height_px, width_px, 6.0, anisotropy=rng.uniform(4.0, 8.0))
    stroma = tissue * (rng.uniform(0.18, 0.32) * (0.6 + 0.8 * fibres))
    cellularity = tissue * _smooth_field(rng, height_px, width_px, 120.0)
    return tissue, stroma, cellularity


def _nucleus_centres(rng: np.random.Generator, cellularity: np.ndarray, spacing: float) -> np.ndarray:
    """Ordinary nuclei (row, col) on a jittered grid, each kept with probability = cellularity."""
    height_px, width_px = cellularity.shape
    grid_y, grid_x = np.mgrid[0:height_px:spacing, 0:width_px:spacing]
    centres = np.stack([grid_y.ravel(), grid_x.ravel()], 1) + rng.uniform(-0.4, 0.4, (grid_y.size, 2)) * spacing
    centres = np.clip(np.round(centres), 0, [height_px - 1, width_px - 1]).astype(np.int64)
    keep = rng.random(len(centres)) < 1.6 * cellularity[centres[:, 0], centres[:, 1]] - 0.2
    return centres[keep]


def _annotated_sites(
    rng: np.random.Generator, tumour_type: TumourType, weight: np.ndarray, area_mp: float
) -> tuple[list, list[int]]:
    """Positions (row, col) and categories of the annotated cells, in random order; placed before the ordinary
    nuclei so that those can make room for them."""
    n_mitoses = int(rng.poisson(tumour_type.mitoses_per_mp * area_mp))
    n_imposters = int(rng.poisson(tumour_type.imposters_per_mp * area_mp))
    sites = _pick_sites(rng, weight, n_mitoses + n_imposters, 60.0, _BORDER_PX, [])
    labels = [MITOTIC_FIGURE] * min(n_mitoses, len(sites)) + [IMPOSTER] * max(0, len(sites) - n_mitoses)
    order = rng.permutation(len(sites))
    return [sites[i] for i in order], [labels[i] for i in order]


def _make_room(centres: np.ndarray, sites: list, spacing: float) -> np.ndarray:
    """The ordinary nuclei farther than 1.1 grid spacings from every annotated cell."""
    if not sites:
        return centres
    site_array = np.asarray(sites)
    distance = np.min(
        np.hypot(centres[:, None, 0] - site_array[None, :, 0], centres[:, None, 1] - site_array[None, :, 1]), axis=1
    )
    return centres[distance > 1.1 * spacing]


def _stamp_nuclei(
    rng: np.random.Generator,
    hematoxylin: np.ndarray,
    eosin: np.ndarray,
    centres: np.ndarray,
    tumour_type: TumourType,
    pad: int,
) -> None:
    """Stamp an ordinary nucleus at each centre. The bank in its 8 dihedral variants: nuclei pick one of 320
    sprites; one stamping call per channel."""
    bank_h, bank_e = _nucleus_bank(rng, 40, tumour_type.nucleus_radius_px, tumour_type.lymphocyte_share)
    bank_h = np.concatenate([_dihedral_variants(bank_h, variant) for variant in range(8)])
    bank_e = np.concatenate([_dihedral_variants(bank_e, variant) for variant in range(8)])
    choice = rng.integers(0, len(bank_h), len(centres))
    _stamp(hematoxylin, bank_h[choice], centres, pad)
    _stamp(eosin, bank_e[choice], centres, pad)


def _stamp_pigment(rng: np.random.Generator, pigment: np.ndarray, expected_clusters: float, pad: int) -> None:
    """Pigment granule clusters (brown), anywhere."""
    height_px, width_px = pigment.shape[0] - 2 * pad, pigment.shape[1] - 2 * pad
    n_pigment = int(rng.poisson(expected_clusters))
    yy, xx = _polar_grid(_FIGURE_PX)
    clusters = np.zeros((n_pigment, _FIGURE_PX, _FIGURE_PX), np.float32)
    for granules in clusters:
        spread = rng.uniform(4.0, 16.0)
        for gy, gx in rng.normal(0.0, spread, (int(rng.integers(5, 40)), 2)):
            granules += rng.uniform(0.3, 1.2) * np.exp(-((yy - gy) ** 2 + (xx - gx) ** 2) / rng.uniform(1.5, 6.0))
    _stamp(pigment, clusters, _random_positions(rng, n_pigment, height_px, width_px), pad)


def _draw_ink_and_debris(
    rng: np.random.Generator, ink: np.ndarray, tissue: np.ndarray, area_mp: float, pad: int
) -> str:
    """Marking ink along one edge (half the images) and debris specks in the ink's colour; returns the ink's name."""
    height_px, width_px = tissue.shape
    ink_name = str(rng.choice(sorted(_INKS_OD)))
    if rng.random() < 0.5:
        edge = _smooth_field(rng, height_px, width_px, 60.0)
        depth = np.linspace(1.0, 0.0, width_px, dtype=np.float32)[None, :] ** rng.uniform(6.0, 14.0)
        ink[pad:-pad, pad:-pad] += tissue * np.clip(depth * 2.5 * edge - 0.1, 0.0, 1.2)
    n_specks = int(rng.poisson(2.0 * area_mp))
    yy, xx = _polar_grid(_FIGURE_PX)
    specks = np.clip(_texture(rng, (n_specks, _FIGURE_PX, _FIGURE_PX), 2.0) - 1.2, 0.0, None) * 0.8
    specks *= np.hypot(yy, xx)[None] < rng.uniform(6.0, 20.0, (n_specks, 1, 1))
    _stamp(ink, specks.astype(np.float32), _random_positions(rng, n_specks, height_px, width_px), pad)
    return ink_name


def _scan(rng: np.random.Generator, concentrations: np.ndarray, ink_od: np.ndarray, scanner: Scanner) -> np.ndarray:
    """(H, W, 4) stain concentrations (hematoxylin, eosin, pigment, ink) -> uint8 RGB: Beer-Lambert colour, then the
    scanner: optics blur, colour response, noise, JPEG round trip."""
    vector_h, vector_e = _stain_vectors(rng, scanner)
    # Scanner gamma on transmitted light, (10 ** -OD) ** gamma, folded into the OD -> RGB matrix; ln 10 too.
    gamma = np.asarray(scanner.gamma, np.float32)
    rgb_from_concentration = (np.stack([vector_h, vector_e, _PIGMENT_OD, ink_od]) * gamma * -np.log(10.0)).astype(
        np.float32
    )
    rgb = np.exp(concentrations @ rgb_from_concentration)
    if scanner.blur_sigma_px > 0:
        rgb = ndimage.gaussian_filter(rgb, (scanner.blur_sigma_px, scanner.blur_sigma_px, 0), truncate=3.0)
    white = np.asarray(scanner.white, np.float32) * rng.uniform(0.97, 1.02, 3).astype(np.float32)
    rgb *= white
    rgb += rng.standard_normal(rgb.shape, dtype=np.float32) * np.float32(scanner.noise_sigma) + np.float32(0.5)
    pixels = np.clip(rgb, 0, 255, out=rgb).astype(np.uint8)
    if scanner.jpeg_quality < 100:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=scanner.jpeg_quality)
        pixels = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return pixels


# --------------------------------------------------------------------------------------------------------- dataset
def _domain_of(image_id: int, n_labeled: int) -> tuple[TumourType, Scanner]:
    """Contiguous id blocks per tumour type (as in MIDOG 2022), scanners cycling within a block; unlabeled images
    are melanoma-like (as MIDOG 2022's unlabeled set)."""
    if image_id > n_labeled:
        return TUMOUR_TYPES[-1], SCANNERS[(image_id - n_labeled - 1) % len(SCANNERS)]
    block = (image_id - 1) * len(TUMOUR_TYPES) // max(n_labeled, 1)
    return TUMOUR_TYPES[block], SCANNERS[(image_id - 1) % len(SCANNERS)]


def write_tiff(path: Path, pixels: np.ndarray) -> None:
    """Tiled RGB TIFF with 0.25 um/px resolution tags and fixed metadata (no datetime / software: byte-identical)."""
    tifffile.imwrite(
        path,
        pixels,
        photometric="rgb",
        tile=(256, 256),
        compression="zlib",
        compressionargs={"level": 1},
        resolution=(PIXELS_PER_CM, PIXELS_PER_CM),
        resolutionunit="CENTIMETER",
        software=False,
        datetime=None,
        metadata=None,
    )


def generate_dataset(
    out_dir: str | Path,
    n_images: int,
    seed: int,
    width_px: int = 2048,
    height_px: int = 2048,
    n_unlabeled: int = 0,
    progress: bool = True,
) -> Path:
    """Write ``n_images`` labelled (+ ``n_unlabeled``) synthetic images and the annotation JSON; returns its path.

    Every image has its own generator seeded with ``(seed, image_id)``, so image k is the same whatever N is.
    """
    if n_images < 1 or n_unlabeled < 0:
        raise ValueError(f"need n_images >= 1 and n_unlabeled >= 0, got {n_images}, {n_unlabeled}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images, cells, domain_rows = [], [], ["Slide;Dataset;Tumor;Scanner;Origin;Species"]
    total = n_images + n_unlabeled
    for image_id in tqdm(range(1, total + 1), desc="synthetic images", disable=not progress):
        tumour_type, scanner = _domain_of(image_id, n_images)
        labeled = image_id <= n_images
        rng = np.random.default_rng([seed, image_id])
        image = render_image(rng, width_px, height_px, tumour_type, scanner, annotate=labeled)
        file_name = f"{image_id:03d}.tiff"
        write_tiff(out_dir / file_name, image.pixels)
        domain_rows.append(
            f"{image_id};{'train' if labeled else 'unlabeled'};{tumour_type.name};{scanner.name};synthetic;Synthetic"
        )
        if not labeled:
            continue
        images.append(midog_image_entry(image_id, file_name, width_px, height_px, tumour_type.name))
        cells.extend((image_id, x, y, label) for x, y, label in image.annotations)
    info = {
        "description": "Synthetic MIDOG 2022-format training set (training.data.synthetic)",
        "version": "1.0",
        "year": 2022,
        "contributor": "training.data.synthetic",
        "date_created": "synthetic",
        "seed": seed,
    }
    licence = {"url": "https://creativecommons.org/publicdomain/zero/1.0/", "id": 1, "name": "CC0"}
    annotation_path = write_midog_json(out_dir / ANNOTATION_FILE, info, licence, images, cells)
    (out_dir / DOMAIN_FILE).write_text("\n".join(domain_rows) + "\n")
    return annotation_path


def write_preview(dataset_dir: str | Path, out_png: str | Path, n_crops: int = 6, crop_px: int = 320) -> None:
    """Montage of crops from different images with boxes drawn (green = mitotic figure, yellow = imposter).

    Crops are centred on an annotated cell so both classes show up; saved as a 256-colour PNG to stay small.
    """
    dataset_dir = Path(dataset_dir)
    payload = json.loads((dataset_dir / ANNOTATION_FILE).read_text())
    colours = {MITOTIC_FIGURE: (0, 230, 0), IMPOSTER: (255, 230, 0)}
    tiles = []
    images = payload["images"]
    for k in range(n_crops):
        image = images[(k * max(1, len(images) // n_crops)) % len(images)]
        boxes = [a for a in payload["annotations"] if a["image_id"] == image["id"]]
        pixels = tifffile.imread(dataset_dir / image["file_name"])
        if boxes:
            wanted = MITOTIC_FIGURE if k % 2 == 0 else IMPOSTER
            anchor = next((a for a in boxes if a["category_id"] == wanted), boxes[0])["bbox"]
            cx, cy = (anchor[0] + anchor[2]) // 2, (anchor[1] + anchor[3]) // 2
        else:
            cx, cy = image["width"] // 2, image["height"] // 2
        x0 = int(np.clip(cx - crop_px // 2, 0, image["width"] - crop_px))
        y0 = int(np.clip(cy - crop_px // 2, 0, image["height"] - crop_px))
        tile = Image.fromarray(pixels[y0 : y0 + crop_px, x0 : x0 + crop_px])
        draw = ImageDraw.Draw(tile)
        for annotation in boxes:
            x1, y1, x2, y2 = annotation["bbox"]
            draw.rectangle([x1 - x0, y1 - y0, x2 - x0, y2 - y0], outline=colours[annotation["category_id"]], width=2)
        draw.text((4, 4), image["tumor_type"], fill=(0, 0, 0))
        tiles.append(tile)
    columns = min(3, len(tiles))
    rows = -(-len(tiles) // columns)
    montage = Image.new("RGB", (columns * crop_px, rows * crop_px), (255, 255, 255))
    for k, tile in enumerate(tiles):
        montage.paste(tile, ((k % columns) * crop_px, (k // columns) * crop_px))
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    montage.quantize(256, dither=Image.Dither.NONE).save(out_png, optimize=True)


DESCRIPTION = "Write a synthetic H&E-like dataset in the MIDOG 2022 layout."
"""What `--help` says first."""


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = command_parser("training.data.synthetic", DESCRIPTION, add_help)
    parser.add_argument("--out", type=Path, required=True, help="output folder (created; files are overwritten)")
    parser.add_argument("--images", type=int, required=True, help="number of labelled images (ids 001..N)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same bytes (default: 0)")
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=(2048, 2048),
        metavar=("W", "H"),
        help="image width and height in pixels at 0.25 um/px (default: 2048 2048)",
    )
    parser.add_argument(
        "--unlabeled",
        type=int,
        default=0,
        help="extra images without annotations, ids after the labelled ones (default: 0)",
    )
    parser.add_argument(
        "--preview",
        type=Path,
        default=None,
        help="also write a PNG montage with the boxes drawn to this path (default: none)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the tqdm progress bar (default: shown)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    width_px, height_px = args.size
    path = generate_dataset(
        args.out, args.images, args.seed, width_px, height_px, args.unlabeled, progress=not args.no_progress
    )
    logger.info("wrote %s", path)
    if args.preview is not None:
        write_preview(args.out, args.preview)
        logger.info("wrote %s", args.preview)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
