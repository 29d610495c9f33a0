"""What one evaluation found: the record `evaluation.evaluate` computes and `evaluation.report` writes.

Its own module so that the report can name it without importing the command (no import circle).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from evaluation.inputs import GROUND_TRUTH_CONTAINER_2022, GROUND_TRUTH_CONTAINER_2025, LAYOUT_FOLDER
from evaluation.metrics import Counts, FrocCurve, PrecisionRecall


@dataclass
class Evaluation:
    """Everything one evaluation found.

    `aggregates`, `per_tumour_type`, `per_roi_type` and `per_image` hold exact ratios (None where undefined);
    `leaderboard` holds the same results under the MIDOG 2025 platform's names and with its arithmetic (its 1e-6
    guards, float32 AP, -1 for AP without ground truth), so that it can be compared with the leaderboard key by key.
    """

    aggregates: dict
    per_image: dict
    per_tumour_type: dict
    missing_predictions: list[str]
    extra_predictions: list[str]
    skipped_unlabelled: list[str]
    best_threshold: dict | None
    curve: PrecisionRecall
    thresholds: np.ndarray
    threshold_counts: list[Counts]
    per_roi_type: dict = field(default_factory=dict)
    leaderboard: dict = field(default_factory=dict)
    froc_curve: FrocCurve | None = None
    ground_truth_format: str = GROUND_TRUTH_CONTAINER_2022
    predictions_layout: str = LAYOUT_FOLDER

    def to_json(self) -> dict:
        return {
            "aggregates": self.aggregates,
            "per_image": self.per_image,
            "per_tumour_type": self.per_tumour_type,
            "per_roi_type": self.per_roi_type,
            "leaderboard": self.leaderboard,
            "missing_predictions": self.missing_predictions,
            "extra_predictions": self.extra_predictions,
            "skipped_unlabelled": self.skipped_unlabelled,
            "best_threshold": self.best_threshold,
            "rules": "2025" if self.ground_truth_format == GROUND_TRUTH_CONTAINER_2025 else "2022",
            "predictions_layout": self.predictions_layout,
        }
