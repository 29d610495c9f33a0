"""Reading training windows from tiled TIFFs: the project's reader against tifffile's public zarr interface.

    python benchmarks/tiff_windows.py [--windows 200] [--size 128] [--json OUT]

`training.data.midog_dataset.read_window` decodes only the tiles a window overlaps (`TiffPage.decode` on the bytes
at `dataoffsets` / `databytecounts`) or slices a memory map of an uncompressed contiguous file. The alternative is
`tifffile.imread(path, aszarr=True)` opened with zarr and sliced, which is just as lazy but needs zarr (and its
numcodecs, donfig, crc32c) as a training dependency. Both read the same random windows of a real 7215x5412 tile
written as 256 px tiled TIFFs (uncompressed and zlib; JPEG needs imagecodecs, which neither path has); each window
opens the file anew, as training does. The zarr column is skipped when zarr is not installed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.process_speed import DEFAULT_SOURCE, cpu_model  # noqa: E402
from training.data.midog_dataset import read_window  # noqa: E402


def read_with_zarr(path: Path, x0_px: int, y0_px: int, size_px: int) -> np.ndarray:
    import zarr

    with tifffile.imread(path, aszarr=True) as store:
        return np.asarray(zarr.open(store, mode="r")[y0_px : y0_px + size_px, x0_px : x0_px + size_px])


def time_reader(reader, path: Path, corners: list[tuple[int, int]], size_px: int) -> tuple[float, list[np.ndarray]]:
    started = time.perf_counter()
    windows = [reader(path, x, y, size_px) for x, y in corners]
    return (time.perf_counter() - started) / len(corners) * 1000.0, windows


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, add_help=add_help, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--windows", type=int, default=200, help="random windows per file (default: %(default)s)")
    parser.add_argument("--size", type=int, default=128, help="window side in px (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        import zarr  # noqa: F401

        has_zarr = True
    except ImportError:
        has_zarr = False
    image = np.asarray(Image.open(DEFAULT_SOURCE).convert("RGB"))
    rng = np.random.default_rng(0)
    height, width = image.shape[:2]
    corners = [
        (int(rng.integers(0, width - args.size)), int(rng.integers(0, height - args.size))) for _ in range(args.windows)
    ]
    print(f"CPU: {cpu_model()}; {args.windows} windows of {args.size} px from a {width}x{height} image")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for compression in (None, "zlib"):
            path = Path(folder) / f"tiled_{compression}.tiff"
            tifffile.imwrite(path, image, tile=(256, 256), compression=compression, photometric="rgb")
            row = {"compression": compression or "none"}
            row["read_window_ms"], ours = time_reader(
                lambda p, x, y, s: read_window(p, x, y, s, s), path, corners, args.size
            )
            if has_zarr:
                row["aszarr_ms"], theirs = time_reader(read_with_zarr, path, corners, args.size)
                row["identical"] = all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))
            row["correct"] = all(
                np.array_equal(w, image[y : y + args.size, x : x + args.size])
                for w, (x, y) in zip(ours, corners, strict=True)
            )
            rows.append(row)
            zarr_text = f", aszarr + zarr {row['aszarr_ms']:.2f} ms (identical: {row['identical']})" if has_zarr else ""
            print(f"  {row['compression']:>5}: read_window {row['read_window_ms']:.2f} ms per window{zarr_text}")
    if not has_zarr:
        print("  (zarr not installed: pip install zarr to time the aszarr path)")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_model(), "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
