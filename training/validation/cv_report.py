"""Out-of-fold numbers of the field cross-validation (`training.validation.field_cv`): nested choice, counts,
confidence.

Every number here is computed from points a model produced on fields it never trained on. The checkpoint
(iteration) and the threshold applied to a fold are chosen on the *other* folds' out-of-fold points (nested), so the
reported F1 carries no choice made on the fields it is measured on. Confidence intervals resample whole fields
(the unit that varies between labs, scanners and tumours), not points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from evaluation.metrics import best_threshold, f1_by_threshold
from model.geometry import BORDER_STRIP_PX, in_border_strip
from model.matching import MATCH_RADIUS_UM, greedy_match


@dataclass(frozen=True)
class OutOfFoldField:
    """One field's annotated mitoses and, per checkpoint iteration, the agreed ensemble points a model that never saw
    the field produced (pixel coordinates of the field, probability)."""

    name: str
    fold: int
    shape_px: tuple[int, int]  # (height, width)
    spacing_mm: float
    mitoses_xy_px: np.ndarray  # (N, 2)
    points: dict[int, tuple[np.ndarray, np.ndarray]]  # iteration -> ((M, 2) xy_px, (M,) probability)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "fold": self.fold,
            "shape_px": list(self.shape_px),
            "spacing_mm": self.spacing_mm,
            "mitoses_xy_px": np.asarray(self.mitoses_xy_px, dtype=float).reshape(-1, 2).tolist(),
            "points": {
                str(it): {"xy_px": np.asarray(xy).reshape(-1, 2).tolist(), "probability": np.asarray(p).tolist()}
                for it, (xy, p) in self.points.items()
            },
        }

    @classmethod
    def from_json(cls, record: dict) -> OutOfFoldField:
        return cls(
            name=record["name"],
            fold=int(record["fold"]),
            shape_px=(int(record["shape_px"][0]), int(record["shape_px"][1])),
            spacing_mm=float(record["spacing_mm"]),
            mitoses_xy_px=np.asarray(record["mitoses_xy_px"], dtype=float).reshape(-1, 2),
            points={
                int(it): (np.asarray(v["xy_px"], dtype=float).reshape(-1, 2), np.asarray(v["probability"], dtype=float))
                for it, v in record["points"].items()
            },
        )

    @property
    def radius_px(self) -> float:
        return MATCH_RADIUS_UM / (self.spacing_mm * 1000.0)

    def strip_area_mm2(self) -> tuple[float, float]:
        """(border strip, interior) areas in mm2; the strip is where a window reaches past an edge."""
        height, width = self.shape_px
        inner = max(height - 2 * BORDER_STRIP_PX, 0) * max(width - 2 * BORDER_STRIP_PX, 0)
        pixel_mm2 = self.spacing_mm**2
        return (height * width - inner) * pixel_mm2, inner * pixel_mm2


def pooled_best(fields: Sequence[OutOfFoldField], iteration: int) -> dict | None:
    """The threshold with the best micro F1 over `fields` at one checkpoint (`evaluation.metrics.best_threshold`);
    coordinates in px with the challenge radius in px are the challenge's matching in mm, scaled."""
    scale = [f.spacing_mm for f in fields]
    targets = [f.mitoses_xy_px * s for f, s in zip(fields, scale, strict=True)]
    predictions = [f.points[iteration][0] * s for f, s in zip(fields, scale, strict=True)]
    scores = [f.points[iteration][1] for f in fields]
    return best_threshold(*f1_by_threshold(targets, predictions, scores))


def iterations_of(fields: Sequence[OutOfFoldField]) -> list[int]:
    """Checkpoints every field has points for."""
    common = set.intersection(*(set(f.points) for f in fields)) if fields else set()
    return sorted(common)


def nested_choice(fields: Sequence[OutOfFoldField], iterations: Sequence[int] | None = None) -> dict[int, dict]:
    """Per fold: the (iteration, threshold) with the best pooled F1 on the other folds' fields. Ties: the earlier
    iteration (`max` keeps the first), then the lower threshold (`best_threshold`)."""
    iterations = list(iterations) if iterations is not None else iterations_of(fields)
    choice = {}
    for fold in sorted({f.fold for f in fields}):
        others = [f for f in fields if f.fold != fold]
        options = []
        for iteration in iterations:
            best = pooled_best(others, iteration)
            if best is not None:
                options.append((best["f1"], -iteration, iteration, best["threshold"]))
        if not options:
            raise ValueError(f"fold {fold}: no point on the other folds' fields at any checkpoint")
        f1, _, iteration, threshold = max(options, key=lambda o: (o[0], o[1]))
        choice[fold] = {"iteration": int(iteration), "threshold": float(threshold), "inner_f1": float(f1)}
    return choice


def field_counts(field: OutOfFoldField, iteration: int, threshold: float) -> dict[str, float]:
    """Challenge counts of one field at one checkpoint and threshold, split by the border strip."""
    xy, probability = field.points[iteration]
    return named_counts(field, xy[probability >= threshold])


def named_counts(field: OutOfFoldField, named: np.ndarray) -> dict[str, float]:
    """Challenge counts of one field for the points named "mitotic figure" (`named`: (M, 2) xy px), split by the
    border strip."""
    named = np.asarray(named, dtype=np.float64).reshape(-1, 2)
    pairs = greedy_match(field.mitoses_xy_px, named, field.radius_px)
    matched_predictions = np.zeros(len(named), dtype=bool)
    matched_targets = np.zeros(len(field.mitoses_xy_px), dtype=bool)
    for target, prediction in pairs:
        matched_targets[target] = True
        matched_predictions[prediction] = True
    height, width = field.shape_px
    in_strip = in_border_strip(named, height, width)
    mitosis_in_strip = in_border_strip(field.mitoses_xy_px, height, width)
    strip_mm2, interior_mm2 = field.strip_area_mm2()
    return {
        "tp": int(matched_predictions.sum()),
        "fp": int((~matched_predictions).sum()),
        "fn": int((~matched_targets).sum()),
        "fp_strip": int((~matched_predictions & in_strip).sum()),
        "fp_interior": int((~matched_predictions & ~in_strip).sum()),
        "mitoses_strip": int(mitosis_in_strip.sum()),
        "tp_strip": int((matched_targets & mitosis_in_strip).sum()),
        "strip_mm2": strip_mm2,
        "interior_mm2": interior_mm2,
    }


def f1_of(tp: float, fp: float, fn: float) -> float:
    denominator = 2 * tp + fp + fn
    return 2 * tp / denominator if denominator else 0.0


def bootstrap_f1(counts: np.ndarray, resamples: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of micro F1 when whole fields are resampled with replacement. `counts`: (fields, 3) TP,
    FP, FN per field."""
    counts = np.asarray(counts, dtype=np.float64).reshape(-1, 3)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(counts), size=(resamples, len(counts)))
    tp, fp, fn = (counts[:, column][picks].sum(axis=1) for column in range(3))
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    tail = (1.0 - level) / 2 * 100
    return float(np.percentile(f1, tail)), float(np.percentile(f1, 100 - tail))


def summarise(rows: Sequence[dict]) -> dict[str, float]:
    """Micro precision, recall and F1, and false positives per mm2 in the strip and the interior, over field rows."""
    total = {key: float(sum(r[key] for r in rows)) for key in rows[0] if key not in ("name", "fold")}
    tp, fp, fn = total["tp"], total["fp"], total["fn"]
    return {
        "fields": len(rows),
        "tp": int(tp),
        "fp": int(fp),
        "fn": int(fn),
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "f1": f1_of(tp, fp, fn),
        "fp_per_mm2_strip": total["fp_strip"] / total["strip_mm2"] if total["strip_mm2"] else 0.0,
        "fp_per_mm2_interior": total["fp_interior"] / total["interior_mm2"] if total["interior_mm2"] else 0.0,
        "fp_strip": int(total["fp_strip"]),
        "fp_interior": int(total["fp_interior"]),
        "mitoses_strip": int(total["mitoses_strip"]),
        "tp_strip": int(total["tp_strip"]),
    }


def cross_validated(fields: Sequence[OutOfFoldField], resamples: int = 2000, seed: int = 0) -> dict:
    """The report: nested choice per fold, every field counted at its fold's choice, pooled and per fold, with a
    bootstrap interval by field; and, per checkpoint, the pooled best threshold (the choice a final model trained on
    all fields takes, and an optimistic reference: it is chosen on the fields it is measured on)."""
    choice = nested_choice(fields)
    rows = []
    for f in fields:
        chosen = choice[f.fold]
        rows.append({"name": f.name, "fold": f.fold} | field_counts(f, chosen["iteration"], chosen["threshold"]))
    pooled = summarise(rows)
    low, high = bootstrap_f1(np.array([[r["tp"], r["fp"], r["fn"]] for r in rows]), resamples, seed)
    per_checkpoint = {}
    for iteration in iterations_of(fields):
        best = pooled_best(fields, iteration)
        if best is None:
            continue
        at_best = summarise([field_counts(f, iteration, best["threshold"]) for f in fields])
        per_checkpoint[str(iteration)] = {"threshold": float(best["threshold"])} | at_best
    return {
        "nested": pooled | {"f1_ci95": [low, high], "bootstrap_resamples": resamples},
        "choice": {str(k): v for k, v in choice.items()},
        "per_fold": {
            str(fold): summarise([r for r in rows if r["fold"] == fold]) for fold in sorted({r["fold"] for r in rows})
        },
        "per_field": rows,
        "pooled_best_per_checkpoint": per_checkpoint,
    }


def subset_report(report: dict, names: Sequence[str]) -> dict:
    """The nested numbers restricted to some fields (e.g. the 10 the shipped bundle never saw)."""
    rows = [r for r in report["per_field"] if r["name"] in set(names)]
    return summarise(rows) if rows else {}
