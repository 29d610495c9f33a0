"""Where recall breaks down as the scan gets coarser: the resolutions the detector can serve.

    python -m benchmarks.resolution_limit --data ../shared/data/real [--um 0.25 0.5 0.75 1 1.25 1.5 2] [--out F.json]

Each completely annotated MiDeSeC field held out of the shipped bundle's training (0.25 um/px) is scanned again at a
coarser pixel size (area-averaged blocks for whole factors, else anti-aliased resampling: `model.resample`), given
to `Detector().detect` at that spacing (which resamples it back up to the networks' 0.25 um/px), and its named
mitotic figures are matched to the annotations in millimetres (the challenge's 7.5 um rule). The accepted range
`model.spacing.USABLE_SPACING_MM` is set from this table (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np

from evaluation.metrics import Counts, detection_counts
from model import Detector, spacing
from model.atomic_files import write_json_atomically
from model.bundle import DEFAULT_BUNDLE_DIR
from model.resample import resample_rgb
from training.data import real_data
from training.validation.field_validation import held_out_fields


def coarser_scan(rgb: np.ndarray, factor: float) -> tuple[np.ndarray, tuple[float, float]]:
    """The field at `factor` times the pixel size: area means of whole blocks when the factor is an integer (what a
    coarser sensor records), else anti-aliased resampling; returns the image and its origin offset in fine pixels."""
    if float(factor).is_integer():
        step = int(factor)
        height, width = rgb.shape[0] // step * step, rgb.shape[1] // step * step
        blocks = rgb[:height, :width].reshape(height // step, step, width // step, step, 3).mean(axis=(1, 3))
        return np.round(blocks).astype(np.uint8), ((step - 1) / 2, (step - 1) / 2)
    size = (max(1, round(rgb.shape[1] / factor)), max(1, round(rgb.shape[0] / factor)))
    scale = (rgb.shape[1] / size[0], rgb.shape[0] / size[1])
    return resample_rgb(rgb, size), ((scale[0] - 1) / 2, (scale[1] - 1) / 2)


MEASURED_RANGE_MM = (0.0001, 0.002)
"""The detector refuses pixel sizes beyond `model.spacing.USABLE_SPACING_MM`, the limit this benchmark sets: to
measure past it, the range is widened to 0.1-2 um/px for this benchmark's own run."""


def measure(data: Path, pixel_sizes_um: list[float], bundle: Path = DEFAULT_BUNDLE_DIR) -> list[dict]:
    """Counts (micro over the fields), precision, recall and F1 at each pixel size."""
    with mock.patch.object(spacing, "USABLE_SPACING_MM", MEASURED_RANGE_MM):
        return _measure(data, pixel_sizes_um, bundle)


def _measure(data: Path, pixel_sizes_um: list[float], bundle: Path) -> list[dict]:
    detector = Detector(bundle)
    fields = held_out_fields(data)
    rows = []
    for pixel_um in pixel_sizes_um:
        started, total = time.perf_counter(), Counts()
        factor = pixel_um / (spacing.DEFAULT_SPACING_MM * 1000)
        for field in fields:
            fine = real_data.read_image(field.path)
            truth_mm = spacing.mm_from_px(field.mitoses_xy_px, (field.spacing_mm, field.spacing_mm))
            coarse, origin_px = coarser_scan(fine, factor)
            spacing_mm = (pixel_um / 1000, pixel_um / 1000)
            origin_mm = tuple(value * field.spacing_mm for value in origin_px)
            found = detector.detect(coarse, spacing_mm, origin_mm, source=field.path.name)
            total = total + detection_counts(truth_mm, found.xy_mm[found.is_mitosis])
        precision = total.tp / max(total.tp + total.fp, 1)
        recall = total.tp / max(total.tp + total.fn, 1)
        rows.append(
            {
                "pixel_um": pixel_um,
                "fields": len(fields),
                "tp": total.tp,
                "fp": total.fp,
                "fn": total.fn,
                "precision": round(precision, 3),
                "recall": round(recall, 3),
                "f1": round(2 * total.tp / max(2 * total.tp + total.fp + total.fn, 1), 3),
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the real data folder (../shared/data/real)")
    parser.add_argument("--um", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0])
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE_DIR)
    parser.add_argument("--out", type=Path, default=None, help="also write the table as JSON")
    args = parser.parse_args(argv)
    rows = measure(args.data, args.um, args.bundle)
    print("| um/px | TP | FP | FN | precision | recall | F1 |\n|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['pixel_um']:g} | {row['tp']} | {row['fp']} | {row['fn']} | {row['precision']:.3f} | "
            f"{row['recall']:.3f} | {row['f1']:.3f} |"
        )
    if args.out is not None:
        write_json_atomically(rows, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
