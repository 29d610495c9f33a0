"""Reading whole-slide regions: OpenSlide (the choice of `wsi.slide`) against the pure-Python tiffslide.

    python -m benchmarks.slide_readers [--slide PATH] [--regions 40] [--size 1024]

Reads the same random level-0 regions with both (in alternation, so both see the same disk cache state), checks
that the pixels are identical, and prints milliseconds per region. Without --slide, a 16k x 12k pyramidal tiled TIFF
(deflate, 256 px tiles, like a scanner's generic TIFF export) is written to a temporary folder first. tiffslide is
not a project requirement: `pip install tiffslide==3.0.1` to run it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def synthetic_slide(folder: Path, width_px: int = 16384, height_px: int = 12288) -> Path:
    """A textured pyramidal TIFF (compressible like tissue, not like noise)."""
    import tifffile
    from scipy import ndimage

    rng = np.random.default_rng(0)
    small = ndimage.gaussian_filter(rng.normal(0, 1, (height_px // 16, width_px // 16, 3)), (2, 2, 0))
    rgb = np.clip(180 + 400 * np.kron(small, np.ones((16, 16, 1))), 0, 255).astype(np.uint8)
    rgb += rng.integers(0, 8, rgb.shape, dtype=np.uint8)
    path = folder / "synthetic.tiff"
    with tifffile.TiffWriter(path, bigtiff=True) as writer:
        for index, factor in enumerate((1, 4, 16)):
            writer.write(
                rgb[::factor, ::factor],
                tile=(256, 256),
                photometric="rgb",
                compression="deflate",
                resolution=(4e4 / factor, 4e4 / factor),
                resolutionunit="CENTIMETER",
                subfiletype=int(index > 0),
            )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--slide", type=Path, default=None)
    parser.add_argument("--regions", type=int, default=40)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args(argv)
    import openslide

    try:
        import tiffslide
    except ImportError:
        raise SystemExit("error: tiffslide is not installed (pip install tiffslide==3.0.1)") from None
    with tempfile.TemporaryDirectory() as scratch:
        path = args.slide or synthetic_slide(Path(scratch))
        readers = {"openslide": openslide.OpenSlide(str(path)), "tiffslide": tiffslide.TiffSlide(str(path))}
        width_px, height_px = readers["openslide"].dimensions
        rng = np.random.default_rng(1)
        corners = zip(
            rng.integers(0, width_px - args.size, args.regions),
            rng.integers(0, height_px - args.size, args.regions),
            strict=True,
        )
        seconds = dict.fromkeys(readers, 0.0)
        for x, y in corners:
            pixels = {}
            for name, reader in readers.items():
                started = time.perf_counter()
                region = reader.read_region((int(x), int(y)), 0, (args.size, args.size))
                pixels[name] = np.asarray(region)[..., :3]
                seconds[name] += time.perf_counter() - started
            assert (pixels["openslide"] == pixels["tiffslide"]).all(), f"pixels differ at ({x}, {y})"
        print(f"{path.name}: {width_px}x{height_px} px, {args.regions} regions of {args.size} px, identical pixels")
        for name, total in seconds.items():
            print(f"  {name}: {1000 * total / args.regions:.1f} ms per region")
        print(f"  tiffslide / openslide: {seconds['tiffslide'] / seconds['openslide']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
