"""Nucleus centres: synthetic discs found and nothing else, blank and uniform images empty, real mitoses covered."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import REAL_DATA
from scipy import ndimage
from scipy.spatial.distance import pdist
from skimage.color import rgb2hed, rgb_from_hed

from model.spacing import DEFAULT_SPACING_MM, px_from_um
from training.data.nuclei import SMOOTHING_UM, hematoxylin_density, nucleus_centres
from training.data.real_data import read_image

SPACING_MM = DEFAULT_SPACING_MM
HEMATOXYLIN = rgb_from_hed[0] / np.linalg.norm(rgb_from_hed[0])
EOSIN = rgb_from_hed[1] / np.linalg.norm(rgb_from_hed[1])
MIDESEC = REAL_DATA / "fields" / "midesec"


def _rgb_from_od(od: np.ndarray) -> np.ndarray:
    return np.clip(np.round(255.0 * np.exp(-od)), 0, 255).astype(np.uint8)


def _stained(centres: list[tuple[int, int]], size: int = 256, radius_um: float = 3.0, seed: int = 0) -> np.ndarray:
    """Pink, textured 'cytoplasm' (eosin plus a little hematoxylin) with dark-purple discs (nuclei) at ``centres``."""
    rng = np.random.default_rng(seed)
    texture = ndimage.gaussian_filter(rng.normal(size=(size, size)), 3.0)
    texture /= texture.std()
    eosin = 0.35 + 0.08 * texture
    hematoxylin = np.full((size, size), 0.06) + 0.02 * texture
    rows, cols = np.ogrid[:size, :size]
    radius_px = px_from_um(radius_um, (SPACING_MM, SPACING_MM))
    for row, col in centres:
        hematoxylin = hematoxylin + 0.7 * ((rows - row) ** 2 + (cols - col) ** 2 <= radius_px**2)
    od = hematoxylin[..., None] * HEMATOXYLIN + eosin[..., None] * EOSIN
    return _rgb_from_od(od + rng.normal(0.0, 0.01, size=od.shape))


def _nearest_distances(found: np.ndarray, targets: np.ndarray) -> np.ndarray:
    if len(found) == 0:
        return np.full(len(targets), np.inf)
    return np.min(np.hypot(targets[:, None, 0] - found[None, :, 0], targets[:, None, 1] - found[None, :, 1]), axis=1)


def test_hematoxylin_density_equals_rgb2hed():
    rgb = np.random.default_rng(1).integers(0, 256, size=(64, 80, 3), dtype=np.uint8)
    rgb[0, :3] = [[0, 0, 0], [255, 255, 255], [255, 0, 128]]
    density = hematoxylin_density(rgb)
    assert density.dtype == np.float32 and density.shape == (64, 80)
    np.testing.assert_allclose(density, rgb2hed(rgb)[..., 0], atol=1e-5)


def test_synthetic_discs_found_and_nothing_else():
    centres = [(40, 50), (60, 190), (128, 128), (200, 60), (210, 210), (150, 30)]
    found = nucleus_centres(_stained(centres), SPACING_MM)
    assert found.dtype == np.int64 and found.ndim == 2 and found.shape[1] == 2
    assert len(found) == len(centres), found
    assert np.all(_nearest_distances(found, np.array(centres)) <= 3.0)


def test_deterministic_and_strongest_first():
    rgb = _stained([(40, 50), (128, 128), (200, 200)], seed=3)
    first, second = nucleus_centres(rgb, SPACING_MM), nucleus_centres(rgb.copy(), SPACING_MM)
    np.testing.assert_array_equal(first, second)
    sigma_px = px_from_um(SMOOTHING_UM, (SPACING_MM, SPACING_MM))
    density = ndimage.gaussian_filter(hematoxylin_density(rgb), sigma_px, mode="nearest")
    values = density[first[:, 0], first[:, 1]]
    assert np.all(np.diff(values) <= 1e-6)


@pytest.mark.parametrize(
    "rgb",
    [
        np.full((256, 256, 3), 255, dtype=np.uint8),  # white
        np.random.default_rng(0).integers(232, 248, size=(256, 256, 3), dtype=np.uint8),  # noisy glass
        np.full((256, 256, 3), (150, 80, 160), dtype=np.uint8),  # uniform purple
        np.full((256, 256, 3), (235, 170, 200), dtype=np.uint8),  # uniform pink
        np.zeros((0, 0, 3), dtype=np.uint8),
    ],
    ids=["white", "glass", "uniform-purple", "uniform-pink", "empty"],
)
def test_blank_and_uniform_images_give_no_centres(rgb):
    found = nucleus_centres(rgb, SPACING_MM)
    assert found.shape == (0, 2) and found.dtype == np.int64


def test_glass_around_tissue_gets_no_centres():
    tissue = _stained([(64, 64), (64, 192), (190, 128)])
    rgb = np.full((512, 256, 3), 242, dtype=np.uint8)
    rgb += np.random.default_rng(2).integers(0, 6, size=rgb.shape, dtype=np.uint8)
    rgb[256:] = tissue
    found = nucleus_centres(rgb, SPACING_MM)
    assert len(found) == 3 and np.all(found[:, 0] >= 256)


def test_min_distance_um_respected():
    # two nuclei 6 um apart (24 px at 0.25 um/px), each 2 um in radius
    rgb = _stained([(128, 116), (128, 140)], radius_um=2.0)
    assert len(nucleus_centres(rgb, SPACING_MM, min_distance_um=4.0)) == 2
    assert len(nucleus_centres(rgb, SPACING_MM, min_distance_um=8.0)) == 1
    # the same distance at half the resolution (0.5 um/px) is 12 px: still 6 um, still resolved by 4 um
    half = rgb[::2, ::2].copy()
    assert len(nucleus_centres(half, 2 * SPACING_MM, min_distance_um=4.0)) == 2


def test_rejects_non_uint8_rgb():
    with pytest.raises(ValueError):
        nucleus_centres(np.zeros((8, 8, 3), dtype=np.float32), SPACING_MM)
    with pytest.raises(ValueError):
        nucleus_centres(np.zeros((8, 8), dtype=np.uint8), SPACING_MM)


@pytest.mark.skipif(not (MIDESEC / "midesec.json").is_file(), reason="../shared/data/real not available")
def test_real_midesec_mitoses_have_a_nucleus_centre():
    """All 35 MiDeSeC fields: 95.7 % of the 115 mitoses have a centre within 6 um. On these 12 it is 40/42. The
    misses are mostly anaphases and telophases: each chromosome set gets a centre, but the box centre lies between
    them."""
    coco = json.loads((MIDESEC / "midesec.json").read_text())
    images = {image["id"]: image["file_name"] for image in coco["images"]}
    names = sorted(images.values())[::3]
    radius_px = px_from_um(6.0, (SPACING_MM, SPACING_MM))
    min_distance_px = px_from_um(4.0, (SPACING_MM, SPACING_MM))
    hits = total = 0
    for name in names:
        rgb = read_image(MIDESEC / name)
        found = nucleus_centres(rgb, SPACING_MM)
        assert 150 <= len(found) <= 800, (name, len(found))  # nuclei of a 256 x 256 um field of breast cancer
        assert pdist(found).min() >= min_distance_px - 1e-9
        boxes = [a["bbox"] for a in coco["annotations"] if images[a["image_id"]] == name and a["category_id"] == 1]
        mitoses = np.array([((y1 + y2) / 2, (x1 + x2) / 2) for x1, y1, x2, y2 in boxes])
        hits += int(np.sum(_nearest_distances(found, mitoses) <= radius_px))
        total += len(mitoses)
    assert total >= 30
    assert hits / total >= 0.85, (hits, total)
