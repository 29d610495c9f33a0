"""A whole-slide image through OpenSlide: pixel size, the level to read, regions as RGB, a thumbnail.

OpenSlide (`openslide-python` with the `openslide-bin` wheel, which carries the C library) reads Aperio SVS,
Hamamatsu NDPI, MIRAX, Leica SCN, Philips and generic tiled TIFFs, and is what QuPath and most pipelines use. The
pure-Python `tiffslide` reads the TIFF-based formats only (no MRXS, no NDPI before 2.x); it was measured as the
alternative (`benchmarks/slide_readers.py`, docs/wsi.md).

Coordinates: OpenSlide addresses a region by its top-left corner in level-0 pixels and its size in the level's
pixels; this module keeps that convention and names every coordinate by its level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model import spacing


class SlideError(Exception):
    """This slide cannot be counted; the message is one line."""


@dataclass
class Slide:
    """An open slide: its level-0 pixel size (um, x and y) and the level the detector reads."""

    path: Path
    handle: object  # openslide.OpenSlide
    mpp_um: tuple[float, float]
    level: int

    @property
    def level_downsample(self) -> float:
        """Level-0 pixels per pixel of the level read."""
        return float(self.handle.level_downsamples[self.level])

    @property
    def level_size_px(self) -> tuple[int, int]:
        """(width, height) of the level read."""
        return tuple(self.handle.level_dimensions[self.level])

    @property
    def level_spacing_mm(self) -> tuple[float, float]:
        """Pixel size of the level read, in mm (x, y): what the detector is told."""
        return tuple(value * self.level_downsample / 1000 for value in self.mpp_um)

    def read(self, x_px: int, y_px: int, width_px: int, height_px: int) -> np.ndarray:
        """(height, width, 3) uint8 RGB of the level read, from its pixel (x, y) (`over_white`)."""
        factor = self.level_downsample
        try:
            region = self.handle.read_region(
                (int(round(x_px * factor)), int(round(y_px * factor))), self.level, (width_px, height_px)
            )
        except Exception as error:  # openslide.OpenSlideError and friends: a damaged tile
            raise SlideError(f"cannot read {width_px}x{height_px} px at ({x_px}, {y_px}): {error}") from None
        return over_white(region)

    def thumbnail(self, max_side_px: int = 2048) -> tuple[np.ndarray, float]:
        """An RGB thumbnail (longest side at most `max_side_px`) and the level-0 pixels per thumbnail pixel."""
        width_px, height_px = self.handle.dimensions
        scale = max(width_px, height_px) / max_side_px
        image = self.handle.get_thumbnail((max(1, int(width_px / scale)), max(1, int(height_px / scale))))
        rgb = over_white(image)
        return rgb, width_px / rgb.shape[1]


def over_white(image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a Pillow image, its transparent parts (outside the scanned area) white, as glass."""
    rgba = np.asarray(image.convert("RGBA"), dtype=np.uint8)
    alpha = rgba[..., 3:4].astype(np.uint16)
    return np.ascontiguousarray(((rgba[..., :3] * alpha + 255 * (255 - alpha)) // 255).astype(np.uint8))


def read_mpp_um(properties: dict, given_um: float | None) -> tuple[float, float]:
    """The level-0 pixel size from the slide's properties (`openslide.mpp-x/y`), or `given_um` (--mpp). A size no
    microscope has (`model.spacing.PLAUSIBLE_SPACING_MM`, e.g. a tag of 0.01 um/px) is refused: counted as given,
    it made a slide of zero tissue and zero figures."""
    if given_um is not None:
        mpp, where = (float(given_um), float(given_um)), "--mpp"
    else:
        try:
            mpp = (float(properties["openslide.mpp-x"]), float(properties["openslide.mpp-y"]))
        except (KeyError, ValueError):
            raise SlideError("the slide does not say its pixel size: give it with --mpp (um per pixel)") from None
        where = "the slide's pixel size"
    if not all(math.isfinite(value) and value > 0 for value in mpp):
        raise SlideError(f"{where} {mpp} um is not usable: give it with --mpp (um per pixel)")
    low_um, high_um = (value * 1000 for value in spacing.PLAUSIBLE_SPACING_MM)
    if not all(low_um <= value <= high_um for value in mpp):
        raise SlideError(
            f"{where} {spacing.describe_um([v / 1000 for v in mpp])} is no microscope's ({low_um:g}-{high_um:g} um/px):"
            " give the right one with --mpp (um per pixel)"
        )
    return mpp


def nearest_level(downsamples: list[float], mpp_um: tuple[float, float]) -> int:
    """The level whose pixel size is nearest the networks' 0.25 um/px (by ratio, so 0.5 is as near as 0.125)."""
    target_um = spacing.DEFAULT_SPACING_MM * 1000
    mean_um = (mpp_um[0] + mpp_um[1]) / 2
    return int(np.argmin([abs(math.log(mean_um * d / target_um)) for d in downsamples]))


def open_slide(path: Path, mpp_um: float | None = None) -> Slide:
    """Open a slide for counting: its pixel size known and usable, the level nearest 0.25 um/px chosen.

    Raises SlideError (one line) for a file OpenSlide cannot open, a missing pixel size, or a level whose pixel
    size the detector cannot serve (`model.spacing.USABLE_SPACING_MM`)."""
    import openslide  # the WSI requirements: only this package needs them

    path = Path(path)
    if not path.is_file():
        raise SlideError("no such file")
    try:
        handle = openslide.OpenSlide(str(path))
    except (openslide.OpenSlideError, openslide.OpenSlideUnsupportedFormatError) as error:
        raise SlideError(f"OpenSlide cannot open it ({error or 'unsupported format'})") from None
    mpp = read_mpp_um(dict(handle.properties), mpp_um)
    level = nearest_level(list(handle.level_downsamples), mpp)
    slide = Slide(path, handle, mpp, level)
    try:
        spacing.check_usable_spacing(slide.level_spacing_mm)
    except ValueError as error:
        raise SlideError(str(error)) from None
    return slide
