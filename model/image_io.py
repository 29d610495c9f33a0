"""Reading input images the way grand-challenge hands them over, with clear errors for bad input.

SimpleITK reads the header (size, components, the TIFF's resolution tags as spacing in mm), as grand-challenge does.
Only the header is read to validate a file, so a bad image fails fast and the pixels are read once per case.
The pixels of plain 8-bit RGB(A) TIFFs, uncompressed or deflate, like MIDOG's, are decoded by tifffile on several
threads (`read_tiff_rgb`): identical pixels (a test compares both readers), 0.2-0.26 s instead of SimpleITK's 0.7-1.2 s
for a 39 MP image, and no RGBA copy of the whole image (`benchmarks/process_speed.py`). Any other file (.mha,
JPEG or LZW tiles, a pyramid, an unusual orientation) and any TIFF tifffile cannot decode cleanly is read by
SimpleITK, which then also says what is wrong with it.

SimpleITK's own view of a TIFF hides what is wrong with it: an unreadable file "does not exist", a grey + alpha or
2-channel TIFF has "1" component, a palette image is "16-bit" RGB (its colour map's depth). TIFFs are therefore first
described from their tags with tifffile, so that every refusal says what the file really is.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import tifffile

from model import threads
from model.geometry import RECEPTIVE_FIELD_PX
from model.spacing import DEFAULT_SPACING_MM, check_usable_spacing, describe_um, model_size_px, resolve_spacing_mm

SUPPORTED_SUFFIXES = (".tif", ".tiff", ".mha")
_TIFF_SUFFIXES = (".tif", ".tiff")
_RGB_LIKE = (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR)
logger = logging.getLogger(__name__)


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
    smaller_pages_ignored: int = 0  # a TIFF's further pages (a scanner's thumbnail or label): only page 1 is read


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def check_readable(path: Path) -> None:
    """Raise InputImageError unless the file can be opened for reading (SimpleITK says "does not exist" instead)."""
    try:
        with open(path, "rb") as stream:
            stream.read(1)
    except PermissionError:
        raise InputImageError(f"{path.name}: cannot be read (permission denied for user id {os.geteuid()})") from None
    except IsADirectoryError:
        raise InputImageError(f"{path.name}: is a folder, not an image file") from None
    except FileNotFoundError:
        raise InputImageError(f"{path.name}: does not exist") from None
    except OSError as error:
        raise InputImageError(f"{path.name}: cannot be read ({error.strerror or error})") from None
    if path.stat().st_size == 0:
        raise InputImageError(f"{path.name}: the file is empty (0 bytes)")


def tiff_layout_problem(path: Path) -> str | None:
    """What makes a TIFF unusable, told from its first page's tags; None when it is 8-bit RGB(A) or when tifffile
    cannot parse it (SimpleITK's error is reported then)."""
    try:
        with tifffile.TiffFile(path) as tiff:
            page = tiff.pages.first
            photometric = tifffile.PHOTOMETRIC(page.photometric)
            samples, bits, dtype = int(page.samplesperpixel), int(page.bitspersample), page.dtype
            alpha = any(int(extra) in (1, 2) for extra in page.extrasamples)  # ASSOCALPHA, UNASSALPHA
    except Exception:  # any parse failure: let SimpleITK, which reads more variants, have its say
        return None
    if photometric == tifffile.PHOTOMETRIC.PALETTE:
        return "a palette (indexed-colour) image; expected 8-bit RGB: convert it to RGB first"
    if photometric == tifffile.PHOTOMETRIC.SEPARATED:
        return f"a CMYK image ({_plural(samples, 'channel')}); expected 8-bit RGB"
    if photometric in (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.MINISWHITE):
        if samples == 1:
            return "a grayscale image (1 channel); expected RGB or RGBA"
        extra = "alpha" if alpha and samples == 2 else _plural(samples - 1, "extra channel")
        return f"a grayscale image with {extra} ({samples} channels); expected RGB or RGBA"
    if samples not in (3, 4):
        return f"{_plural(samples, 'channel')}; expected RGB or RGBA (3 or 4)"
    if photometric not in _RGB_LIKE:
        return f"colour space {photometric.name}; expected RGB"
    if dtype is None or np.dtype(dtype) != np.uint8:
        kind = "floating-point" if dtype is not None and np.dtype(dtype).kind == "f" else "integer"
        return f"{bits}-bit {kind} samples; expected 8-bit RGB"
    return None


def read_header(path: Path) -> ImageHeader:
    """Validate an image file from its header alone: readable, 2-D, RGB(A), 8-bit, a usable resolution, and at least
    one receptive field large at the model's spacing."""
    path = Path(path)
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise InputImageError(f"{path.name}: unsupported file type (expected {', '.join(SUPPORTED_SUFFIXES)})")
    check_readable(path)
    if path.suffix.lower() in _TIFF_SUFFIXES and (problem := tiff_layout_problem(path)) is not None:
        raise InputImageError(f"{path.name}: {problem}")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else "unreadable"
        raise InputImageError(f"{path.name}: not a readable image ({first_line})") from None
    size = reader.GetSize()
    smaller_pages = smaller_pages_after_the_first(path) if len(size) == 3 and size[2] > 1 else None
    if smaller_pages is not None:
        size = smaller_pages[0]
        logger.warning(
            "%s: reading page 1 (%dx%d px); %s after it, smaller and not flagged as reduced resolution (a thumbnail or "
            "label), %s ignored",
            path.name, *size, _plural(smaller_pages[1], "page"), "is" if smaller_pages[1] == 1 else "are",
        )  # fmt: skip
    if len(size) != 2 and not (len(size) == 3 and size[2] == 1):
        raise InputImageError(f"{path.name}: expected a 2-D image, got size {size}")
    channels = reader.GetNumberOfComponents()
    if channels not in (3, 4):
        raise InputImageError(f"{path.name}: expected an RGB or RGBA image, got {_plural(channels, 'channel')}")
    if reader.GetPixelID() not in (sitk.sitkUInt8, sitk.sitkVectorUInt8):
        raise InputImageError(
            f"{path.name}: expected 8-bit colour, got {sitk.GetPixelIDValueAsString(reader.GetPixelID())}"
        )
    width_px, height_px = int(size[0]), int(size[1])
    spacing_mm = resolve_spacing_mm(reader.GetSpacing()[:2], source=path.name)
    try:
        check_usable_spacing(spacing_mm)
    except ValueError as error:
        raise InputImageError(f"{path.name}: {error}") from None
    _check_large_enough(path, width_px, height_px, spacing_mm)
    return ImageHeader(
        path=path,
        width_px=width_px,
        height_px=height_px,
        channels=channels,
        spacing_mm=spacing_mm,
        origin_mm=(float(reader.GetOrigin()[0]), float(reader.GetOrigin()[1])),
        smaller_pages_ignored=smaller_pages[1] if smaller_pages is not None else 0,
    )


def _check_large_enough(path: Path, width_px: int, height_px: int, spacing_mm: tuple[float, float]) -> None:
    """Raise InputImageError unless the image holds one receptive field at the networks' pixel size."""
    model_width_px, model_height_px = model_size_px(width_px, height_px, spacing_mm)
    if min(model_width_px, model_height_px) >= RECEPTIVE_FIELD_PX:
        return
    at_model_spacing = (
        ""
        if (model_width_px, model_height_px) == (width_px, height_px)
        else f" at {describe_um(spacing_mm)} is {model_width_px}x{model_height_px} px at the model's "
        f"{DEFAULT_SPACING_MM * 1000:g} um/px, which"
    )
    raise InputImageError(
        f"{path.name}: {width_px}x{height_px} px{at_model_spacing} is smaller than the {RECEPTIVE_FIELD_PX} px "
        "receptive field"
    )


_FIRST_PAGE_UNDECODABLE = (
    "holds further, smaller pages, and page 1 is not a plain uncompressed or deflate 8-bit RGB page that can be read "
    "on its own: save page 1 as a TIFF of its own"
)


def smaller_pages_after_the_first(path: Path) -> tuple[tuple[int, int], int] | None:
    """((width, height) of page 1, how many pages follow it) when every further page of a TIFF is smaller than the
    first: a scanner's thumbnail or label saved without the reduced-resolution flag, which SimpleITK would read as a
    second slice of a volume. None for anything else (pages of one size are a stack, not an image plus extras).
    Raises InputImageError when page 1 cannot be decoded alone (SimpleITK reads only all pages together)."""
    if path.suffix.lower() not in _TIFF_SUFFIXES:
        return None
    try:
        with tifffile.TiffFile(path) as tiff:
            shapes = [page.shape[:2] for page in tiff.pages]
            plain = _is_plain_rgb_page(tiff.pages.first, os.fstat(tiff.filehandle.fileno()).st_size)
    except Exception:  # SimpleITK's own error about the file stands
        return None
    (height, width), rest = shapes[0], shapes[1:]
    if not rest or not all(h <= height and w <= width and (h, w) != (height, width) for h, w in rest):
        return None
    if not plain:
        raise InputImageError(f"{path.name}: {_FIRST_PAGE_UNDECODABLE}")
    return (int(width), int(height)), len(rest)


_PLAIN_COMPRESSIONS = (tifffile.COMPRESSION.NONE, tifffile.COMPRESSION.ADOBE_DEFLATE, tifffile.COMPRESSION.DEFLATE)
_PLAIN_PREDICTORS = (tifffile.PREDICTOR.NONE, tifffile.PREDICTOR.HORIZONTAL)
DECODE_THREADS = 4
"""Threads tifffile decodes tiles with (zlib releases the GIL; docs/performance.md)."""


def _is_plain_rgb_page(page: tifffile.TiffPage, file_bytes: int) -> bool:
    """Can tifffile decode this page alone, exactly as libtiff would: contiguous 8-bit RGB(A), uncompressed or
    deflate, top-left orientation, every tile or strip inside the file."""
    orientation = page.tags.get("Orientation")
    return (
        page.photometric == tifffile.PHOTOMETRIC.RGB
        and page.planarconfig == tifffile.PLANARCONFIG.CONTIG
        and page.bitspersample == 8
        and page.samplesperpixel in (3, 4)
        and page.compression in _PLAIN_COMPRESSIONS
        and page.predictor in _PLAIN_PREDICTORS
        and (orientation is None or orientation.value == tifffile.ORIENTATION.TOPLEFT)
        and all(
            count > 0 and offset + count <= file_bytes
            for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True)
        )
    )


def read_tiff_rgb(path: Path, header: ImageHeader) -> np.ndarray | None:
    """(H, W, 3) uint8 pixels of a plain 8-bit RGB(A) TIFF's first page, decoded by tifffile; None for anything
    else (left to SimpleITK): more pages than the header allows, a page `_is_plain_rgb_page` refuses, a size that
    differs from the header's, translucent alpha, or any decoding error."""
    try:
        with tifffile.TiffFile(path) as tiff:
            page = tiff.pages.first
            if (
                len(tiff.pages) != 1 + header.smaller_pages_ignored
                or not _is_plain_rgb_page(page, os.fstat(tiff.filehandle.fileno()).st_size)
                or page.shape[:2] != (header.height_px, header.width_px)
            ):
                return None
            pixels = page.asarray(maxworkers=min(DECODE_THREADS, threads.budget()))
    except Exception:  # anything tifffile trips on goes to SimpleITK, which reports it if it is really broken
        return None
    if pixels.shape != (header.height_px, header.width_px, page.samplesperpixel) or pixels.dtype != np.uint8:
        return None
    if page.samplesperpixel == 4 and (pixels[..., 3] != 255).any():
        return None  # libtiff's RGBA reader, which SimpleITK uses for tiles, premultiplies translucent pixels
    return np.ascontiguousarray(pixels[..., :3])


def read_rgb(path: Path, header: ImageHeader | None = None) -> tuple[np.ndarray, ImageHeader]:
    """Pixels as (H, W, 3) uint8 plus the validated header (pass one already read to skip re-reading it)."""
    header = header or read_header(path)
    if Path(path).suffix.lower() in _TIFF_SUFFIXES and (pixels := read_tiff_rgb(Path(path), header)) is not None:
        return pixels, header
    if header.smaller_pages_ignored:  # SimpleITK would read every page as one volume
        raise InputImageError(f"{Path(path).name}: {_FIRST_PAGE_UNDECODABLE}")
    return read_rgb_simpleitk(path), header


def read_rgb_simpleitk(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 pixels of any readable image, as SimpleITK reads them (tiled TIFFs come back RGBA)."""
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError:
        raise InputImageError(f"{Path(path).name}: the pixel data is corrupt or truncated") from None
    pixels = sitk.GetArrayViewFromImage(image)  # a view into `image`'s buffer: copy before `image` is freed
    if pixels.ndim == 4:  # (1, H, W, C) for 3-D images of one slice
        pixels = pixels[0]
    return np.array(pixels[..., :3], dtype=np.uint8, order="C", copy=True)


def read_spacing_mm(path: str | Path) -> tuple[float, float]:
    """(x, y) pixel spacing in mm from a TIFF's XResolution / YResolution / ResolutionUnit tags, read with tifffile
    (no pixels decoded): what training's dataset reader and the offline evaluation use. `read_header` reads the same
    tags through SimpleITK, as grand-challenge does, for `process.py`.

    Resolution is pixels per unit (40000 px/cm = 0.25 um/px). Without a unit (or without the tags) the spacing is
    unknown: `model.spacing.resolve_spacing_mm` warns and returns the 0.25 um/px default.
    """
    mm_per_unit = {2: 25.4, 3: 10.0}  # RESUNIT.INCH, RESUNIT.CENTIMETER
    with tifffile.TiffFile(path) as tiff:
        tags = tiff.pages.first.tags
        x_tag, y_tag, unit_tag = tags.get("XResolution"), tags.get("YResolution"), tags.get("ResolutionUnit")
        unit = int(unit_tag.value) if unit_tag is not None else 2  # TIFF default unit is inch
        if x_tag is None or y_tag is None or unit not in mm_per_unit:
            return resolve_spacing_mm((1.0, 1.0), source=str(path))

        def per_unit(value: tuple[int, int] | float) -> float:
            if isinstance(value, tuple):
                return value[0] / value[1] if value[1] else 0.0
            return float(value)

        x_per_unit, y_per_unit = per_unit(x_tag.value), per_unit(y_tag.value)
    if x_per_unit <= 0 or y_per_unit <= 0:
        return resolve_spacing_mm((1.0, 1.0), source=str(path))
    return resolve_spacing_mm((mm_per_unit[unit] / x_per_unit, mm_per_unit[unit] / y_per_unit), source=str(path))
