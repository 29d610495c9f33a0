"""benchmarks.tissue_region: the tissue region the speed benchmark times is the real fields, laid out as documented."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from conftest import REAL_DATA

from benchmarks import tissue_region

has_real_data = pytest.mark.skipif(
    not (REAL_DATA / "patches.csv").is_file(), reason="../shared/data/real not available"
)


@has_real_data
def test_mosaic_is_the_35_fields_in_sorted_order_and_mostly_tissue(tmp_path):
    from model.tissue import tissue_mask
    from training.data import real_data

    mosaic = tissue_region.tissue_mosaic(REAL_DATA)
    assert mosaic.shape == (5120, 7168, 3)
    fields = sorted(real_data.load_midesec_fields(REAL_DATA), key=lambda field: field.path.name)
    np.testing.assert_array_equal(mosaic[1024:2048, :1024], real_data.read_image(fields[7].path))  # row 1, column 0
    assert 0.6 < tissue_mask(mosaic[::8, ::8]).mean() < 0.9
    tissue_region.write_midog_like_tiff(mosaic[:512, :512], tmp_path / "t.tiff")
    with tifffile.TiffFile(tmp_path / "t.tiff") as tiff:
        assert tiff.pages[0].is_tiled and tiff.pages[0].tags["XResolution"].value == (40000, 1)
