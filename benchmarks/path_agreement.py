"""Does the default path answer as the exact path does? F1, AP and differing points on real fields, side by side.

    python -m benchmarks.path_agreement --data ../shared/data/real [--precision auto] [--out F.json]

The default path is what `process.py` runs: the screen where it can pay, model A where the screen passes, model B
around A's candidates or over its whole map when that costs less (`model.cascade`). The exact path scores both models'
whole maps with no screen (`cascade.FULL_MAP_SHARE` set to 0 for this benchmark's own run). Both run through
`Detector.detect` on the 35 completely annotated MiDeSeC fields (0.25 um/px; F1 of the named mitotic figures and the
challenge's AP of every point, micro over the fields, `evaluation.metrics`), on the two mitosis-free canine tiles
(glass-heavy: where the screen and the partial maps do the most; named points counted there, all false) and on the
15 unlabeled MITOS 2012 fields (0.2456 um/px, so both paths resample them; named points counted). A point
differs when the other path has no point within 1e-6 mm with a probability within 1e-6. The speed work is accepted
when F1 and AP stay within 0.01 of the exact path (docs/performance.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np

from evaluation.metrics import Counts, average_precision, detection_counts
from model import Detector, cascade, spacing
from model.atomic_files import write_json_atomically
from model.bundle import DEFAULT_BUNDLE_DIR
from training.data import real_data

PATHS = ("default", "exact")


def points_differing(first, second) -> int:
    """Points of `first` (Detections) with no point of `second` at the same place (1e-6 mm) and probability."""
    if not len(first.probability):
        return 0
    if not len(second.probability):
        return len(first.probability)
    distance = np.linalg.norm(first.xy_mm[:, None, :] - second.xy_mm[None, :, :], axis=2)
    same = (distance <= 1e-6) & (np.abs(first.probability[:, None] - second.probability[None, :]) <= 1e-6)
    return int((~same.any(axis=1)).sum())


def detect_both(detectors: dict[str, Detector], rgb: np.ndarray, spacing_mm: float, name: str) -> dict:
    """Each path's detections of one image, and its seconds."""
    results = {}
    for path, detector in detectors.items():
        started = time.perf_counter()
        whole_maps = mock.patch.object(cascade, "FULL_MAP_SHARE", 0.0) if path == "exact" else contextlib.nullcontext()
        with whole_maps:
            found = detector.detect(rgb, (spacing_mm, spacing_mm), source=name)
        results[path] = (found, time.perf_counter() - started)
    return results


def measure(data: Path, precision: str = "auto", bundle: Path = DEFAULT_BUNDLE_DIR) -> dict:
    """Per path: F1 and AP on the fields, named points on the tiles, seconds; and the points that differ."""
    detectors = {
        "default": Detector(bundle, precision=precision, atypical=False),
        "exact": Detector(bundle, precision=precision, use_screen=False, atypical=False),
    }
    counts = {path: Counts() for path in PATHS}
    seconds = {path: 0.0 for path in PATHS}
    truths, points, scores = [], {path: [] for path in PATHS}, {path: [] for path in PATHS}
    differing, tile_named, unlabeled_named = 0, {path: 0 for path in PATHS}, {path: 0 for path in PATHS}
    fields = real_data.load_midesec_fields(data)
    tiles = real_data.load_mitosis_free_tiles(data)
    unlabeled = real_data.load_unlabeled_fields(data)
    for image in [*fields, *tiles, *unlabeled]:
        rgb = real_data.read_image(image.path)
        results = detect_both(detectors, rgb, image.spacing_mm, image.path.name)
        differing += points_differing(results["default"][0], results["exact"][0])
        differing += points_differing(results["exact"][0], results["default"][0])
        is_field = image in fields
        if is_field:
            truth_mm = spacing.mm_from_px(image.mitoses_xy_px, (image.spacing_mm, image.spacing_mm))
            truths.append(truth_mm)
        for path, (found, took) in results.items():
            seconds[path] += took
            if is_field:
                counts[path] = counts[path] + detection_counts(truth_mm, found.xy_mm[found.is_mitosis])
                points[path].append(found.xy_mm)
                scores[path].append(found.probability)
            else:
                named = tile_named if image in tiles else unlabeled_named
                named[path] += int(found.is_mitosis.sum())
        print(f"{image.path.name}: {differing} differing points so far", file=sys.stderr, flush=True)
    rows = {}
    for path in PATHS:
        total = counts[path]
        rows[path] = {
            "f1": round(total.f1 or 0.0, 4),
            "ap": round(float(average_precision(truths, points[path], scores[path]).ap), 4),
            "tp": total.tp,
            "fp": total.fp,
            "fn": total.fn,
            "named_on_mitosis_free_tiles": tile_named[path],
            "named_on_mitos2012_fields": unlabeled_named[path],
            "seconds": round(seconds[path], 1),
        }
    return {
        "fields": len(fields),
        "tiles": len(tiles),
        "mitos2012_fields": len(unlabeled),
        "paths": rows,
        "points_differing": differing,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the real data folder (../shared/data/real)")
    parser.add_argument("--precision", default="auto", help="autocast precision of both paths (default auto)")
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE_DIR)
    parser.add_argument("--out", type=Path, default=None, help="also write the result as JSON")
    args = parser.parse_args(argv)
    result = measure(args.data, args.precision, args.bundle)
    print(
        f"{result['fields']} MiDeSeC fields, {result['tiles']} mitosis-free tiles, {result['mitos2012_fields']} "
        f"MITOS 2012 fields, precision {args.precision}"
    )
    print("| path | F1 | AP | TP | FP | FN | named on the mitosis-free tiles | named on MITOS 2012 | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path, row in result["paths"].items():
        print(
            f"| {path} | {row['f1']:.4f} | {row['ap']:.4f} | {row['tp']} | {row['fp']} | {row['fn']} | "
            f"{row['named_on_mitosis_free_tiles']} | {row['named_on_mitos2012_fields']} | {row['seconds']} |"
        )
    print(f"points differing between the paths: {result['points_differing']}")
    if args.out is not None:
        write_json_atomically(result, args.out)
    print(json.dumps(result["paths"]), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
