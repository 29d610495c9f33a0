"""Ensemble probability that each image of a folder is centred on a mitotic figure.

    python -m app.score_patches DIR --out scores.csv [--spacing-um 0.25]

Reads 8-bit PNG, JPEG, WebP and TIFF files (64 px to 4096 px per side; smaller than the 78 px receptive field is
padded by reflection), scores the central window with both policy models and writes `path,probability` (the
agreement score: the lower of the two models' probabilities). Patches at another pixel size than the networks'
0.25 um/px (`--spacing-um`) are resampled first, as `process.py` does; resolutions it refuses are refused here too.

Bad input answers like `process.py`: a bad option or output is one `error:` line and exit code 1 before the models
load; a patch that cannot be scored is one `error:` line and the others are still scored (exit code 1 at the end);
the CSV is written atomically and never onto a patch.
"""

from __future__ import annotations

import argparse
import csv
import logging
import signal
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from app import preflight
from app.preflight import UsageError
from model import Detector, spacing
from model.atomic_files import atomic_output
from model.bundle import DEFAULT_BUNDLE_DIR, BundleError
from model.command_line import command_parser
from model.progress import progress_bar
from model.resample import resample_rgb

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")
MIN_SIDE_PX = 64
MAX_SIDE_PX = 4096
"""A patch is a crop around one point: only its central 78 px window is scored. A larger image is a field or a slide
(`process.py` detects every mitosis in it); decoding it here would only cost memory (a 14000 px PNG is 588 MB)."""
EIGHT_BIT_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"}
"""Pillow modes with 8 bits per channel. 16-bit and float images would be converted by clipping, not scaling, and
scored as white or black: they are refused instead."""

logger = logging.getLogger("score_patches")


class PatchError(ValueError):
    """This patch cannot be scored; the message is one line."""


def read_patch(path: Path, spacing_mm: tuple[float, float]) -> np.ndarray:
    """An 8-bit RGB patch at the networks' pixel size (resampled from `spacing_mm` when it differs)."""
    try:
        with Image.open(path) as image:
            width_px, height_px = image.size
            if max(width_px, height_px) > MAX_SIDE_PX:
                raise PatchError(
                    f"{width_px}x{height_px} px is larger than a patch ({MAX_SIDE_PX} px at most): use process.py"
                )
            if image.mode not in EIGHT_BIT_MODES:
                raise PatchError(f"pixel mode {image.mode} is not 8 bits per channel: convert it to 8-bit RGB first")
            rgb = np.asarray(image.convert("RGB"))
    except (OSError, Image.DecompressionBombError, SyntaxError) as error:  # SyntaxError: Pillow's broken-file signal
        raise PatchError(f"cannot be read as an image ({error})") from None
    if spacing.needs_resampling(spacing_mm):
        width_px, height_px = spacing.model_size_px(rgb.shape[1], rgb.shape[0], spacing_mm)
        rgb = resample_rgb(rgb, (width_px, height_px))
    if min(rgb.shape[:2]) < MIN_SIDE_PX:
        raise PatchError(f"{rgb.shape[1]}x{rgb.shape[0]} px (at 0.25 um/px) is smaller than {MIN_SIDE_PX} px")
    return rgb


def find_patches(directory: str) -> list[Path]:
    """The patch files under `directory`, sorted; at least one."""
    if not directory.strip():
        raise UsageError("the patch folder is empty: name the folder that holds the patches")
    folder = Path(directory)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder of patches")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise UsageError(f"no {'/'.join(IMAGE_SUFFIXES)} image in {folder}")
    return paths


def check_spacing(spacing_um: float) -> tuple[float, float]:
    """--spacing-um as (x, y) mm, refused where `process.py` would refuse the image's resolution."""
    spacing_mm = (spacing_um / 1000, spacing_um / 1000)
    try:
        spacing.check_usable_spacing(spacing_mm)
    except ValueError as error:
        raise UsageError(f"--spacing-um {spacing_um:g}: {error}") from None
    return spacing_mm


def write_scores(rows: list[tuple[str, float]], out: Path) -> None:
    """`path,probability` rows, atomically (a failure leaves an older CSV as it was)."""
    try:
        with atomic_output(out) as temporary, open(temporary, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "probability"])
            writer.writerows((path, f"{probability:.6f}") for path, probability in rows)
    except OSError as error:
        raise UsageError(f"cannot write --out {out}: {error.strerror or error}") from None


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = command_parser("app.score_patches", __doc__, add_help, argparse.RawTextHelpFormatter)
    parser.add_argument("directory", type=str, help="folder of patches (searched recursively)")
    parser.add_argument("--out", type=Path, required=True, help="CSV to write (columns: path,probability)")
    parser.add_argument(
        "--spacing-um",
        type=float,
        default=spacing.DEFAULT_SPACING_MM * 1000,
        help="pixel size of the patches in um (default: 0.25, the networks' own)",
    )
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE_DIR, help="model bundle (default: shipped)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--no-verifier", action="store_true", help="the dense nets' ensemble probability, without the bundle's verifier"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = get_args_parser().parse_args(argv)
    failures = 0
    try:
        paths = find_patches(args.directory)
        spacing_mm = check_spacing(args.spacing_um)
        preflight.check_outputs_apart(paths, {"--out": args.out})
        preflight.check_output_file(args.out, "--out")
        preflight.check_device(args.device, "auto")
        detector = Detector(args.bundle, device=args.device, verifier=not args.no_verifier)
        rows = []
        for path in progress_bar(paths, stage="patches", unit="patch"):
            try:
                rows.append((str(path), detector.centre_probability(read_patch(path, spacing_mm))))
            except PatchError as error:
                failures += 1
                print(f"error: {path}: {error}", file=sys.stderr)
        write_scores(rows, args.out)
    except (BundleError, UsageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; no CSV written", file=sys.stderr)
        return 128 + signal.SIGINT
    logger.info("%d of %d patches scored -> %s", len(rows), len(paths), args.out)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
