"""Pixel reading: tifffile's fast path gives exactly SimpleITK's pixels, and hands every other file to SimpleITK."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from model.image_io import ImageHeader, InputImageError, read_header, read_rgb, read_rgb_simpleitk, read_tiff_rgb


def pixels(height_px: int = 300, width_px: int = 260, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Random RGB, with an opaque alpha channel when `channels` is 4."""
    rgb = np.random.default_rng(seed).integers(0, 256, (height_px, width_px, 3), dtype=np.uint8)
    if channels == 3:
        return rgb
    return np.concatenate([rgb, np.full((height_px, width_px, 1), 255, np.uint8)], axis=2)


def write(path, rgb, **options):
    per_cm = 1e4 / 0.25
    extrasamples = {"extrasamples": [2]} if rgb.shape[2] == 4 else {}
    resolution = {"resolution": (per_cm, per_cm), "resolutionunit": "CENTIMETER"}
    tifffile.imwrite(path, rgb, photometric="rgb", **resolution, **extrasamples, **options)
    return path


@pytest.mark.parametrize(
    "channels, options",
    [
        (3, {}),
        (3, {"tile": (128, 128), "compression": "zlib"}),
        (4, {"tile": (128, 128), "compression": "zlib"}),
        (3, {"compression": "zlib", "predictor": True}),
        (4, {"rowsperstrip": 7}),
    ],
    ids=["stripped", "tiled-zlib", "tiled-rgba", "predictor", "rgba-strips"],
)
def test_fast_path_reads_what_simpleitk_reads(tmp_path, channels, options):
    path = write(tmp_path / "001.tiff", pixels(channels=channels), **options)
    fast = read_tiff_rgb(path, read_header(path))
    assert fast is not None and fast.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(fast, read_rgb_simpleitk(path))
    np.testing.assert_array_equal(fast, pixels(channels=channels)[..., :3])


def test_other_layouts_go_to_simpleitk(tmp_path):
    """A rotated image, translucent tiles (libtiff premultiplies them) and a second page are not the fast path's to
    read: read_rgb returns what SimpleITK reads."""
    rotated = write(tmp_path / "rotated.tiff", pixels(), metadata=None, extratags=[(274, 3, 1, 3, True)])
    translucent_rgba = pixels(channels=4)
    translucent_rgba[..., 3] = 128
    translucent = write(tmp_path / "translucent.tiff", translucent_rgba, tile=(128, 128))
    for path in (rotated, translucent):
        assert read_tiff_rgb(path, read_header(path)) is None
        np.testing.assert_array_equal(read_rgb(path)[0], read_rgb_simpleitk(path))
    two_pages = tmp_path / "pages.tiff"
    with tifffile.TiffWriter(two_pages) as writer:
        writer.write(pixels(), photometric="rgb")
        writer.write(pixels(seed=1), photometric="rgb")
    header_of_first_page = ImageHeader(two_pages, 260, 300, 3, (0.00025, 0.00025), (0.0, 0.0))
    assert read_tiff_rgb(two_pages, header_of_first_page) is None  # read_header refuses it before (3-D size)


def test_truncated_pixel_data_is_reported_not_zero_filled(tmp_path):
    path = write(tmp_path / "001.tiff", pixels(), tile=(128, 128), compression="zlib")
    header = read_header(path)
    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages.first
        last_tile_end = max(o + c for o, c in zip(page.dataoffsets, page.databytecounts, strict=True))
    path.write_bytes(path.read_bytes()[: last_tile_end - 200])  # the header comes first: only pixels are lost
    assert read_tiff_rgb(path, header) is None
    with pytest.raises(InputImageError, match="corrupt or truncated"):
        read_rgb(path, header)
