"""The images the speed benchmarks time: a MIDOG-sized region full of tissue built from real fields, written like
MIDOG's files.

    python -m benchmarks.tissue_region --data ../shared/data/real --out tissue.tiff

MIDOG regions of interest are chosen on tissue, so a speed measured on a tile that is mostly glass flatters anything
that skips glass. The 35 completely annotated MiDeSeC fields (1024 x 1024 px at 0.25 um/px) are laid out in their
sorted order, 7 columns by 5 rows: 7168 x 5120 px (37 MP, the MIDOG 2022 size), written as a tiled deflate TIFF with
resolution tags like MIDOG's files. 87% of its pixels are tissue (`model.tissue.tissue_mask` on every 8th pixel, as
`main` prints).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

FIELD_PX = 1024
COLUMNS, ROWS = 7, 5


def tissue_mosaic(data_root: Path) -> np.ndarray:
    """(5120, 7168, 3) uint8: the MiDeSeC fields in sorted order, row by row."""
    from training.data import real_data

    fields = sorted(real_data.load_midesec_fields(Path(data_root)), key=lambda field: field.path.name)
    if len(fields) < COLUMNS * ROWS:
        raise SystemExit(f"error: {data_root} holds {len(fields)} MiDeSeC fields, the mosaic needs {COLUMNS * ROWS}")
    mosaic = np.empty((ROWS * FIELD_PX, COLUMNS * FIELD_PX, 3), dtype=np.uint8)
    for index, field in enumerate(fields[: COLUMNS * ROWS]):
        row, col = divmod(index, COLUMNS)
        rgb = real_data.read_image(field.path)[:FIELD_PX, :FIELD_PX]
        mosaic[row * FIELD_PX : (row + 1) * FIELD_PX, col * FIELD_PX : (col + 1) * FIELD_PX] = rgb
    return mosaic


def write_midog_like_tiff(source: Path | np.ndarray, target: Path, spacing_um: float | None = None) -> tuple[int, int]:
    """A tiled, zlib-compressed RGB TIFF with resolution tags, like MIDOG's files, so reading costs what it costs.
    `source`: a picture file or an RGB array. Default pixel size: the model's (`model.spacing.DEFAULT_SPACING_MM`)."""
    from model.spacing import DEFAULT_SPACING_MM

    spacing_um = DEFAULT_SPACING_MM * 1000.0 if spacing_um is None else spacing_um
    if isinstance(source, np.ndarray):
        rgb = source
    else:
        with Image.open(source) as image:
            rgb = np.asarray(image.convert("RGB"))
    per_cm = 1e4 / spacing_um
    tifffile.imwrite(
        target,
        rgb,
        photometric="rgb",
        resolution=(per_cm, per_cm),
        resolutionunit="CENTIMETER",
        tile=(256, 256),
        compression="zlib",
    )
    return rgb.shape[1], rgb.shape[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the real data folder (../shared/data/real)")
    parser.add_argument("--out", type=Path, required=True, help="TIFF to write")
    args = parser.parse_args(argv)
    from model.tissue import tissue_mask

    mosaic = tissue_mosaic(args.data)
    write_midog_like_tiff(mosaic, args.out)
    share = float(tissue_mask(mosaic[::8, ::8]).mean())
    print(f"{args.out}: {mosaic.shape[1]}x{mosaic.shape[0]} px, {100 * share:.0f}% tissue")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
