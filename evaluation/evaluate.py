"""Offline evaluation with the MIDOG challenges' own rules, so that local numbers equal leaderboard numbers.

Usage: `python -m evaluation.evaluate --predictions DIR --ground-truth GT [--report DIR] [--spacing-um 0.25]
[--images DIR]`.

- Predictions: a folder of grand-challenge "Multiple points" JSONs, one per image named `<image stem>.json`
  (coordinates in mm), or the platform's evaluation layout: `predictions.json` (a list of jobs: `pk`, the input
  image's `inputs[].image.name`, and the `outputs[]` entry whose `interface.slug` is "mitotic-figures" with its
  `relative_path`) beside `<pk>/output/<relative_path>`. Detected from the content of `predictions.json`.
- Ground truth, detected from its structure: the MIDOG 2022 evaluation container's file
  (`{"007.tiff": [[x_mm, y_mm, 0], ...]}`), the MIDOG 2025 one (`{"007.tiff": {"annotations": [...],
  "tumor domain": 0, "roi type": "hotspot"}}`), or a MIDOG annotation JSON (bbox [x1, y1, x2, y2] in pixels,
  centre = cell, category 1 = mitotic figure).
- F1 (the ranking metric): only points named "mitotic figure" (or, under the 2022 rules, unnamed) count, matched
  greedily within 7.5 um exactly as `evalutils.scorers.score_detection`; TP/FP/FN are summed over images before F1.
- AP: every point of both names scored by its probability; each point (ground truth too) becomes a +/-11.25 um
  square and AP is COCO's 101-point interpolated AP at IoU 0.5 over all images (what torchmetrics'
  MeanAveragePrecision with a huge detection limit computes for one class, float32 tensors included),
  re-implemented here with numpy so that evaluation needs neither torch nor pycocotools.
- FROC (MIDOG 2025): every point of both names; 40 probability thresholds from the lowest to the highest
  probability, recall and mean false positives per image at each (same greedy matching), recall interpolated at 50
  false-positive rates in [0, 8] and integrated (0..8).
- Everything overall, per tumour type (2025: tumour domain) and, for 2025 ground truth, per ROI type;
  `Evaluation.scores.leaderboard` repeats the numbers under the 2025 platform's own names and arithmetic.

With 2025 ground truth the 2025 input rules apply: a point without a name, or with a coordinate below -7.5 um, is an
error as well. Bad input fails with a one-line message and exit code 1 rather than a traceback or, worse, a plausible
wrong score: pixel coordinates where mm are expected would otherwise give F1 = 0 without complaint. So do a ground
truth without any mitosis, images whose names collide (`001.tiff` and `001.tif`), predictions that belong to no image,
a `--spacing-um` that is not a microscope's, and a `--report` that cannot be written or would replace an input
(checked before the work). The report is written whole or not at all (`evaluation.report`).

Modules: `evaluation.inputs` reads and checks what is evaluated, `evaluation.metrics` (with
`evaluation.threshold_sweep`) computes, `evaluation.report` writes the report folder; this one is the command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from evaluation.inputs import (
    DEFAULT_SPACING_UM,
    GROUND_TRUTH_CONTAINER_2025,
    PLATFORM_JOBS_FILE,
    ROI_TYPES,
    EvaluationInputError,
    GroundTruthImage,
    ImagePredictions,
    check_scorable,
    check_spacing_um,
    find_prediction_files,
    load_ground_truth,
    read_predictions,
)
from evaluation.metrics import (
    Counts,
    FrocCurve,
    ImageMatches,
    PrecisionRecall,
    best_threshold,
    detection_counts,
    f1_by_threshold,
    froc_of_images,
    match_image,
    platform_group_metrics,
    precision_recall,
)
from evaluation.report import ReportError, check_report_destination, format_value, write_report
from evaluation.result import Curves, Evaluation, ImagesSeen, Scores
from model.command_line import command_parser
from model.spacing import PLAUSIBLE_SPACING_MM


def evaluate(
    predictions_dir: Path,
    ground_truth_path: Path,
    spacing_um: float = DEFAULT_SPACING_UM,
    images_dir: Path | None = None,
) -> Evaluation:
    """Challenge metrics of a predictions folder against a ground-truth file (raises EvaluationInputError).

    Images are taken in the order the platform would meet them (its job order; then images without predictions),
    which decides AP among equal scores; the tables list them by name.
    """
    files = find_prediction_files(predictions_dir)
    truth = load_ground_truth(ground_truth_path, spacing_um, images_dir)
    check_scorable(truth, files, ground_truth_path, predictions_dir)
    ground_truth = truth.images
    stems = [stem for stem in files.paths if stem in ground_truth]
    stems += sorted(stem for stem in ground_truth if stem not in files.paths)
    images = ImagesSeen(
        missing_predictions=sorted(stem for stem in ground_truth if stem not in files.paths),
        extra_predictions=sorted(stem for stem in files.paths if stem not in ground_truth),
        skipped_unlabelled=truth.skipped_unlabelled,
    )
    predictions = {
        stem: read_predictions(files.paths[stem], truth.rules_2025) if stem in files.paths else ImagePredictions()
        for stem in stems
    }
    scored = _score_images(stems, ground_truth, predictions, images.missing_predictions)
    aggregates, curve, froc_curve = scored.summary(stems)
    per_tumour_type = {name: scored.summary(selected)[0] for name, selected in sorted(scored.by_tumour.items())}
    per_roi_type = {name: scored.summary(scored.by_roi[name])[0] for name in ROI_TYPES if name in scored.by_roi}
    scores = Scores(
        aggregates=aggregates,
        per_image={stem: scored.per_image[stem] for stem in sorted(scored.per_image)},
        per_tumour_type=per_tumour_type,
        per_roi_type=per_roi_type,
        leaderboard=_leaderboard(aggregates, per_tumour_type, per_roi_type if truth.rules_2025 else None),
    )
    thresholds, threshold_counts = f1_by_threshold(
        [ground_truth[s].xy_mm for s in stems],
        [predictions[s].xy_mm[predictions[s].is_mitosis] for s in stems],
        [predictions[s].probability[predictions[s].is_mitosis] for s in stems],
    )
    curves = Curves(
        curve=curve,
        thresholds=thresholds,
        threshold_counts=threshold_counts,
        best_threshold=best_threshold(thresholds, threshold_counts),
        froc_curve=froc_curve,
    )
    return Evaluation(
        scores=scores, images=images, curves=curves, ground_truth_format=truth.format, predictions_layout=files.layout
    )


@dataclass
class _ScoredImages:
    """Each image's row and matches, and the images of each tumour type and ROI type: what the groups sum."""

    per_image: dict[str, dict] = field(default_factory=dict)
    matches: dict[str, ImageMatches] = field(default_factory=dict)
    by_tumour: dict[str, list[str]] = field(default_factory=dict)
    by_roi: dict[str, list[str]] = field(default_factory=dict)

    def summary(self, selected: list[str]) -> tuple[dict, PrecisionRecall, FrocCurve | None]:
        """A group's row (counts summed, AP and FROC over its images' matches), its PR curve and its FROC curve."""
        per_image = self.per_image
        total = sum((Counts(per_image[s]["tp"], per_image[s]["fp"], per_image[s]["fn"]) for s in selected), Counts())
        selected_matches = [self.matches[s] for s in selected]
        curve, froc_curve = precision_recall(selected_matches), froc_of_images(selected_matches)
        froc_score = None if froc_curve is None else froc_curve.score
        return {"n_images": len(selected), **total.as_dict(), "ap": curve.ap, "froc": froc_score}, curve, froc_curve


def _score_images(
    stems: list[str],
    ground_truth: dict[str, GroundTruthImage],
    predictions: dict[str, ImagePredictions],
    missing: list[str],
) -> _ScoredImages:
    """Match each image once (for every group it belongs to) and write its row."""
    scored = _ScoredImages()
    for stem in stems:
        targets, image = ground_truth[stem].xy_mm, predictions[stem]
        counts = detection_counts(targets, image.xy_mm[image.is_mitosis])
        scored.matches[stem] = match_image(targets, image.xy_mm, image.probability)
        image_froc = froc_of_images([scored.matches[stem]])
        tumour_type, roi_type = ground_truth[stem].tumour_type, ground_truth[stem].roi_type
        scored.per_image[stem] = {
            "file_name": ground_truth[stem].file_name,
            "tumour_type": tumour_type,
            **({"roi_type": roi_type} if roi_type is not None else {}),
            "n_ground_truth": len(targets),
            "n_mitotic_figure_points": int(image.is_mitosis.sum()),
            "n_points": len(image.probability),
            **counts.as_dict(),
            "ap": precision_recall([scored.matches[stem]]).ap,
            "froc": None if image_froc is None else image_froc.score,
            "missing_prediction": stem in missing,
        }
        scored.by_tumour.setdefault(tumour_type, []).append(stem)
        if roi_type is not None:
            scored.by_roi.setdefault(roi_type, []).append(stem)
    return scored


def _leaderboard(aggregates: dict, per_tumour_type: dict, per_roi_type: dict | None) -> dict:
    """The platform's `aggregates` object: overall, every tumour domain present, and (2025) all three ROI types,
    present or not, as the platform always reports them."""

    def group(metrics: dict | None, prefix: str) -> dict:
        metrics = metrics or {"tp": 0, "fp": 0, "fn": 0, "ap": None, "froc": None}
        counts = Counts(metrics["tp"], metrics["fp"], metrics["fn"])
        return platform_group_metrics(counts, metrics["ap"], metrics["froc"], prefix)

    leaderboard = group(aggregates, "")
    for name, metrics in per_tumour_type.items():
        leaderboard.update(group(metrics, f"tumor_{name}_"))
    if per_roi_type is not None:
        for name in ROI_TYPES:
            leaderboard.update(group(per_roi_type.get(name), f"roi_type_{name}_"))
    return leaderboard


# ---------------------------------------------------------------------------------------------------------- output


def _row(label: str, metrics: dict, width: int) -> str:
    return (
        f"{label:<{width}} {metrics['tp']:>6} {metrics['fp']:>6} {metrics['fn']:>6} "
        f"{format_value(metrics['precision']):>9} {format_value(metrics['recall']):>9} "
        f"{format_value(metrics['f1']):>9} {format_value(metrics['ap']):>9} {format_value(metrics.get('froc')):>9}"
    )


def format_tables(evaluation: Evaluation) -> str:
    """Per-image, per-tumour-type, per-ROI-type (2025) and overall tables for the terminal."""
    labels = [
        *evaluation.scores.per_image,
        *evaluation.scores.per_tumour_type,
        *evaluation.scores.per_roi_type,
        "overall (micro)",
    ]
    width = max(len(label) for label in labels) + 2
    header = (
        f"{'':<{width}} {'TP':>6} {'FP':>6} {'FN':>6} {'precision':>9} {'recall':>9} {'F1':>9} {'AP':>9} {'FROC':>9}"
    )
    lines = ["per image", header]
    for stem, metrics in evaluation.scores.per_image.items():
        lines.append(_row(stem, metrics, width) + ("  (no prediction file)" if metrics["missing_prediction"] else ""))
    is_2025 = evaluation.ground_truth_format == GROUND_TRUTH_CONTAINER_2025
    lines += ["", "per tumour domain" if is_2025 else "per tumour type", header]
    lines += [_row(name, metrics, width) for name, metrics in evaluation.scores.per_tumour_type.items()]
    if evaluation.scores.per_roi_type:
        lines += ["", "per ROI type", header]
        lines += [_row(name, metrics, width) for name, metrics in evaluation.scores.per_roi_type.items()]
    lines += ["", header, _row("overall (micro)", evaluation.scores.aggregates, width)]
    if evaluation.images.missing_predictions:
        lines.append(
            f"missing prediction files (counted as no detections): {', '.join(evaluation.images.missing_predictions)}"
        )
    if evaluation.images.extra_predictions:
        lines.append(
            f"prediction files without ground truth (ignored): {', '.join(evaluation.images.extra_predictions)}"
        )
    if evaluation.images.skipped_unlabelled:
        lines.append(f"skipped unlabelled images: {len(evaluation.images.skipped_unlabelled)}")
    best = evaluation.curves.best_threshold
    if best is not None:
        lines.append(
            f"best probability threshold on 'mitotic figure' points: {best['threshold']:.6g} "
            f"(F1 {format_value(best['f1'])}, precision {format_value(best['precision'])}, "
            f"recall {format_value(best['recall'])})"
        )
    return "\n".join(lines)


DESCRIPTION = (
    "MIDOG 2022 / 2025 offline evaluation: challenge-identical F1 (micro, 7.5 um greedy matching), AP "
    "and FROC, overall, per tumour type and per ROI type."
)
"""What `--help` says first."""


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = command_parser("evaluation.evaluate", DESCRIPTION, add_help)
    parser.add_argument(
        "--predictions",
        type=Path,
        required=True,
        help="folder with one grand-challenge 'Multiple points' JSON per image, named <image stem>.json, or in the "
        "platform's evaluation layout (predictions.json listing the jobs, <pk>/output/mitotic-figures.json; "
        "detected automatically; required)",
    )
    parser.add_argument(
        "--ground-truth",
        type=Path,
        required=True,
        help='evaluation-container ground truth: 2022 ({"007.tiff": [[x_mm, y_mm, 0], ...]}) or 2025 ({"007.tiff": '
        '{"annotations": [...], "tumor domain": 0, "roi type": "hotspot"}}, with the 2025 input checks), or a MIDOG '
        "annotation JSON (format detected automatically; required)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        help="folder for metrics.json, precision_recall.png, f1_threshold.png and froc.png, replaced together once "
        "all are written (default: none, terminal only)",
    )
    parser.add_argument(
        "--spacing-um",
        type=float,
        default=DEFAULT_SPACING_UM,
        help="pixel spacing in um/px to convert MIDOG JSON pixel boxes to mm, "
        f"{PLAUSIBLE_SPACING_MM[0] * 1000:g}-{PLAUSIBLE_SPACING_MM[1] * 1000:g} (default: %(default)s)",
    )
    parser.add_argument(
        "--images",
        type=Path,
        default=None,
        help="folder with the TIFFs named in a MIDOG JSON: per-image spacing from their resolution tags instead of "
        "--spacing-um (default: none)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command: tables on stdout, the report if asked; bad input or an unwritable report is one line on stderr
    starting with "error:" and exit code 1, found before the work where it can be (like process.py)."""
    args = get_args_parser().parse_args(argv)
    try:
        check_spacing_um(args.spacing_um)
        if args.report is not None:
            files = find_prediction_files(args.predictions)
            inputs = [args.ground_truth, *files.paths.values(), Path(args.predictions) / PLATFORM_JOBS_FILE]
            check_report_destination(args.report, args.predictions, inputs)
        evaluation = evaluate(args.predictions, args.ground_truth, args.spacing_um, args.images)
    except (EvaluationInputError, ReportError) as error:
        return _fail(error)
    print(format_tables(evaluation))
    if args.report is not None:
        try:
            paths = write_report(evaluation, args.report)
        except ReportError as error:
            return _fail(error)
        print("report: " + ", ".join(str(path) for path in paths))
    return 0


def _fail(error: Exception | str) -> int:
    """One line on stderr, whatever the message holds (a file name may contain a newline)."""
    print("error: " + " ".join(str(error).splitlines()), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
