"""Validation numbers shared by training, the hard-negative search and threshold tuning.

Patch-level AP on a validation set with far more positives per tissue area than real images have is optimistic
(nearly 1 for any decent model, so it cannot rank hard-negative regimes). The *calibrated* AP weights every
negative so that the negatives stand for as much tissue per positive as a MIDOG 2022 image holds
(`MIDOG22_MITOSES_PER_MM2`): precision then behaves as it would on whole images.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score

from model.spacing import DEFAULT_SPACING_MM

MIDOG22_MITOSES_PER_MM2 = 9501 / (354 * 7215 * 5412 * DEFAULT_SPACING_MM**2)
"""Mitotic figures per mm2 of MIDOG 2022 training images (9,501 in 354 images of ~7215 x 5412 px at 0.25 um/px)."""


def calibrated_negative_weight(n_positives: int, negative_area_mm2: float) -> float:
    """Weight of each validation negative so that they represent `n_positives / density` mm2 of tissue."""
    if negative_area_mm2 <= 0:
        return 1.0
    return n_positives / (MIDOG22_MITOSES_PER_MM2 * negative_area_mm2)


def patch_metrics(labels: np.ndarray, probability: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float]:
    """AP as sampled (`val_ap`) and with density-calibrated negative weights (`val_ap_calibrated`)."""
    labels = np.asarray(labels)
    if labels.min() == labels.max():
        return {"val_ap": float("nan"), "val_ap_calibrated": float("nan")}
    plain = float(average_precision_score(labels, probability))
    calibrated = (
        plain if weights is None else float(average_precision_score(labels, probability, sample_weight=weights))
    )
    return {"val_ap": plain, "val_ap_calibrated": calibrated}


def expected_f1(
    recall: np.ndarray, fp_per_mm2: np.ndarray, mitoses_per_mm2: float = MIDOG22_MITOSES_PER_MM2
) -> np.ndarray:
    """F1 an image of the given mitosis density would get with this recall and false-positive rate."""
    true_positive = mitoses_per_mm2 * np.asarray(recall)
    false_negative = mitoses_per_mm2 - true_positive
    return 2 * true_positive / np.maximum(2 * true_positive + np.asarray(fp_per_mm2) + false_negative, 1e-12)
