"""Tune the detection threshold on validation data under the challenge's rules, for A, B and their agreement.

Detections are what `process.py` outputs: local maxima of the dense maps; for the ensemble, candidates both models
agree on (within 7.5 um), scored by the lower probability. Greedy matching within 7.5 um (`model.matching`) decides
TP / FP / FN. Two cases:
- exact (MIDOG-format data): validation images are fully annotated, so F1(t) is counted on them directly;
- expected (the real offline data): whole labelled images do not exist, so F1(t) is estimated from recall(t) on the
  held-out positive crops (a mitosis is found when a detection >= t lies within the matching radius of the crop
  centre) and false positives per mm2 of held-out negative tissue (mitosis-free tiles and unlabeled fields, which
  hold a few unannotated mitoses: an overestimate), at the MIDOG 2022 density of mitoses.
The chosen threshold is the lowest whose F1 is within `f1_tolerance` of the best: unseen scanners and tumours lower
the models' confidence, so among near-equal choices the one with more recall is kept.

Re-tune the bundle of a pipeline run: `python -m training.pipeline --out runs/X --retune-threshold`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from evaluation.metrics import average_precision, f1_by_threshold
from model import Detector
from model.matching import MATCH_RADIUS_UM
from model.spacing import mm_from_px, px_from_um
from training.data import real_data
from training.data.sources import TrainingData
from training.validation.field_validation import VARIANTS, variant_points
from training.validation_metrics import MIDOG22_MITOSES_PER_MM2, expected_f1

logger = logging.getLogger("training.threshold")


@dataclass
class RegionPoints:
    """Scored detections of one validation region per variant, its annotated mitoses and tissue area."""

    points_mm: dict[str, tuple[np.ndarray, np.ndarray]]  # variant -> (xy_mm, probability)
    mitoses_mm: np.ndarray
    area_mm2: float
    exhaustive: bool
    group: str


def score_regions(detector: Detector, data: TrainingData) -> list[RegionPoints]:
    regions = []
    for region in tqdm(data.validation_regions, desc="validation regions", unit="region"):
        image = data.images[region.image]
        spacing = (image.spacing_mm, image.spacing_mm)
        rgb = image.read(region.x_range)
        found = variant_points(detector, rgb, spacing)
        tissue_px = real_data.tissue_mask(rgb[::4, ::4]).sum() * 16
        mitoses_xy = np.asarray(region.mitoses_rc, dtype=np.float64).reshape(-1, 2)[:, ::-1] - [region.x_range[0], 0]
        regions.append(
            RegionPoints(
                {name: (mm_from_px(xy, spacing, (0.0, 0.0)), p) for name, (xy, p) in found.items()},
                mm_from_px(mitoses_xy, spacing, (0.0, 0.0)),
                float(tissue_px * image.spacing_mm**2),
                region.exhaustive,
                region.group,
            )
        )
    return regions


def score_positive_crops(detector: Detector, crops: np.ndarray, spacing_mm: float) -> dict[str, np.ndarray]:
    """Per variant: best detection probability within the matching radius of each crop's centre (0 when none)."""
    radius_px = px_from_um(MATCH_RADIUS_UM, (spacing_mm, spacing_mm))
    centre = (crops.shape[1] - 1) / 2
    scores = {name: np.zeros(len(crops)) for name in VARIANTS}
    for index, crop in enumerate(tqdm(crops, desc="validation positives", unit="patch")):
        for name, (xy, probability) in variant_points(detector, crop, (spacing_mm, spacing_mm)).items():
            if name not in scores:  # the screened ensemble: thresholds are tuned on the exact dense path
                continue
            near = np.linalg.norm(xy - centre, axis=1) <= radius_px
            scores[name][index] = probability[near].max() if near.any() else 0.0
    return scores


def pick(thresholds: np.ndarray, f1: np.ndarray, tolerance: float) -> int:
    """Index of the lowest threshold whose F1 is within `tolerance` of the best."""
    return int(np.flatnonzero(f1 >= np.nanmax(f1) - tolerance)[0])


def group_reports(regions: list[RegionPoints], name: str, threshold: float) -> dict:
    """False positives per mm2 of tissue per validation group (every point of a mitosis-free group is false)."""
    by_group = {}
    for group in sorted({r.group for r in regions}):
        members = [r for r in regions if r.group == group]
        area = sum(r.area_mm2 for r in members)
        scores = np.concatenate([r.points_mm[name][1] for r in members])
        n_mitoses = sum(len(r.mitoses_mm) for r in members)
        by_group[group] = {
            "tissue_mm2": round(area, 3),
            "points_at_threshold_per_mm2": round(float((scores >= threshold).sum() / max(area, 1e-9)), 3),
            "annotated_mitoses": n_mitoses,
            "exhaustive": members[0].exhaustive,
        }
    return by_group


def tune(detector: Detector, data: TrainingData, tolerance: float, max_positives: int = 0) -> dict:
    """Thresholds and validation F1 of A, B and the ensemble (see the module docstring), with curves for plotting."""
    regions = score_regions(detector, data)
    field_groups = {r.group for r in data.field_regions}
    exhaustive = [r for r in regions if r.exhaustive and r.group in field_groups]
    n_mitoses = sum(len(r.mitoses_mm) for r in exhaustive)
    result: dict = {"variants": {}, "curves": {}}
    if n_mitoses:
        result["method"] = f"exact: greedy matching within {MATCH_RADIUS_UM} um on {len(exhaustive)} validation fields"
        crops = data.positives_val[:max_positives] if max_positives else data.positives_val
        spacing_mm = float(np.median([data.images[r.image].spacing_mm for r in data.validation_regions]))
        positives = score_positive_crops(detector, crops, spacing_mm) if len(crops) else None
        groups = np.asarray(data.positive_val_groups[: len(crops)])
        for name in VARIANTS:
            thresholds, counts = f1_by_threshold(
                [r.mitoses_mm for r in exhaustive],
                [r.points_mm[name][0] for r in exhaustive],
                [r.points_mm[name][1] for r in exhaustive],
            )
            f1 = np.array([c.f1 or 0.0 for c in counts])
            if len(thresholds) == 0:
                thresholds, f1, counts = np.array([1.0]), np.array([0.0]), None
            best = pick(thresholds, f1, tolerance)
            entry = {"threshold": float(thresholds[best]), "f1": float(f1[best])}
            if counts is not None:
                c = counts[best]
                entry |= {"tp": c.tp, "fp": c.fp, "fn": c.fn, "precision": c.precision, "recall": c.recall}
            entry["ap"] = average_precision(
                [r.mitoses_mm for r in exhaustive],
                [r.points_mm[name][0] for r in exhaustive],
                [r.points_mm[name][1] for r in exhaustive],
            ).ap
            entry["regions"] = group_reports(regions, name, entry["threshold"])
            if positives is not None:
                found = positives[name] >= entry["threshold"]
                entry["crop_recall_by_dataset"] = {
                    g: round(float(found[groups == g].mean()), 4) for g in sorted(set(groups))
                }
            result["variants"][name] = entry
            result["curves"][name] = (thresholds, f1)
        result["validation_mitoses"] = int(n_mitoses)
        return result

    # every held-out negative region counts, also those that may hold a few unannotated mitoses (the MITOS 2012
    # fields): they are the human-breast tissue most positives come from, and an overestimate of false positives
    # errs towards precision
    area_mm2 = sum(r.area_mm2 for r in regions)
    crops = data.positives_val[:max_positives] if max_positives else data.positives_val
    spacing_mm = float(np.median([data.images[r.image].spacing_mm for r in data.validation_regions]))
    positives = score_positive_crops(detector, crops, spacing_mm)
    result["method"] = (
        f"expected: recall on {len(crops)} held-out positive crops, false positives on {area_mm2:.2f} mm2 of "
        f"held-out negative tissue, {MIDOG22_MITOSES_PER_MM2:.2f} mitoses/mm2 (MIDOG 2022)"
    )
    thresholds = np.unique(np.round(np.concatenate([np.arange(0.05, 0.95, 0.01), 1 - np.logspace(-1.3, -4, 28)]), 5))
    for name in VARIANTS:
        recall = np.array([(positives[name] >= t).mean() for t in thresholds])
        negative = np.concatenate([r.points_mm[name][1] for r in regions])
        fp_per_mm2 = np.array([(negative >= t).sum() / area_mm2 for t in thresholds])
        f1 = expected_f1(recall, fp_per_mm2)
        best = pick(thresholds, f1, tolerance)
        threshold = float(thresholds[best])
        by_group = {}
        for group in sorted({r.group for r in regions}):
            members = [r for r in regions if r.group == group]
            area = sum(r.area_mm2 for r in members)
            scores = np.concatenate([r.points_mm[name][1] for r in members])
            by_group[group] = {
                "tissue_mm2": round(area, 3),
                "fp_per_mm2_at_threshold": round(float((scores >= threshold).sum() / area), 3),
                "fp_per_mm2_at_0.5": round(float((scores >= 0.5).sum() / area), 3),
                "exhaustive": members[0].exhaustive,
            }
        groups = np.asarray(data.positive_val_groups[: len(crops)])
        found = positives[name] >= threshold
        result["variants"][name] = {
            "threshold": threshold,
            "f1": float(f1[best]),
            "recall": float(recall[best]),
            "fp_per_mm2": float(fp_per_mm2[best]),
            "regions": by_group,
            "recall_by_dataset": {g: round(float(found[groups == g].mean()), 4) for g in sorted(set(groups))},
        }
        result["curves"][name] = (thresholds, f1)
    return result


def summary(result: dict) -> dict:
    """What goes into bundle.json: per-variant thresholds and F1, without the curves."""
    return (
        {"method": result["method"]}
        | {
            f"f1_{name.lower() if name != 'ensemble' else 'ensemble'}": round(result["variants"][name]["f1"], 4)
            for name in VARIANTS
        }
        | {"variants": result["variants"]}
        | {k: v for k, v in result.items() if k not in ("variants", "curves", "method")}
    )
