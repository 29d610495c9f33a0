"""Whole-field validation: the measure of the recipe.

A model is only as good as its challenge F1 on whole, completely annotated fields it never trained on. Patch-level
scores on negatives drawn from the same pools as the training negatives hid a model that fired on every nucleus
(field F1 0.05). So checkpoints, hard-negative regimes and thresholds are all chosen here: every validation field
(`TrainingData.field_regions`: the held-out MiDeSeC fields, or the validation images of a MIDOG-format split) is
scored densely by the exported network exactly as `process.py` scores an image (same dense map, same candidate
rule, same autocast precision), and the candidates are scored with the challenge's own AP and greedy F1
(`evaluation.metrics`).

`python -m training.validation.field_validation --bundle model/weights --data ../shared/data/real --out out/fields`
measures a shipped bundle the same way, without training data: A, B and their agreement on the held-out MiDeSeC fields
(the challenge's precision, recall, F1 at the bundle's thresholds, and AP), false positives per mm2 of the held-out
mitosis-free tile columns and MITOS 2012 fields, and a 1000 x 1000 uniform-noise image; `--out` also draws an overlay
per field (green: named "mitotic figure", red: missed annotated mitosis).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from evaluation.metrics import Counts, average_precision, best_threshold, detection_counts, f1_by_threshold
from model import Detector
from model.bundle import DEFAULT_BUNDLE_DIR, POLICY_NAMES, Bundle
from model.candidates import local_maxima
from model.command_line import command_parser
from model.dense import probability_map, window_scorer
from model.geometry import BORDER_STRIP_PX
from model.matching import MATCH_RADIUS_UM, greedy_match
from model.precision import autocast_dtype
from model.spacing import mm_from_px, px_from_um
from training.data import real_data
from training.data.sources import (
    TILE_TRAIN_FRACTION,
    TrainingData,
    ValidationRegion,
    midesec_validation_names,
    validation_fold,
)
from training.figures import draw_field
from training.validation.cv_report import OutOfFoldField, field_counts, summarise

VARIANTS = (*POLICY_NAMES, "ensemble")
SCREENED = "screened"
"""The ensemble through the bundle's screen (the default path of `process.py`); the others are exact dense maps."""
NOISE_SIDE_PX = 1000
STRIP_KEYS = ("fp_per_mm2_strip", "fp_per_mm2_interior", "fp_strip", "fp_interior", "mitoses_strip", "tp_strip")


@dataclass(frozen=True)
class FieldPoints:
    """Candidates of one validation field (mm) with their probabilities, and its annotated mitoses (mm)."""

    xy_mm: np.ndarray
    probability: np.ndarray
    mitoses_mm: np.ndarray


def region_mitoses_mm(data: TrainingData, region: ValidationRegion) -> np.ndarray:
    """The region's annotated mitoses in mm, relative to the region's first column (as its detections are)."""
    spacing = (data.images[region.image].spacing_mm,) * 2
    xy = np.asarray(region.mitoses_rc, dtype=np.float64).reshape(-1, 2)[:, ::-1] - [region.x_range[0], 0]
    return mm_from_px(xy, spacing, (0.0, 0.0))


@torch.no_grad()
def field_points(
    network: torch.nn.Module, data: TrainingData, regions: Sequence[ValidationRegion], device: torch.device
) -> list[FieldPoints]:
    """One model's candidates on every region (local maxima of its dense map above the bundle's candidate floor)."""
    network.eval()
    score = window_scorer(network, device, autocast_dtype(device))
    points = []
    for region in regions:
        image = data.images[region.image]
        spacing = (image.spacing_mm, image.spacing_mm)
        probability = probability_map(image.read(region.x_range), score, device)
        min_distance_px = px_from_um(Bundle.candidate_min_distance_um, spacing)
        candidates = local_maxima(probability, min_distance_px, Bundle.candidate_floor)
        points.append(
            FieldPoints(
                mm_from_px(candidates.xy_px, spacing, (0.0, 0.0)),
                candidates.probability,
                region_mitoses_mm(data, region),
            )
        )
    return points


def field_metrics(points: Sequence[FieldPoints]) -> dict[str, float]:
    """Challenge AP over all candidates, and the best micro F1 over thresholds with its threshold and counts."""
    targets = [p.mitoses_mm for p in points]
    predictions = [p.xy_mm for p in points]
    scores = [p.probability for p in points]
    ap = average_precision(targets, predictions, scores).ap
    best = best_threshold(*f1_by_threshold(targets, predictions, scores))
    return {
        "field_ap": float(ap or 0.0),
        "field_f1": float(best["f1"]) if best else 0.0,
        "field_threshold": float(best["threshold"]) if best else 1.0,
        "field_precision": float(best["precision"] or 0.0) if best else 0.0,
        "field_recall": float(best["recall"] or 0.0) if best else 0.0,
    }


# ------------------------------------------------------------------------------------- a shipped bundle, measured


def variant_points(detector: Detector, rgb: np.ndarray, spacing: tuple[float, float]) -> dict[str, tuple]:
    """Per variant, from both models scored everywhere (the exact dense path): (xy_px, probability) of every
    candidate; the ensemble keeps agreed candidates only. With a screen in the bundle, `SCREENED` is the ensemble
    as `process.py` computes it by default (screen on)."""
    candidates_a, candidates_b, merged = detector.candidates(rgb, spacing, full_maps=True)
    points = {
        POLICY_NAMES[0]: (candidates_a.xy_px, candidates_a.probability),
        POLICY_NAMES[1]: (candidates_b.xy_px, candidates_b.probability),
        "ensemble": (merged.xy_px[merged.agreed], merged.probability[merged.agreed]),
    }
    if detector.screen is not None:
        screened = detector.candidates(rgb, spacing)[2]
        points[SCREENED] = (screened.xy_px[screened.agreed], screened.probability[screened.agreed])
    return points


def variant_thresholds(bundle: Bundle) -> dict[str, float]:
    """The ensemble's threshold is the bundle's; A's and B's alone are the ones tuned beside it (bundle.json)."""
    tuned = bundle.extra.get("validation", {}).get("variants", {})
    return {name: float(tuned.get(name, {}).get("threshold", bundle.threshold)) for name in VARIANTS} | {
        "ensemble": bundle.threshold,
        SCREENED: bundle.threshold,
    }


def held_out_fields(root: Path) -> list[real_data.AnnotatedField]:
    fields = real_data.load_midesec_fields(root)
    names = midesec_validation_names([f.path.name for f in fields])
    return [f for f in fields if f.path.name in names]


def negative_regions(root: Path) -> list[tuple[str, np.ndarray, float]]:
    """(group, rgb, spacing_mm) of the held-out negative regions: the tiles' right columns, the MITOS val fields."""
    regions = []
    for tile in real_data.load_mitosis_free_tiles(root):
        rgb = real_data.read_image(tile.path)
        regions.append(("mitosis-free tiles", rgb[:, int(tile.width_px * TILE_TRAIN_FRACTION) :], tile.spacing_mm))
    for field in real_data.load_unlabeled_fields(root):
        if validation_fold(field.path.name):
            regions.append(
                ("MITOS 2012 fields (hold unannotated mitoses)", real_data.read_image(field.path), field.spacing_mm)
            )
    return regions


def measure_bundle(bundle_dir: Path, root: Path, out: Path | None = None, negatives: bool = True) -> dict:
    """The shipped bundle on held-out real data (see the module docstring); returns the report as a dict."""
    detector = Detector(bundle_dir)
    thresholds = variant_thresholds(detector.bundle)
    per_variant: dict[str, dict] = {}
    strip_rows = []
    for field in tqdm(held_out_fields(root), desc="held-out fields", unit="field"):
        rgb = real_data.read_image(field.path)
        spacing = (field.spacing_mm, field.spacing_mm)
        points = variant_points(detector, rgb, spacing)
        strip_rows.append(
            field_counts(
                OutOfFoldField(
                    field.path.name, 0, rgb.shape[:2], field.spacing_mm, field.mitoses_xy_px, {0: points["ensemble"]}
                ),
                0,
                thresholds["ensemble"],
            )
        )
        for name, (xy_px, probability) in points.items():
            per_variant.setdefault(name, {"targets": [], "xy": [], "p": []})
            per_variant[name]["targets"].append(mm_from_px(field.mitoses_xy_px, spacing))
            per_variant[name]["xy"].append(mm_from_px(xy_px, spacing))
            per_variant[name]["p"].append(probability)
        if out is not None:
            xy_px, probability = points["ensemble"]
            named = xy_px[probability >= thresholds["ensemble"]]
            radius_px = px_from_um(MATCH_RADIUS_UM, spacing)
            found = {t for t, _ in greedy_match(field.mitoses_xy_px, named, radius_px)}
            missed = np.array([i not in found for i in range(len(field.mitoses_xy_px))], dtype=bool)
            draw_field(rgb, named, field.mitoses_xy_px, missed, radius_px, out / f"overlay_{field.path.stem}.png")
    report: dict = {"bundle": str(bundle_dir), "fields": len(per_variant["ensemble"]["targets"]), "variants": {}}
    for name, gathered in per_variant.items():
        counts = Counts()
        for targets, xy, p in zip(gathered["targets"], gathered["xy"], gathered["p"], strict=True):
            counts = counts + detection_counts(targets, xy[p >= thresholds[name]])
        ap = average_precision(gathered["targets"], gathered["xy"], gathered["p"]).ap
        report["variants"][name] = {
            "threshold": round(thresholds[name], 4),
            **counts.as_dict(),
            "ap": ap,
        }
    strip = summarise(strip_rows)
    report["border_strip"] = {key: strip[key] for key in STRIP_KEYS}
    if negatives:
        report["false_positives_per_mm2"] = negative_report(detector, root, thresholds)
        noise = np.random.default_rng(0).integers(0, 256, (NOISE_SIDE_PX, NOISE_SIDE_PX, 3), dtype=np.uint8)
        report["noise_image_mitotic_figures"] = int(detector.detect(noise).is_mitosis.sum())
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "field_validation.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def negative_report(detector: Detector, root: Path, thresholds: dict[str, float]) -> dict:
    """Points named at each variant's threshold per mm2 of tissue of each held-out negative group."""
    totals: dict[str, dict] = {}
    for group, rgb, spacing_mm in tqdm(negative_regions(root), desc="held-out negatives", unit="region"):
        points = variant_points(detector, rgb, (spacing_mm, spacing_mm))
        tissue_mm2 = float(real_data.tissue_mask(rgb[::4, ::4]).sum() * 16 * spacing_mm**2)
        entry = totals.setdefault(group, {"tissue_mm2": 0.0} | {name: 0 for name in points})
        entry["tissue_mm2"] += tissue_mm2
        for name, (_, probability) in points.items():
            entry[name] += int((probability >= thresholds[name]).sum())
    return {
        group: {"tissue_mm2": round(e["tissue_mm2"], 3)}
        | {name: round(count / max(e["tissue_mm2"], 1e-9), 2) for name, count in e.items() if name != "tissue_mm2"}
        for group, e in totals.items()
    }


def format_report(report: dict) -> str:
    lines = [
        f"{report['fields']} held-out MiDeSeC fields (challenge rules: greedy 7.5 um, micro F1; AP at IoU 0.5)",
        f"{'':10}{'threshold':>10}{'TP':>5}{'FP':>5}{'FN':>5}{'precision':>10}{'recall':>8}{'F1':>7}{'AP':>7}",
    ]
    for name, v in report["variants"].items():
        lines.append(
            f"{name:10}{v['threshold']:>10.4f}{v['tp']:>5}{v['fp']:>5}{v['fn']:>5}"
            f"{v['precision'] or 0:>10.3f}{v['recall'] or 0:>8.3f}{v['f1'] or 0:>7.3f}{v['ap'] or 0:>7.3f}"
        )
    for group, entry in report.get("false_positives_per_mm2", {}).items():
        rates = " / ".join(f"{name} {rate}" for name, rate in entry.items() if name != "tissue_mm2")
        lines.append(f"points named per mm2, {group} ({entry['tissue_mm2']} mm2): {rates}")
    if "border_strip" in report:
        s = report["border_strip"]
        lines.append(
            f"ensemble false positives per mm2: border strip ({BORDER_STRIP_PX} px) {s['fp_per_mm2_strip']:.1f} "
            f"({s['fp_strip']}), interior {s['fp_per_mm2_interior']:.1f} ({s['fp_interior']}); mitoses in the strip "
            f"found {s['tp_strip']} of {s['mitoses_strip']}"
        )
    if "noise_image_mitotic_figures" in report:
        count = report["noise_image_mitotic_figures"]
        lines.append(f"{NOISE_SIDE_PX}x{NOISE_SIDE_PX} uniform noise: {count} mitotic figure(s)")
    return "\n".join(lines)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = command_parser("training.validation.field_validation", __doc__, add_help, argparse.RawTextHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE_DIR, help="bundle folder (default: shipped)")
    parser.add_argument("--data", type=Path, default=real_data.DEFAULT_ROOT, help="../shared/data/real")
    parser.add_argument("--out", type=Path, default=None, help="write field_validation.json and overlays here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    print(format_report(measure_bundle(args.bundle, args.data, args.out)))
    return 0


__all__ = ["FieldPoints", "field_metrics", "field_points", "measure_bundle", "region_mitoses_mm"]


if __name__ == "__main__":
    raise SystemExit(main())
