"""Where training samples come from: exact centring at borders, balanced draws, fixed splits, field regions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import REAL_DATA

from model.geometry import BORDER_STRIP_PX, NEAREST_CENTRE_PX, distance_to_border_px
from training.data.real_data import MIDOGPP_BLOCK, PatchRecord
from training.data.sources import (
    MIDESEC_VALIDATION_FIELDS,
    SOURCE_PX,
    NegativeSites,
    SiteImage,
    TrainingData,
    ValidationRegion,
    border_grid,
    from_real,
    midesec_validation_names,
    negative_sampler,
    positive_sampler,
    tissue_grid,
)


def test_border_crops_are_centred_and_mirrored_in_memory_and_from_tiff(tmp_path):
    """A site 5 px from the top-left corner keeps its pixel at the crop centre; the rest is a reflection (never a
    crop shifted inside the image, which put 3.5% of MIDOG++ mitoses outside the 78 px window)."""
    rgb = np.random.default_rng(0).integers(0, 256, (300, 260, 3), dtype=np.uint8)
    path = tmp_path / "image.tiff"
    tifffile.imwrite(path, rgb, tile=(64, 64))
    padded = np.pad(rgb, ((SOURCE_PX, SOURCE_PX), (SOURCE_PX, SOURCE_PX), (0, 0)), mode="reflect")
    half = SOURCE_PX // 2
    for row, col in ((5, 7), (299 - 3, 259), (150, 2), (0, 0), (120, 130)):
        top, left = row + SOURCE_PX - half, col + SOURCE_PX - half
        expected = padded[top : top + SOURCE_PX, left : left + SOURCE_PX]
        in_memory = SiteImage("m", 300, 260, 0.00025, rgb=rgb).crop(row, col)
        np.testing.assert_array_equal(in_memory, expected)
        assert np.array_equal(in_memory[half, half], rgb[row, col])
        if min(row, col) > 0:  # TIFF windows mirror the part read; the same as long as one reflection fills the pad
            np.testing.assert_array_equal(SiteImage("f", 300, 260, 0.00025, path=path).crop(row, col), expected)


def sites(source: str, kind: str, count: int) -> NegativeSites:
    return NegativeSites.build(0, np.zeros((count, 2)), kind, source)


def test_negatives_are_drawn_balanced_across_sources_then_kinds():
    pool = sites("big", "grid", 10_000).concatenate(sites("big", "nucleus", 10)).concatenate(sites("small", "grid", 5))
    drawn = pool.subset(negative_sampler(pool).draw(np.random.default_rng(0), 40_000))
    assert abs(np.mean(drawn.source == "small") - 0.5) < 0.02
    assert abs(np.mean(drawn.kind == "nucleus") - 0.25) < 0.02
    assert pool.counts() == {"big": {"grid": 10_000, "nucleus": 10}, "small": {"grid": 5}}


def test_positive_datasets_are_weighted_by_the_square_root_of_their_size():
    datasets = np.array(["large"] * 400 + ["small"] * 4)
    drawn = datasets[positive_sampler(datasets).draw(np.random.default_rng(1), 40_000)]
    assert abs(np.mean(drawn == "small") - 2 / 22) < 0.01  # sqrt 4 : sqrt 400


def test_midog_plus_plus_crops_are_grouped_in_blocks_of_consecutive_numbers():
    def group(name: str) -> str:
        return PatchRecord(
            Path(f"patches/atnorm-md/normal/{name}"), 1, "AtNorM-MD", "MIDOG++", None, None, None, "normal", 128
        ).group

    assert group("1.webp") == group(f"{MIDOGPP_BLOCK - 1}.webp") != group(f"{MIDOGPP_BLOCK}.webp")
    named = PatchRecord(Path("x.webp"), 1, "AMi-Br", "MIDOG21", "002.tiff", 1, 2, "normal", 128)
    assert named.group == "MIDOG21/002.tiff"


def test_midesec_split_is_fixed():
    names = [f"P0_{i:02d}.webp" for i in range(35)]
    chosen = midesec_validation_names(names)
    assert len(chosen) == MIDESEC_VALIDATION_FIELDS == 10
    assert chosen == midesec_validation_names(list(reversed(names)))
    assert sorted(chosen)[:3] == ["P0_06.webp", "P0_08.webp", "P0_09.webp"]  # as the README and model card state


def test_field_regions_are_exhaustive_regions_of_groups_with_mitoses():
    one = np.array([[10, 10]])
    none = np.zeros((0, 2))
    regions = [
        ValidationRegion(0, (0, 9), one, True, "fields"),
        ValidationRegion(1, (0, 9), none, True, "fields"),  # a field without mitoses still counts its false positives
        ValidationRegion(2, (0, 9), none, True, "mitosis-free tiles"),
        ValidationRegion(3, (0, 9), none, False, "unlabeled"),
    ]
    data = TrainingData(
        "t",
        [],
        np.zeros((0, 1)),
        np.zeros(0),
        np.zeros((0, 1)),
        [],
        NegativeSites.empty(),
        NegativeSites.empty(),
        [],
        regions,
        0,
        32,
    )
    assert [r.image for r in data.field_regions] == [0, 1]


@pytest.mark.parametrize("kind", ["stroma", ""])
def test_unknown_negative_kind_is_refused(kind):
    with pytest.raises(ValueError, match="unknown negative kind"):
        NegativeSites.build(0, np.zeros((1, 2)), kind, "s")


def test_border_sites_cover_the_strip_dense_inference_mirrors_and_grid_sites_stay_out_of_it():
    """Windows centred in the border strip reach past the edge and see mirrored pixels at inference; training must
    see such windows as negatives (kind "border"), while grid sites keep their windows whole."""
    rgb = np.random.default_rng(1).normal((190, 110, 170), 20, (400, 360, 3)).clip(0, 255).astype(np.uint8)
    border = border_grid(rgb, 32)
    grid = tissue_grid(rgb, 32)
    assert len(border) > 0 and len(grid) > 0
    border_distance = distance_to_border_px(border[:, ::-1], *rgb.shape[:2])
    assert border_distance.max() < BORDER_STRIP_PX
    assert border_distance.min() >= np.floor(NEAREST_CENTRE_PX)  # no closer than any window centre of the map
    assert distance_to_border_px(grid[:, ::-1], *rgb.shape[:2]).min() >= BORDER_STRIP_PX
    assert {int(d) for d in border_distance} >= {7, 23}  # the whole strip, every 16 px, not just its inner edge
    glass = np.full_like(rgb, 245)
    assert len(border_grid(glass, 32)) == 0  # on tissue only


def test_held_out_fields_must_be_midesec_fields():
    if not (REAL_DATA / "patches.csv").is_file():
        pytest.skip("needs ../shared/data/real")
    with pytest.raises(ValueError, match="not among the MiDeSeC fields"):
        from_real(REAL_DATA, 32, held_out_fields={"no-such-field.webp"})
