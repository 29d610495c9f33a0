"""Same-domain validation: held-out positives and held-out negatives in the same images, scored by the challenge rule.

Why: the detector's real positives (MIDOG 2021, TUPAC16, MIDOG++ crops) and negatives (two mitosis-free canine tiles)
come from different sources, so a model can score well by recognising "which dataset" rather than "mitosis". Here
`training.data.composite` blends held-out positive crops (slides with `training.data.sources.validation_fold(group)`)
into windows of the tiles' held-out columns (x >= 0.8 width; never the MITOS 2012 fields, which hold unannotated
mitoses), so both classes share one background and every detection away from a pasted figure is a real false positive. A
shortcut model detects the pastes poorly (they wear the background's stain) or fires on tile tissue.

Scoring (`evaluation`, coordinates in mm at 0.25 um/px): F1 / precision / recall of the agreed detections with
probability >= the bundle threshold (7.5 um greedy matching, micro over images), the best-F1 threshold over agreed
candidates, AP over agreed candidates (and over all candidates, as `evaluation.evaluate` scores process.py's files),
recall per source dataset of the pasted crop, and false positives per image.

Usage::

    nice -n 19 python -m benchmarks.same_domain_validation --bundle model/weights --out out/same-domain \\
        [--images 24 --seed 0 --size 1024 --mitoses 6]

Writes OUT/dataset (the composite set, MIDOG layout; reused when its parameters match), OUT/provenance.json (source
crop and background window of every paste), OUT/predictions/<stem>.json (process.py's format: the same files can be
checked with `python -m evaluation.evaluate --predictions OUT/predictions --ground-truth OUT/dataset/*.json`) and
OUT/same_domain.json; prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile
from tqdm import tqdm

from app.output import multiple_points
from evaluation.inputs import read_ground_truth
from evaluation.metrics import (
    MATCH_RADIUS_MM,
    Counts,
    average_precision,
    best_threshold,
    detection_counts,
    f1_by_threshold,
)
from model import Detections, Detector
from model.atomic_files import write_json_atomically
from model.command_line import command_parser
from model.matching import greedy_match
from model.spacing import DEFAULT_SPACING_MM
from training.data.composite import generate_composite, is_held_out_positive
from training.data.real_data import load_patches
from training.data.synthetic import ANNOTATION_FILE

SPACING_MM: tuple[float, float] = (DEFAULT_SPACING_MM, DEFAULT_SPACING_MM)
"""The composite images are written at 0.25 um/px and scored at it."""
DATASET_DIR = "dataset"
PROVENANCE_FILE = "provenance.json"
PREDICTIONS_DIR = "predictions"
REPORT_FILE = "same_domain.json"


# --------------------------------------------------------------------------------------------------------- dataset


def ensure_dataset(
    out_dir: Path,
    n_images: int,
    seed: int,
    size_px: int = 1024,
    mitoses_per_image: int = 6,
    root: Path | None = None,
    progress: bool = True,
) -> tuple[Path, dict]:
    """The held-out composite set in OUT/dataset and its provenance; generated only when missing or made with other
    parameters. Returns the annotation path and the provenance document."""
    out_dir = Path(out_dir)
    dataset_dir, provenance_path = out_dir / DATASET_DIR, out_dir / PROVENANCE_FILE
    annotation_path = dataset_dir / ANNOTATION_FILE
    wanted = {
        "seed": seed,
        "n_images": n_images,
        "size_px": size_px,
        "mitoses_per_image": mitoses_per_image,
        "held_out_only": True,
    }
    if annotation_path.is_file() and provenance_path.is_file():
        provenance = json.loads(provenance_path.read_text())
        if all(provenance.get(key) == value for key, value in wanted.items()) and all(
            (dataset_dir / image["file_name"]).is_file() for image in provenance["images"]
        ):
            return annotation_path, provenance
    if dataset_dir.is_dir():  # stale set of other parameters: remove only what the generator writes
        for stale in [*dataset_dir.glob("*.tiff"), annotation_path]:
            stale.unlink(missing_ok=True)
    generate_composite(
        dataset_dir,
        n_images,
        seed,
        size_px,
        mitoses_per_image,
        root,
        progress,
        patch_filter=is_held_out_positive,
        held_out_only=True,
        provenance_path=provenance_path,
    )
    return annotation_path, json.loads(provenance_path.read_text())


def ground_truth(annotation_path: Path, provenance: dict) -> tuple[list[str], list[np.ndarray], list[list[str]]]:
    """Per image (provenance order): file name, mitotic-figure centres in mm (from the annotation JSON, as the
    challenge reads it) and the source dataset of each (from the provenance, checked to be the same points)."""
    by_stem, _ = read_ground_truth(annotation_path, spacing_um=SPACING_MM[0] * 1000.0)
    file_names, targets, datasets = [], [], []
    for image in provenance["images"]:
        xy_mm = by_stem[Path(image["file_name"]).stem].xy_mm
        pasted_mm = np.asarray([[m["x_px"], m["y_px"]] for m in image["mitoses"]], np.float64).reshape(-1, 2)
        if xy_mm.shape != pasted_mm.shape or not np.allclose(xy_mm, pasted_mm * np.asarray(SPACING_MM)):
            raise ValueError(f"{image['file_name']}: provenance and annotations disagree; delete the output folder")
        file_names.append(image["file_name"])
        targets.append(xy_mm)
        datasets.append([m["dataset"] for m in image["mitoses"]])
    return file_names, targets, datasets


# ------------------------------------------------------------------------------------------------------- detection


def detect_images(
    detector: Detector,
    dataset_dir: Path,
    file_names: Sequence[str],
    predictions_dir: Path | None = None,
    progress: bool = True,
) -> list[Detections]:
    """The detector on every image at 0.25 um/px; optionally each image's process.py-format JSON."""
    detections = []
    for file_name in tqdm(file_names, desc="same-domain detection", unit="image", disable=not progress):
        result = detector.detect(tifffile.imread(Path(dataset_dir) / file_name), SPACING_MM)
        detections.append(result)
        if predictions_dir is not None:
            document = multiple_points(result.xy_mm, result.probability, result.is_mitosis)
            write_json_atomically(document, Path(predictions_dir) / f"{Path(file_name).stem}.json")
    return detections


# --------------------------------------------------------------------------------------------------------- scoring


def _counts(counts: Counts, n_images: int) -> dict:
    return counts.as_dict() | {"fp_per_image": counts.fp / n_images if n_images else None}


def _recall_by_dataset(
    targets: Sequence[np.ndarray], datasets: Sequence[Sequence[str]], kept_xy_mm: Sequence[np.ndarray]
) -> dict:
    """Recall per source dataset under the challenge's matching (the same greedy pairs `detection_counts` counts)."""
    found: dict[str, list[int]] = {}
    for image_targets, image_datasets, predictions in zip(targets, datasets, kept_xy_mm, strict=True):
        matched = {target for target, _ in greedy_match(image_targets, predictions, MATCH_RADIUS_MM)}
        for index, dataset in enumerate(image_datasets):
            found.setdefault(dataset, []).append(index in matched)
    return {
        name: {"n": len(hits), "tp": int(sum(hits)), "recall": float(np.mean(hits))}
        for name, hits in sorted(found.items())
    }


def score(
    targets: Sequence[np.ndarray],
    datasets: Sequence[Sequence[str]],
    detections: Sequence[Detections],
    threshold: float,
    file_names: Sequence[str] | None = None,
) -> dict:
    """Challenge metrics of detections against pasted mitoses (mm). Only agreed detections count; those with
    probability >= ``threshold`` are the mitoses of F1, all of them are ranked for AP and the threshold sweep."""
    n_images = len(targets)
    file_names = list(file_names) if file_names is not None else [f"{i + 1:03d}" for i in range(n_images)]
    agreed_xy = [d.xy_mm[d.agreed] for d in detections]
    agreed_p = [d.probability[d.agreed] for d in detections]
    kept_xy = [xy[p >= threshold] for xy, p in zip(agreed_xy, agreed_p, strict=True)]
    per_image, total = [], Counts()
    for name, image_targets, predictions, detection in zip(file_names, targets, kept_xy, detections, strict=True):
        counts = detection_counts(image_targets, predictions)
        total = total + counts
        per_image.append(
            {
                "file_name": name,
                "n_mitoses": len(image_targets),
                "n_candidates": len(detection.agreed),
                "n_agreed": int(detection.agreed.sum()),
                **_counts(counts, 1),
            }
        )
    thresholds, sweep = f1_by_threshold(targets, agreed_xy, agreed_p)
    best = best_threshold(thresholds, sweep)
    if best is not None:
        best = {
            "threshold": best["threshold"],
            **_counts(sweep[int(np.searchsorted(thresholds, best["threshold"]))], n_images),
        }
        best["recall_by_dataset"] = _recall_by_dataset(
            targets, datasets, [xy[p >= best["threshold"]] for xy, p in zip(agreed_xy, agreed_p, strict=True)]
        )
    return {
        "threshold": threshold,
        "n_images": n_images,
        "n_mitoses": int(sum(len(t) for t in targets)),
        "at_threshold": {
            **_counts(total, n_images),
            "recall_by_dataset": _recall_by_dataset(targets, datasets, kept_xy),
        },
        "best_threshold": best,
        "ap_agreed": average_precision(targets, agreed_xy, agreed_p).ap,
        "ap_all_candidates": average_precision(
            targets, [d.xy_mm for d in detections], [d.probability for d in detections]
        ).ap,
        "per_image": per_image,
    }


# ---------------------------------------------------------------------------------------------------------- report


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_markdown(report: dict) -> str:
    """The headline numbers and recall per source dataset as markdown tables."""
    at, best = report["at_threshold"], report["best_threshold"]
    columns = [f"bundle threshold {report['threshold']:g}"]
    rows = [at]
    if best is not None:
        columns.append(f"best-F1 threshold {best['threshold']:.4g}")
        rows.append(best)
    lines = [
        f"Same-domain validation: {report['n_images']} images, {report['n_mitoses']} pasted held-out mitoses, "
        f"bundle {report['bundle']}",
        "",
        "| | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for label, key in (("F1", "f1"), ("precision", "precision"), ("recall", "recall")):
        lines.append(f"| {label} | " + " | ".join(_fmt(row[key]) for row in rows) + " |")
    lines.append("| TP / FP / FN | " + " | ".join(f"{r['tp']} / {r['fp']} / {r['fn']}" for r in rows) + " |")
    lines.append("| FP per image | " + " | ".join(_fmt(row["fp_per_image"], 2) for row in rows) + " |")
    for name in at["recall_by_dataset"]:
        cells = []
        for row in rows:
            entry = row["recall_by_dataset"][name]
            cells.append(f"{_fmt(entry['recall'])} ({entry['tp']}/{entry['n']})")
        lines.append(f"| recall {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"AP (agreed candidates): {_fmt(report['ap_agreed'])}; "
        f"AP (all candidates, as in process.py's output): {_fmt(report['ap_all_candidates'])}",
    ]
    return "\n".join(lines)


def run(
    bundle_dir: Path,
    out_dir: Path,
    n_images: int = 24,
    seed: int = 0,
    size_px: int = 1024,
    mitoses_per_image: int = 6,
    root: Path | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict:
    """Build (or reuse) the set, detect, score; writes OUT/same_domain.json and returns the report."""
    out_dir = Path(out_dir)
    annotation_path, provenance = ensure_dataset(out_dir, n_images, seed, size_px, mitoses_per_image, root, progress)
    file_names, targets, datasets = ground_truth(annotation_path, provenance)
    detector = Detector(bundle_dir, device=device)
    detections = detect_images(detector, annotation_path.parent, file_names, out_dir / PREDICTIONS_DIR, progress)
    report = {"bundle": str(bundle_dir), **score(targets, datasets, detections, detector.bundle.threshold, file_names)}
    pool: dict[str, int] = {}
    for record in load_patches(root, check_files=False):
        if is_held_out_positive(record):
            pool[record.dataset] = pool.get(record.dataset, 0) + 1
    report["composite"] = {key: provenance[key] for key in ("seed", "n_images", "size_px", "mitoses_per_image")}
    report["composite"]["held_out_patch_pool_by_dataset"] = dict(sorted(pool.items()))
    report["composite"]["backgrounds"] = sorted({image["background"]["file"] for image in provenance["images"]})
    write_json_atomically(report, out_dir / REPORT_FILE)
    return report


DESCRIPTION = (
    "Held-out mitoses pasted into held-out mitosis-free tile tissue, detected and scored with the challenge's F1 rule."
)
"""What `--help` says first."""


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = command_parser("benchmarks.same_domain_validation", DESCRIPTION, add_help)
    parser.add_argument("--bundle", type=Path, required=True, help="model bundle folder (e.g. model/weights)")
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder: dataset/ (cached), provenance.json, predictions/, same_domain.json",
    )
    parser.add_argument("--images", type=int, default=24, help="composite images (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="composite seed (default: %(default)s)")
    parser.add_argument("--size", type=int, default=1024, help="image side in px (default: %(default)s)")
    parser.add_argument("--mitoses", type=int, default=6, help="pasted mitoses per image, at most (default: 6)")
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="real data folder (default: ../shared/data/real relative to the repository)",
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    report = run(args.bundle, args.out, args.images, args.seed, args.size, args.mitoses, args.data_root, args.device)
    print(format_markdown(report))
    print(f"\nreport: {args.out / REPORT_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
