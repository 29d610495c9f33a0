"""Wall time and peak memory of `process.py` (both models) on one MIDOG-sized image, as the container runs it.

    python benchmarks/process_speed.py [--image TIFF] [--threads 2] [--repeats 1]

Default image: one of the real 7215x5412 canine tiles of ../shared/data/real, written as a TIFF with 0.25 um/px
resolution tags (the MIDOG 2022 size). Peak memory is the maximum resident set size of the process.py child
(`getrusage(RUSAGE_CHILDREN)`), wall time includes start-up, model loading, reading the image and writing the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared/data/real/tiles/cmc-no-mitosis/2191a7aa287ce1d5dbc0_patch_0_28860.jpg"


def write_midog_like_tiff(source: Path, target: Path, spacing_um: float = 0.25) -> tuple[int, int]:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--image", type=Path, default=None, help="TIFF to process (default: a real 7215x5412 tile)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch (default: 2, like CI)")
    parser.add_argument("--repeats", type=int, default=1, help="runs; the fastest is reported (default: 1)")
    parser.add_argument("--precision", default="auto", help="process.py --precision (default: auto)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        input_dir = Path(work) / "input"
        input_dir.mkdir()
        image = input_dir / "001.tiff"
        if args.image:
            os.symlink(args.image.resolve(), image)
            width, height = tifffile.TiffFile(args.image).pages[0].shape[1::-1]
        else:
            width, height = write_midog_like_tiff(DEFAULT_SOURCE, image)
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        walls = []
        for _ in range(args.repeats):
            output = Path(work) / "out.json"
            started = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    str(REPO / "process.py"),
                    "--input",
                    str(input_dir),
                    "--output",
                    str(output),
                    "--precision",
                    args.precision,
                ],
                check=True,
                env=env,
                stderr=subprocess.DEVNULL,
            )
            walls.append(time.perf_counter() - started)
        peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # KiB -> GiB
        points = json.loads(output.read_text())["points"]
    result = {
        "image_px": [width, height],
        "megapixels": round(width * height / 1e6, 1),
        "threads": args.threads,
        "precision": args.precision,
        "wall_seconds": round(min(walls), 1),
        "peak_rss_gib": round(peak_gib, 2),
        "points": len(points),
        "cpu": next(
            (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
            "unknown",
        ),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
