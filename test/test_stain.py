"""Macenko stain unmixing: known stains recovered, residual finds a third colour, agreement with skimage on real H&E."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage.color import rgb2hed, rgb_from_hed

from training.data.real_data import DEFAULT_ROOT, read_image, tissue_mask
from training.figures import write_montage, write_unmixing_figure
from training.stain import (
    macenko_stain_matrix,
    optical_density,
    residual_candidates,
    residual_density,
    rgb_from_optical_density,
    unmix,
)

RUIFROK_H = rgb_from_hed[0] / np.linalg.norm(rgb_from_hed[0])
RUIFROK_E = rgb_from_hed[1] / np.linalg.norm(rgb_from_hed[1])
BROWN_PIGMENT = rgb_from_hed[2] / np.linalg.norm(rgb_from_hed[2])  # DAB-like brown: absorbs blue most
GREEN_DYE = np.array([0.7, 0.1, 0.7]) / np.linalg.norm([0.7, 0.1, 0.7])  # absorbs red and blue
BLUE_INK = np.array([0.9, 0.4, 0.05]) / np.linalg.norm([0.9, 0.4, 0.05])  # absorbs red: negative residual here


def _to_rgb(od: np.ndarray) -> np.ndarray:
    """Inverse of optical_density, rounded to 8 bits like a scanner."""
    return np.clip(np.round(256.0 * np.exp(-od) - 1.0), 0, 255).astype(np.uint8)


def _synthetic(size: int = 320, seed: int = 0, h=RUIFROK_H, e=RUIFROK_E) -> tuple[np.ndarray, np.ndarray]:
    """Two-stain image with random concentrations; returns (concentrations (size, size, 2), OD)."""
    concentrations = np.random.default_rng(seed).gamma(2.0, 0.35, size=(size, size, 2))
    return concentrations, concentrations[..., :1] * h + concentrations[..., 1:] * e


def _paint_disc(od: np.ndarray, centre: tuple[int, int], radius: int, vector: np.ndarray, amount: float) -> np.ndarray:
    rows, cols = np.ogrid[: od.shape[0], : od.shape[1]]
    disc = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2
    od = od.copy()
    od[disc] += amount * vector
    return od


def test_optical_density():
    rgb = np.array([[[255, 127, 0]]], dtype=np.uint8)
    od = optical_density(rgb)
    assert od.dtype == np.float32 and od.shape == (1, 1, 3)
    np.testing.assert_allclose(od[0, 0], [0.0, np.log(2.0), np.log(256.0)], rtol=1e-6)


@pytest.mark.parametrize(
    "h, e",
    [
        (RUIFROK_H, RUIFROK_E),
        # Macenko's reference vectors (torchstain's HERef): a bluer eosin than Ruifrok's
        (np.array([0.5626, 0.7201, 0.4062]), np.array([0.2159, 0.8012, 0.5581])),
    ],
    ids=["ruifrok", "macenko-reference"],
)
def test_recovers_known_stains_in_order(h, e):
    h, e = h / np.linalg.norm(h), e / np.linalg.norm(e)
    _, od = _synthetic(h=h, e=e)
    matrix = macenko_stain_matrix(_to_rgb(od))
    assert matrix.shape == (3, 3)
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-9)
    assert matrix[0] @ h > 0.99 and matrix[1] @ e > 0.99, matrix
    assert abs(matrix[2] @ matrix[0]) < 1e-9 and abs(matrix[2] @ matrix[1]) < 1e-9


def test_unmix_reconstructs_od_and_concentrations():
    concentrations, od = _synthetic()
    rgb = _to_rgb(od)
    matrix = macenko_stain_matrix(rgb)
    unmixed = unmix(rgb, matrix)
    assert unmixed.shape == rgb.shape and unmixed.dtype == np.float32
    np.testing.assert_allclose(unmixed @ matrix, optical_density(rgb), atol=1e-4)
    assert np.corrcoef(unmixed[..., 0].ravel(), concentrations[..., 0].ravel())[0, 1] > 0.99
    assert np.corrcoef(unmixed[..., 1].ravel(), concentrations[..., 1].ravel())[0, 1] > 0.99
    assert np.abs(unmixed[..., 2]).mean() < 0.02  # two-stain image: almost nothing left over


@pytest.mark.parametrize("third", [BROWN_PIGMENT, GREEN_DYE, BLUE_INK], ids=["brown-pigment", "green-dye", "blue-ink"])
def test_residual_marks_a_third_colour(third):
    _, od = _synthetic()
    centre, radius = (200, 120), 10
    painted = _to_rgb(_paint_disc(od, centre, radius, third, amount=1.5))
    matrix = macenko_stain_matrix(painted)
    density = residual_density(painted, matrix)
    assert density.shape == painted.shape[:2] and density.dtype == np.float32
    rows, cols = np.ogrid[: density.shape[0], : density.shape[1]]
    distance = np.hypot(rows - centre[0], cols - centre[1])
    inside = np.median(density[distance <= radius - 3])
    outside = np.percentile(density[distance > radius + 8], 99.9)
    assert inside > 5 * outside, (inside, outside)
    candidates = residual_candidates(painted, matrix)
    assert len(candidates) >= 1
    assert np.hypot(*(candidates[0] - centre)) <= 3


def test_candidates_sorted_spaced_and_away_from_the_border():
    _, od = _synthetic(size=400, seed=1)
    od = _paint_disc(od, (300, 300), 8, BROWN_PIGMENT, amount=0.8)  # weaker
    od = _paint_disc(od, (120, 200), 8, BROWN_PIGMENT, amount=2.0)  # strongest
    od = _paint_disc(od, (200, 20), 8, BROWN_PIGMENT, amount=3.0)  # too close to the border
    rgb = _to_rgb(od)
    matrix = macenko_stain_matrix(rgb)
    candidates = residual_candidates(rgb, matrix, min_distance_px=40, quantile=0.99, border_px=64)
    assert candidates.dtype.kind == "i" and candidates.shape[1] == 2
    assert np.hypot(*(candidates[0] - (120, 200))) <= 3 and np.hypot(*(candidates[1] - (300, 300))) <= 3
    assert candidates.min() >= 64 and candidates.max() < 400 - 64
    density = residual_density(rgb, matrix)
    values = density[candidates[:, 0], candidates[:, 1]]
    assert np.all(np.diff(values) <= 0)
    assert np.all(values > np.quantile(density, 0.99))
    gaps = np.hypot(*(candidates[:, None] - candidates[None]).transpose(2, 0, 1))
    assert gaps[~np.eye(len(candidates), dtype=bool)].min() >= 40
    assert len(residual_candidates(rgb, matrix, quantile=0.99, max_candidates=1)) == 1


def test_too_few_tissue_pixels():
    glass = np.full((64, 64, 3), 240, dtype=np.uint8)
    with pytest.raises(ValueError, match="too few tissue pixels"):
        macenko_stain_matrix(glass)
    _, od = _synthetic(size=64)
    with pytest.raises(ValueError, match="too few tissue pixels"):
        macenko_stain_matrix(_to_rgb(od), tissue=np.zeros((64, 64), dtype=bool))


def test_montage_and_figure(tmp_path):
    crops = np.random.default_rng(0).integers(0, 256, size=(11, 48, 48, 3), dtype=np.uint8)
    out = tmp_path / "montage.png"
    write_montage(crops, out, columns=4, title="residual negatives", captions=[f"#{i}" for i in range(11)])
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > image.height
    empty = tmp_path / "sub" / "empty.png"
    write_montage(np.zeros((0, 48, 48, 3), dtype=np.uint8), empty, title="residual negatives")
    with Image.open(empty) as image:
        assert image.format == "PNG"
    with pytest.raises(ValueError):
        write_montage(crops, out, captions=["too few"])
    _, od = _synthetic(size=256)
    figure = tmp_path / "unmixing.png"
    write_unmixing_figure(_to_rgb(_paint_disc(od, (128, 128), 10, GREEN_DYE, 1.5)), figure)
    with Image.open(figure) as image:
        assert image.format == "PNG"


def _tile_crop(rgb: np.ndarray) -> np.ndarray:
    """2048 x 2048 px from the bottom centre of a 7215 x 5412 tile: the tissue is in the lower half."""
    left = (rgb.shape[1] - 2048) // 2
    return rgb[-2048:, left : left + 2048]


# Ruifrok's fixed eosin vector (what rgb2hed uses) is redder than the eosin of the MITOS 2012 scanner (Macenko
# finds ~[0.13, 0.87, 0.48]), so eosin agrees less there than hematoxylin; these are floors, measured values are in
# the report: tile H 0.997 / E 0.864, MITOS A00_00 H 0.942 / E 0.494.
@pytest.mark.parametrize(
    "relative, crop, min_r_h, min_r_e",
    [
        ("tiles/cmc-no-mitosis/2191a7aa287ce1d5dbc0_patch_0_28860.jpg", _tile_crop, 0.95, 0.8),
        ("unlabeled/mitos2012/A00_00.jpg", None, 0.9, 0.4),
    ],
    ids=["cmc-tile", "mitos2012-field"],
)
def test_agrees_with_skimage_rgb2hed_on_real_images(relative, crop, min_r_h, min_r_e):
    path = DEFAULT_ROOT / relative
    if not path.is_file():
        pytest.skip(f"real data not found at {path} (shared data folder next to the repo)")
    rgb = read_image(path)
    if crop is not None:
        rgb = crop(rgb)
    tissue = tissue_mask(rgb)
    assert tissue.mean() > 0.2
    concentrations = unmix(rgb, macenko_stain_matrix(rgb, tissue=tissue))
    hed = rgb2hed(rgb)
    r_h = np.corrcoef(concentrations[..., 0][tissue], hed[..., 0][tissue])[0, 1]
    r_e = np.corrcoef(concentrations[..., 1][tissue], hed[..., 1][tissue])[0, 1]
    print(f"{relative}: Pearson r with rgb2hed over tissue: H {r_h:.3f}, E {r_e:.3f}")
    assert r_h > min_r_h and r_e > min_r_e, (r_h, r_e)


def test_optical_density_round_trips_every_8_bit_value():
    rgb = np.stack([np.arange(256, dtype=np.uint8)] * 3, axis=-1)[None]  # (1, 256, 3)
    assert np.array_equal(rgb_from_optical_density(optical_density(rgb)), rgb)
