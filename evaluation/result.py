"""What one evaluation found: the record `evaluation.evaluate` computes and `evaluation.report` writes.

Its own module so that the report can name it without importing the command (no import circle).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from evaluation.inputs import GROUND_TRUTH_CONTAINER_2022, GROUND_TRUTH_CONTAINER_2025, LAYOUT_FOLDER
from evaluation.metrics import Counts, FrocCurve, PrecisionRecall


@dataclass(kw_only=True)
class Scores:
    """The challenge's numbers: overall, per group and per image (exact ratios, None where undefined), and the same
    results under the MIDOG 2025 platform's names and with its arithmetic (its 1e-6 guards, float32 AP, -1 for AP
    without ground truth), so that they can be compared with the leaderboard key by key."""

    aggregates: dict
    per_image: dict
    per_tumour_type: dict
    per_roi_type: dict = field(default_factory=dict)
    leaderboard: dict = field(default_factory=dict)


@dataclass(kw_only=True)
class ImagesSeen:
    """Which images were not scored as the ground truth lists them: no prediction file (no detections), a prediction
    file without ground truth (ignored), unlabelled images skipped."""

    missing_predictions: list[str]
    extra_predictions: list[str]
    skipped_unlabelled: list[str]


@dataclass(kw_only=True)
class Curves:
    """What the report plots: the precision-recall curve, F1 by threshold (and its best threshold) and FROC."""

    curve: PrecisionRecall
    thresholds: np.ndarray
    threshold_counts: list[Counts]
    best_threshold: dict | None
    froc_curve: FrocCurve | None = None


@dataclass(kw_only=True)
class Evaluation:
    """Everything one evaluation found, and which rules and layout it was read with."""

    scores: Scores
    images: ImagesSeen
    curves: Curves
    ground_truth_format: str = GROUND_TRUTH_CONTAINER_2022
    predictions_layout: str = LAYOUT_FOLDER

    def to_json(self) -> dict:
        scores, images = self.scores, self.images
        return {
            "aggregates": scores.aggregates,
            "per_image": scores.per_image,
            "per_tumour_type": scores.per_tumour_type,
            "per_roi_type": scores.per_roi_type,
            "leaderboard": scores.leaderboard,
            "missing_predictions": images.missing_predictions,
            "extra_predictions": images.extra_predictions,
            "skipped_unlabelled": images.skipped_unlabelled,
            "best_threshold": self.curves.best_threshold,
            "rules": "2025" if self.ground_truth_format == GROUND_TRUTH_CONTAINER_2025 else "2022",
            "predictions_layout": self.predictions_layout,
        }
