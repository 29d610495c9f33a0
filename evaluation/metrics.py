"""The challenges' metrics on points in mm: F1 by greedy matching, COCO-style AP on point boxes, MIDOG 2025's FROC.

- F1 (the ranking metric): points matched greedily within 7.5 um exactly as `evalutils.scorers.score_detection`;
  TP/FP/FN are summed over images before F1.
- AP: each point (ground truth too) becomes a +/-11.25 um square and AP is COCO's 101-point interpolated AP at IoU
  0.5 over all images (what torchmetrics' MeanAveragePrecision with a huge detection limit computes for one class,
  float32 tensors included), re-implemented with numpy so that evaluation needs neither torch nor pycocotools.
- FROC (MIDOG 2025): 40 probability thresholds from the lowest to the highest probability, recall and mean false
  positives per image at each (same greedy matching), recall interpolated at 50 false-positive rates in [0, 8] and
  integrated (0..8).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from evaluation.threshold_sweep import ThresholdSweep, sweep_thresholds
from model.matching import MATCH_RADIUS_UM, greedy_match

MATCH_RADIUS_MM: float = MATCH_RADIUS_UM / 1000.0
AP_BOX_HALF_SIZE_MM: float = 0.01125
"""The challenge turns each point into a 22.5 um square (+/- 11.25 um: 90 px at 0.25 um/px) to compute AP with a box
metric."""
AP_IOU_THRESHOLD: float = 0.5

FROC_THRESHOLDS: int = 40
"""MIDOG 2025: probability thresholds evenly spaced from the lowest to the highest probability of all points."""
FROC_MAX_FP_PER_IMAGE: float = 8.0
"""Upper end of the false-positives-per-image axis (as in the JAMA CAMELYON16 FROC the challenge cites)."""
FROC_SAMPLES: int = 50
"""Points in [0, FROC_MAX_FP_PER_IMAGE] at which recall is interpolated before the trapezoidal area."""
PLATFORM_EPSILON: float = 1e-6
"""The platform adds 1e-6 to every precision / recall / F1 denominator (and F1 numerator) and to the FROC recall."""


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def f1(self) -> float | None:
        """2TP / (2TP + FP + FN): the challenge's formula; undefined (None) when there is nothing to count."""
        denominator = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denominator if denominator else None

    def as_dict(self) -> dict:
        """tp, fp, fn, precision, recall, f1: how every report writes counts."""
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
        }


def detection_counts(targets_xy_mm: np.ndarray, predictions_xy_mm: np.ndarray) -> Counts:
    """Count the true positives, false positives and false negatives of one image.

    Exactly as ``evalutils.scorers.score_detection(radius=7.5e-3)`` in the MIDOG challenges' evaluation [1]_: points
    are matched with `model.matching.greedy_match` within ``MATCH_RADIUS_MM`` (7.5 um, inclusive); matched
    predictions are TP, the other predictions FP, the unmatched targets FN.

    Parameters
    ----------
    targets_xy_mm : (N, 2) ndarray of float
        Ground-truth points of the image, in mm, (x, y).
    predictions_xy_mm : (M, 2) ndarray of float
        Predicted points, in mm, (x, y) (the caller chooses which: e.g. those above a probability threshold).

    Returns
    -------
    counts : Counts
        ``tp`` = number of matched pairs, ``fp`` = M - tp, ``fn`` = N - tp. Without targets every prediction is a
        FP; without predictions every target is a FN.

    References
    ----------
    .. [1] Aubreville M. et al., "Mitosis domain generalization in histopathology images - The MIDOG challenge",
           Medical Image Analysis 84, 2023, 102699. :DOI:`10.1016/j.media.2022.102699`
    """
    tp = len(greedy_match(targets_xy_mm, predictions_xy_mm, MATCH_RADIUS_MM))
    return Counts(tp, len(predictions_xy_mm) - tp, len(targets_xy_mm) - tp)


def _boxes(xy_mm: np.ndarray) -> np.ndarray:
    """COCO [x, y, w, h] boxes as the challenge hands them to COCOeval: the corners become a float32 tensor
    (`torch.Tensor`), width and height are subtracted in float32 (xyxy -> xywh), COCOeval then works in float64."""
    xy_mm = np.asarray(xy_mm, dtype=np.float64).reshape(-1, 2)
    low = (xy_mm - AP_BOX_HALF_SIZE_MM).astype(np.float32)
    high = (xy_mm + AP_BOX_HALF_SIZE_MM).astype(np.float32)
    return np.concatenate([low, high - low], axis=1).astype(np.float64)


def _pair_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of xywh boxes taken in pairs (row k of `boxes_a` with row k of `boxes_b`), with pycocotools' arithmetic
    (maskApi `bbIou`), `boxes_a` being the detections: the same operations, element by element, as a full matrix."""
    width = np.minimum(boxes_a[:, 2] + boxes_a[:, 0], boxes_b[:, 2] + boxes_b[:, 0])
    width = width - np.maximum(boxes_a[:, 0], boxes_b[:, 0])
    height = np.minimum(boxes_a[:, 3] + boxes_a[:, 1], boxes_b[:, 3] + boxes_b[:, 1])
    height = height - np.maximum(boxes_a[:, 1], boxes_b[:, 1])
    overlapping = (width > 0) & (height > 0)
    intersection = np.where(overlapping, width * height, 0.0)
    union = boxes_a[:, 2] * boxes_a[:, 3] + boxes_b[:, 2] * boxes_b[:, 3] - intersection
    return np.where(overlapping, intersection / np.where(overlapping, union, 1.0), 0.0)


_IOU_CANDIDATE_CHEBYSHEV_MM: float = 2 * AP_BOX_HALF_SIZE_MM / 3 * 1.05
"""Two equal squares of side s overlap with IoU >= 0.5 only if (s - |dx|)(s - |dy|) >= 2 s^2 / 3, so |dx| and |dy|
are at most s / 3 (7.5 um); 5% more covers the float32 rounding of the boxes by far. Only pairs this close are
candidates; their IoU is then computed exactly, so the margin changes nothing but the work."""


def _platform_scores(scores: np.ndarray) -> np.ndarray:
    """Scores as the challenge ranks them: torchmetrics holds them in a float32 tensor, so nearer ones tie."""
    return np.asarray(scores, dtype=np.float64).astype(np.float32).astype(np.float64)


def _match_by_score(targets_xy_mm: np.ndarray, predictions_xy_mm: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """COCO matching of one image: predictions by decreasing score (stable), each takes the unmatched ground truth
    with the highest IoU >= 0.5 (equal IoU: the later ground truth, as pycocotools' `<` comparison does).
    Returns whether each prediction (in input order) is a true positive.

    Only the pairs that can reach IoU 0.5 are looked at (a cKDTree query, `_IOU_CANDIDATE_CHEBYSHEV_MM`), not the full
    predictions x ground-truth matrix, which held 300,000 x 1,000 floats for one large image; the choices are the
    same because a pair below 0.5 is never taken."""
    targets_xy_mm = np.asarray(targets_xy_mm, dtype=np.float64).reshape(-1, 2)
    predictions_xy_mm = np.asarray(predictions_xy_mm, dtype=np.float64).reshape(-1, 2)
    is_tp = np.zeros(len(scores), dtype=bool)
    if len(targets_xy_mm) == 0 or len(scores) == 0:
        return is_tp
    nearby = cKDTree(predictions_xy_mm).query_ball_point(targets_xy_mm, r=_IOU_CANDIDATE_CHEBYSHEV_MM, p=np.inf)
    lengths = np.fromiter((len(n) for n in nearby), dtype=np.int64, count=len(nearby))
    pair_target = np.repeat(np.arange(len(targets_xy_mm)), lengths)
    pair_prediction = np.fromiter((j for n in nearby for j in n), dtype=np.int64, count=int(lengths.sum()))
    iou = _pair_iou(_boxes(predictions_xy_mm[pair_prediction]), _boxes(targets_xy_mm[pair_target]))
    enough = iou >= min(AP_IOU_THRESHOLD, 1 - 1e-10)
    pair_prediction, pair_target, iou = pair_prediction[enough], pair_target[enough], iou[enough]
    # each prediction's choices, best first: highest IoU, then the later ground truth
    order = np.lexsort((-pair_target, -iou, pair_prediction))
    choices: dict[int, list[int]] = {}
    for prediction, target in zip(pair_prediction[order].tolist(), pair_target[order].tolist(), strict=True):
        choices.setdefault(prediction, []).append(target)
    score_rank = np.empty(len(scores), dtype=np.int64)
    score_rank[np.argsort(-scores, kind="mergesort")] = np.arange(len(scores))
    with_choices = np.fromiter(choices, dtype=np.int64, count=len(choices))
    taken = np.zeros(len(targets_xy_mm), dtype=bool)
    for prediction in with_choices[np.argsort(score_rank[with_choices])].tolist():  # by decreasing score
        for target in choices[prediction]:
            if not taken[target]:
                taken[target] = True
                is_tp[prediction] = True
                break
    return is_tp


@dataclass
class PrecisionRecall:
    """AP and the curve behind it; `ap` is None when there is no ground truth (torchmetrics would say -1)."""

    ap: float | None
    recall: np.ndarray
    precision: np.ndarray
    recall_thresholds: np.ndarray
    interpolated_precision: np.ndarray


def average_precision(
    targets_xy_mm: Sequence[np.ndarray], predictions_xy_mm: Sequence[np.ndarray], scores: Sequence[np.ndarray]
) -> PrecisionRecall:
    """Compute COCO average precision at IoU 0.5 over several images, as the MIDOG challenges report it.

    The challenge [1]_ turns each point (ground truth too) into a +/- 11.25 um square (``AP_BOX_HALF_SIZE_MM``) and
    computes COCO's 101-point interpolated AP [2]_ at IoU 0.5 (one class, no detection limit). Matching is per
    image (COCO's: detections by decreasing score, each taking the unmatched ground truth with the highest IoU >=
    0.5); detections of all images are then ranked together by score (stable: image order, then score order within
    the image), precision is made monotone from the right, and sampled at 101 recall points. Scores and boxes go
    through float32 first, as the challenge's torch tensors do, so that ties and IoU = 0.5 borders fall as on the
    leaderboard.

    Parameters
    ----------
    targets_xy_mm : sequence of (N_i, 2) ndarray of float
        Ground-truth points of each image, in mm, (x, y).
    predictions_xy_mm : sequence of (M_i, 2) ndarray of float
        Predicted points of each image, in mm, (x, y); the same number of images as `targets_xy_mm`.
    scores : sequence of (M_i,) ndarray of float
        Probability of each prediction, in [0, 1] (any real score ranks).

    Returns
    -------
    curve : PrecisionRecall
        ``ap``: the AP in [0, 1]; None when no image has ground truth (torchmetrics would say -1), 0.0 when there is
        ground truth but no detection anywhere. ``recall`` and ``precision``: (D,) float64 after each of the D ranked
        detections of all images (empty without ground truth). ``recall_thresholds``: (101,) recall points 0, 0.01,
        ..., 1. ``interpolated_precision``: (101,) the highest precision at recall >= each point, 0 where that recall
        is never reached (all 0 without ground truth); ``ap`` is its mean.

    Raises
    ------
    ValueError
        If the three sequences do not have the same length.

    References
    ----------
    .. [1] Aubreville M. et al., "Mitosis domain generalization in histopathology images - The MIDOG challenge",
           Medical Image Analysis 84, 2023, 102699. :DOI:`10.1016/j.media.2022.102699`
    .. [2] Lin T.-Y. et al., "Microsoft COCO: Common Objects in Context", European Conference on Computer Vision
           (ECCV), 2014.
    """
    return precision_recall(
        [
            match_image(targets, predictions, image_scores)
            for targets, predictions, image_scores in zip(targets_xy_mm, predictions_xy_mm, scores, strict=True)
        ]
    )


@dataclass(frozen=True)
class ImageMatches:
    """What the metrics of several images need from one image, computed once per image.

    `ap_scores` / `ap_is_tp`: the image's points ranked for AP (float32 scores as the platform holds them, decreasing,
    stable) and whether COCO matching made each a true positive; `sweep`: the greedy-matching counts of all its points
    at every probability threshold (FROC); `n_targets`: its ground-truth points. An evaluation computes this once per
    image and aggregates per image, per tumour type, per ROI type and overall from it, instead of re-matching a large
    image for every group it belongs to.
    """

    ap_scores: np.ndarray
    ap_is_tp: np.ndarray
    sweep: ThresholdSweep
    n_targets: int


def match_image(targets_xy_mm: np.ndarray, predictions_xy_mm: np.ndarray, scores: np.ndarray) -> ImageMatches:
    """One image's COCO matches (AP) and greedy counts at every threshold (FROC), every point of both names.

    Parameters
    ----------
    targets_xy_mm : (N, 2) array_like of float
        Ground-truth points, in mm, (x, y).
    predictions_xy_mm : (M, 2) array_like of float
        Predicted points, in mm, (x, y).
    scores : (M,) array_like of float
        Probability of each prediction.

    Returns
    -------
    matches : ImageMatches
        Input of `precision_recall` and `froc_of_images`.
    """
    targets_xy_mm = np.asarray(targets_xy_mm, dtype=np.float64).reshape(-1, 2)
    predictions_xy_mm = np.asarray(predictions_xy_mm, dtype=np.float64).reshape(-1, 2)
    image_scores = _platform_scores(scores)
    order = np.argsort(-image_scores, kind="mergesort")
    is_tp = _match_by_score(targets_xy_mm, predictions_xy_mm, image_scores)[order]
    sweep = sweep_thresholds(targets_xy_mm, predictions_xy_mm, scores, MATCH_RADIUS_MM)
    return ImageMatches(image_scores[order], is_tp, sweep, len(targets_xy_mm))


def precision_recall(images: Sequence[ImageMatches]) -> PrecisionRecall:
    """AP and its curve over several images from their `match_image` results (see `average_precision`)."""
    recall_thresholds = np.linspace(0.0, 1.0, 101)
    n_targets = sum(image.n_targets for image in images)
    if n_targets == 0:
        empty = np.zeros(0)
        return PrecisionRecall(None, empty, empty, recall_thresholds, np.zeros_like(recall_thresholds))
    merged_scores = np.concatenate([image.ap_scores for image in images]) if images else np.zeros(0)
    merged_tp = np.concatenate([image.ap_is_tp for image in images]) if images else np.zeros(0, dtype=bool)
    order = np.argsort(-merged_scores, kind="mergesort")
    tp_cumulative = np.cumsum(merged_tp[order]).astype(np.float64)
    fp_cumulative = np.cumsum(~merged_tp[order]).astype(np.float64)
    recall = tp_cumulative / n_targets
    precision = tp_cumulative / (tp_cumulative + fp_cumulative + np.spacing(1))
    if len(precision) == 0:  # ground truth but no detections anywhere: AP 0
        return PrecisionRecall(0.0, recall, precision, recall_thresholds, np.zeros_like(recall_thresholds))
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    indices = np.searchsorted(recall, recall_thresholds, side="left")
    interpolated = np.where(indices < len(envelope), envelope[np.minimum(indices, len(envelope) - 1)], 0.0)
    return PrecisionRecall(float(np.mean(interpolated)), recall, precision, recall_thresholds, interpolated)


@dataclass
class FrocCurve:
    """The MIDOG 2025 FROC score and the curve behind it.

    `thresholds` ascend; `recall` and `fp_per_image` belong to them; `fp_grid` / `recall_on_grid` are the sampled curve
    whose trapezoidal area is `score` (0 to FROC_MAX_FP_PER_IMAGE).
    """

    score: float
    thresholds: np.ndarray
    recall: np.ndarray
    fp_per_image: np.ndarray
    fp_grid: np.ndarray
    recall_on_grid: np.ndarray


def froc(
    targets_xy_mm: Sequence[np.ndarray], predictions_xy_mm: Sequence[np.ndarray], scores: Sequence[np.ndarray]
) -> FrocCurve | None:
    """Compute the free-response ROC (FROC) score of several images as the MIDOG 2025 evaluation does.

    The FROC, as in the CAMELYON16 evaluation [1]_ that the challenge cites, summarises recall over a range of false
    positives per image instead of at a single threshold; MIDOG 2025 added it to the metrics of the MIDOG challenges
    [2]_. Every point counts, whatever its name. Thresholds: 40 (``FROC_THRESHOLDS``) evenly spaced from the lowest to
    the highest probability of all points (one if they are all equal; equal values from the spacing count once, in first
    position, as the platform keys its results by threshold); at each, points with probability >= threshold are matched
    per image (greedy, 7.5 um, as `detection_counts`, all thresholds of an image in one `evaluation.threshold_sweep`),
    recall = TP / (TP + FN + 1e-6) over all images and false positives are averaged over images. The (FP per image,
    recall) pairs are ordered by `np.argsort` of the FP rates, listed by ascending threshold, as the platform orders
    them: that sort is not stable, and among equal FP rates np.interp uses the last one, so there the result is
    whatever numpy's sort gives (identical for the same numpy on the same CPU). Recall is then interpolated at 50
    (``FROC_SAMPLES``) FP rates evenly spaced in [0, 8] (``FROC_MAX_FP_PER_IMAGE``; 0 left of the data, the last recall
    right of it) and integrated with the trapezoidal rule.

    Parameters
    ----------
    targets_xy_mm : sequence of (N_i, 2) ndarray of float
        Ground-truth points of each image, in mm, (x, y).
    predictions_xy_mm : sequence of (M_i, 2) array_like of float
        Predicted points of each image, in mm, (x, y); the same number of images as `targets_xy_mm`.
    scores : sequence of (M_i,) array_like of float
        Probability of each prediction, in [0, 1].

    Returns
    -------
    curve : FrocCurve or None
        ``score``: the area under recall over FP per image from 0 to 8, so in [0, 8] (not divided by 8);
        ``thresholds``: (T,) ascending probability thresholds, T <= 40; ``recall`` and ``fp_per_image``: (T,) float64
        at each threshold; ``fp_grid``: (50,) FP rates 0..8; ``recall_on_grid``: (50,) interpolated recall. None
        where the platform says NaN: no prediction in any image (no point), also with no images at all.

    Raises
    ------
    ValueError
        If the three sequences do not have the same length (checked only when there is a prediction).

    References
    ----------
    .. [1] Ehteshami Bejnordi B. et al., "Diagnostic assessment of deep learning algorithms for detection of lymph
           node metastases in women with breast cancer", JAMA 318(22), 2017, pp. 2199-2210.
           :DOI:`10.1001/jama.2017.14585`
    .. [2] Aubreville M. et al., "Mitosis domain generalization in histopathology images - The MIDOG challenge",
           Medical Image Analysis 84, 2023, 102699. :DOI:`10.1016/j.media.2022.102699`
    """
    scores = [np.asarray(s, dtype=np.float64).reshape(-1) for s in scores]
    if not any(len(s) for s in scores):
        return None
    return froc_of_images(
        [
            sweep_thresholds(targets, predictions, image_scores, MATCH_RADIUS_MM)
            for targets, predictions, image_scores in zip(targets_xy_mm, predictions_xy_mm, scores, strict=True)
        ]
    )


def froc_of_images(sweeps: Sequence[ThresholdSweep | ImageMatches]) -> FrocCurve | None:
    """The FROC of several images from their threshold sweeps (or `match_image` results); see `froc`."""
    sweeps = [image.sweep if isinstance(image, ImageMatches) else image for image in sweeps]
    nonempty = [sweep.thresholds for sweep in sweeps if len(sweep.thresholds)]
    if not nonempty:
        return None
    low = float(min(thresholds[0] for thresholds in nonempty))
    high = float(max(thresholds[-1] for thresholds in nonempty))
    # the platform keys its results by threshold value: equal values from linspace count once, in first position
    thresholds = np.asarray(
        list(dict.fromkeys(np.linspace(low, high, FROC_THRESHOLDS).tolist())) if low != high else [low]
    )
    # every image's counts at every threshold (what `detection_counts` gives on each kept set)
    tp = np.zeros((len(sweeps), len(thresholds)), dtype=np.int64)
    fp = np.zeros_like(tp)
    for image, sweep in enumerate(sweeps):
        tp[image], kept = sweep.at(thresholds)
        fp[image] = kept - tp[image]
    n_targets = sum(sweep.n_targets for sweep in sweeps)
    recall = []
    for total_tp in tp.sum(axis=0).tolist():
        recall.append(total_tp / (total_tp + (n_targets - total_tp) + PLATFORM_EPSILON))
    fp_per_image = [float(np.mean(fp[:, index].tolist())) for index in range(len(thresholds))]
    recall_array, fp_array = np.asarray(recall), np.asarray(fp_per_image)
    order = np.argsort(fp_array)  # default kind on purpose: the platform's tie order, see `froc`
    fp_grid = np.linspace(0.0, FROC_MAX_FP_PER_IMAGE, FROC_SAMPLES)
    recall_on_grid = np.interp(fp_grid, fp_array[order], recall_array[order], left=0.0, right=recall_array[order][-1])
    score = float(np.trapezoid(recall_on_grid, fp_grid))
    return FrocCurve(score, thresholds, recall_array, fp_array, fp_grid, recall_on_grid)


def _platform_ratio(numerator: float, denominator: float) -> float:
    return numerator / (denominator + PLATFORM_EPSILON)


def platform_group_metrics(counts: Counts, ap: float | None, froc_score: float | None, prefix: str) -> dict:
    """Report one group's numbers under the MIDOG 2025 platform's names and with its arithmetic, quirks included.

    The platform's numbers [1]_ are reproduced exactly so that ours can be compared with the leaderboard's. Its ratios
    carry a 1e-6 guard (``PLATFORM_EPSILON``, so an empty group has precision 0, recall 0 and F1 1), AP is a float32
    and -1 without ground truth (torchmetrics), FROC is NaN without any point: null here, JSON has no NaN. The
    overall F1 is `f1_score`, a group's is `<prefix>f1`.

    Parameters
    ----------
    counts : Counts
        The group's micro TP / FP / FN (summed over its images).
    ap : float or None
        The group's AP (`average_precision`), None without ground truth.
    froc_score : float or None
        The group's FROC score (`froc`), None without any point.
    prefix : str
        Key prefix naming the group; "" for the overall numbers.

    Returns
    -------
    metrics : dict
        ``<prefix>precision`` = TP / (TP + FP + 1e-6), ``<prefix>recall`` = TP / (TP + FN + 1e-6), ``<prefix>f1``
        (``f1_score`` for the empty prefix) = (2 TP + 1e-6) / (2 TP + FP + FN + 1e-6), ``<prefix>AP`` = `ap` rounded
        to float32 (returned as a Python float) or -1.0, ``<prefix>froc_auc`` = `froc_score` (None stays None).

    References
    ----------
    .. [1] Aubreville M. et al., "Mitosis domain generalization in histopathology images - The MIDOG challenge",
           Medical Image Analysis 84, 2023, 102699. :DOI:`10.1016/j.media.2022.102699`
    """
    return {
        f"{prefix}precision": _platform_ratio(counts.tp, counts.tp + counts.fp),
        f"{prefix}recall": _platform_ratio(counts.tp, counts.tp + counts.fn),
        f"{prefix}f1" if prefix else "f1_score": (2 * counts.tp + PLATFORM_EPSILON)
        / (2 * counts.tp + counts.fp + counts.fn + PLATFORM_EPSILON),
        f"{prefix}AP": -1.0 if ap is None else float(np.float32(ap)),
        f"{prefix}froc_auc": froc_score,
    }


def f1_by_threshold(
    targets_xy_mm: Sequence[np.ndarray], predictions_xy_mm: Sequence[np.ndarray], scores: Sequence[np.ndarray]
) -> tuple[np.ndarray, list[Counts]]:
    """Compute micro counts if only mitotic-figure points with probability >= t were kept, for every distinct t.

    This is what choosing the F1 threshold needs (`best_threshold`): the challenge's F1 [1]_ counts only the points
    named "mitotic figure", so the caller passes those. Greedy matching is not monotone in the kept set: each image's
    counts at each of its own probabilities come from one sweep (`evaluation.threshold_sweep`, equal to re-matching
    each kept set, without its cost of points squared per image); an image's counts only change there, so the union
    of thresholds is covered by looking up each image's last change.

    Parameters
    ----------
    targets_xy_mm : sequence of (N_i, 2) ndarray of float
        Ground-truth points of each image, in mm, (x, y).
    predictions_xy_mm : sequence of (M_i, 2) array_like of float
        Mitotic-figure points of each image, in mm, (x, y); the same number of images as `targets_xy_mm`.
    scores : sequence of (M_i,) array_like of float
        Probability of each point, in [0, 1].

    Returns
    -------
    thresholds : (T,) ndarray of float64
        Every distinct probability of all images, ascending. Empty when there is no point at all.
    counts : list of Counts
        T micro counts (TP / FP / FN summed over all images, matched as `detection_counts`): ``counts[i]`` keeps the
        points with probability >= ``thresholds[i]``. An image with no point above a threshold counts all its
        targets as FN there.

    Raises
    ------
    ValueError
        If the three sequences do not have the same length.

    References
    ----------
    .. [1] Aubreville M. et al., "Mitosis domain generalization in histopathology images - The MIDOG challenge",
           Medical Image Analysis 84, 2023, 102699. :DOI:`10.1016/j.media.2022.102699`
    """
    nonempty = [np.asarray(s, dtype=np.float64) for s in scores if len(s)]
    thresholds = np.unique(np.concatenate(nonempty)) if nonempty else np.zeros(0)
    totals = np.zeros((len(thresholds), 3), dtype=np.int64)
    for targets, predictions, image_scores in zip(targets_xy_mm, predictions_xy_mm, scores, strict=True):
        sweep = sweep_thresholds(targets, predictions, image_scores, MATCH_RADIUS_MM)
        tp, kept = sweep.at(thresholds)  # above the image's highest probability: nothing kept, no match
        totals += np.stack([tp, kept - tp, sweep.n_targets - tp], axis=1)
    return thresholds, [Counts(*map(int, row)) for row in totals]


def best_threshold(thresholds: np.ndarray, counts: list[Counts]) -> dict | None:
    """Choose the probability threshold (keep >= t) with the highest micro F1; ties go to the lowest threshold.

    Parameters
    ----------
    thresholds : (T,) ndarray of float
        Ascending probability thresholds, as `f1_by_threshold` returns them.
    counts : list of Counts
        The T micro counts at those thresholds (`f1_by_threshold`).

    Returns
    -------
    best : dict or None
        ``threshold`` (float) and the counts there as `Counts.as_dict` writes them (tp, fp, fn, precision, recall,
        f1, F1 = 2TP / (2TP + FP + FN)). Ties go to the first, i.e. lowest, threshold. None when `counts` is empty or
        F1 is undefined at every threshold (no target and no point).
    """
    f1 = [c.f1 if c.f1 is not None else -1.0 for c in counts]
    if not f1 or max(f1) < 0:
        return None
    index = int(np.argmax(f1))
    return {"threshold": float(thresholds[index]), **counts[index].as_dict()}
