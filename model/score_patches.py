"""Ensemble probability that each image of a folder is centred on a mitotic figure.

    python -m model.score_patches DIR --out scores.csv

Reads PNG, JPEG, WebP and TIFF files (any size from 64 px; smaller than the 78 px receptive field is padded by
reflection), scores the central window with both policy models and writes `path,probability` (the agreement score:
the lower of the two models' probabilities).
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from model.bundle import DEFAULT_BUNDLE_DIR, BundleError
from model.inference import Detector

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")
MIN_SIDE_PX = 64


def read_patch(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"))
    if min(rgb.shape[:2]) < MIN_SIDE_PX:
        raise ValueError(f"{path}: {rgb.shape[1]}x{rgb.shape[0]} px is smaller than {MIN_SIDE_PX} px")
    return rgb


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, add_help=add_help, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("directory", type=Path, help="folder of patches (searched recursively)")
    parser.add_argument("--out", type=Path, required=True, help="CSV to write (columns: path,probability)")
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE_DIR, help="model bundle (default: shipped)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = get_args_parser().parse_args(argv)
    paths = sorted(p for p in args.directory.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        print(f"error: no {'/'.join(IMAGE_SUFFIXES)} image in {args.directory}", file=sys.stderr)
        return 1
    try:
        detector = Detector(args.bundle, device=args.device)
    except BundleError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    rows, failures = [], []
    for path in tqdm(paths, desc="patches", unit="patch"):
        try:
            rows.append((str(path), detector.centre_probability(read_patch(path))))
        except (ValueError, OSError) as error:
            failures.append(f"{path}: {error}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "probability"])
        writer.writerows((path, f"{probability:.6f}") for path, probability in rows)
    for failure in failures:
        print(f"skipped: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
