"""The offline real data as lazy record lists: counts, origins, look-alike positions, unlabeled fields."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from training.data.real_data import (
    DEFAULT_ROOT,
    load_mitosis_free_tiles,
    load_patches,
    load_unlabeled_fields,
    read_image,
    read_patch,
    tissue_mask,
)

pytestmark = pytest.mark.skipif(
    not (DEFAULT_ROOT / "patches.csv").is_file(),
    reason=f"real data not found at {DEFAULT_ROOT} (shared data folder next to the repo)",
)


def test_patches_with_their_origin():
    patches = load_patches()
    assert len(patches) == 5696
    assert {patch.label for patch in patches} == {1}
    assert Counter(patch.dataset for patch in patches) == {"MIDOG21": 1721, "TUPAC16": 1868, "MIDOG++": 2107}
    assert Counter(patch.source for patch in patches) == {"AMi-Br": 3589, "AtNorM-MD": 2107}
    assert Counter(patch.subclass for patch in patches) == {"normal": 4665, "atypical": 1031}
    first = patches[0]
    assert (first.dataset, first.slide, first.x_px, first.y_px) == ("MIDOG21", "002.tiff", 6267, 3218)
    crop = read_patch(first)
    assert crop.shape == (128, 128, 3) and crop.dtype == np.uint8


def test_mitosis_free_tiles_and_lookalikes():
    tiles = load_mitosis_free_tiles()
    assert len(tiles) == 2
    assert all((tile.width_px, tile.height_px) == (7215, 5412) for tile in tiles)
    assert [len(tile.lookalikes_px) for tile in tiles] == [6, 5]
    first = tiles[0].lookalikes_px[0]
    np.testing.assert_allclose(first, (0.462093 * 7215, 0.895972 * 5412))
    for tile in tiles:
        assert (tile.lookalikes_px[:, 1] > 0.5 * tile.height_px).all()  # tissue is in the lower part
        assert (tile.lookalikes_px >= 0).all() and (tile.lookalikes_px[:, 0] < tile.width_px).all()


def test_unlabeled_fields():
    fields = load_unlabeled_fields()
    assert len(fields) == 15
    assert all((f.width_px, f.height_px, f.spacing_mm) == (2084, 2084, 0.0002456) for f in fields)
    pixels = read_image(fields[0].path)
    assert pixels.shape == (2084, 2084, 3)
    assert 0.3 < tissue_mask(pixels).mean() <= 1.0


def test_tissue_mask_rejects_glass():
    glass = np.full((4, 4, 3), 240, np.uint8)
    stained = np.tile(np.array([180, 90, 170], np.uint8), (4, 4, 1))
    assert not tissue_mask(glass).any() and tissue_mask(stained).all()
