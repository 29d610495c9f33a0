"""Reading input images the way grand-challenge hands them over, with clear errors for bad input.

SimpleITK reads the TIFF's resolution tags as spacing in mm; tiled TIFFs come back RGBA (alpha dropped here),
stripped ones RGB. Only the header is read to validate a file, so a bad image fails fast and the pixels are read
once per case.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from model.geometry import RECEPTIVE_FIELD_PX
from model.spacing import resolve_spacing_mm

SUPPORTED_SUFFIXES = (".tif", ".tiff", ".mha")


class InputImageError(Exception):
    """An input that cannot be processed; the message is a single line meant for the user."""


@dataclass(frozen=True)
class ImageHeader:
    path: Path
    width_px: int
    height_px: int
    channels: int
    spacing_mm: tuple[float, float]
    origin_mm: tuple[float, float]


def read_header(path: Path) -> ImageHeader:
    """Validate an image file from its header alone: 2-D, RGB(A), 8-bit, at least one receptive field large."""
    path = Path(path)
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise InputImageError(f"{path.name}: unsupported file type (expected {', '.join(SUPPORTED_SUFFIXES)})")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else "unreadable"
        raise InputImageError(f"{path.name}: not a readable image ({first_line})") from None
    size = reader.GetSize()
    if len(size) != 2 and not (len(size) == 3 and size[2] == 1):
        raise InputImageError(f"{path.name}: expected a 2-D image, got size {size}")
    channels = reader.GetNumberOfComponents()
    if channels not in (3, 4):
        raise InputImageError(f"{path.name}: expected an RGB or RGBA image, got {channels} channel(s)")
    if reader.GetPixelID() not in (sitk.sitkUInt8, sitk.sitkVectorUInt8):
        raise InputImageError(
            f"{path.name}: expected 8-bit colour, got {sitk.GetPixelIDValueAsString(reader.GetPixelID())}"
        )
    width_px, height_px = int(size[0]), int(size[1])
    if min(width_px, height_px) < RECEPTIVE_FIELD_PX:
        raise InputImageError(
            f"{path.name}: {width_px}x{height_px} px is smaller than the {RECEPTIVE_FIELD_PX} px receptive field"
        )
    return ImageHeader(
        path=path,
        width_px=width_px,
        height_px=height_px,
        channels=channels,
        spacing_mm=resolve_spacing_mm(reader.GetSpacing()[:2], source=path.name),
        origin_mm=(float(reader.GetOrigin()[0]), float(reader.GetOrigin()[1])),
    )


def read_rgb(path: Path, header: ImageHeader | None = None) -> tuple[np.ndarray, ImageHeader]:
    """Pixels as (H, W, 3) uint8 plus the validated header (pass one already read to skip re-reading it)."""
    header = header or read_header(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError:
        raise InputImageError(f"{Path(path).name}: the pixel data is corrupt or truncated") from None
    pixels = sitk.GetArrayViewFromImage(image)  # a view into `image`'s buffer: copy before `image` is freed
    if pixels.ndim == 4:  # (1, H, W, C) for 3-D images of one slice
        pixels = pixels[0]
    return np.array(pixels[..., :3], dtype=np.uint8, order="C", copy=True), header
