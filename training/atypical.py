"""Train and validate the atypical classifier (`model.atypical`, MIDOG 2025 track 2) on a 2-core CPU, and bundle it.

    python -m training.atypical --data ../shared/data/real --out runs/atypical [--bundle model/weights]

1. The crops: every 128x128 crop of `patches/amibr` (MIDOG 2021 and TUPAC16, AMi-Br labels) and `patches/atnorm-md`
   (MIDOG++, AtNorM-MD labels) listed in `patches.csv` with subclass normal or atypical.
2. Their descriptors through the bundle's two P4 networks (`model.atypical.descriptors`), cached in chunks under
   OUT/descriptors/ (an interrupted run resumes where it stopped; a progress bar shows the crops).
3. Validation, every number out of fold with the regularisation C and the threshold chosen inside the training part
   (5 inner folds, balanced accuracy at the inner out-of-fold optimum):
   - leave one source out (MIDOG 2021, TUPAC16, MIDOG++): how it carries to a source it never saw;
   - 5 folds grouped by slide (a slide never on both sides; MIDOG++ crops carry no slide, each is its own group).
   Balanced accuracy and AUROC, each with a bootstrap 95% interval over the held-out crops; confusion matrices and
   ROC curves in OUT/atypical_validation.png; everything in OUT/report.json.
4. The shipped head: C and threshold chosen by the same inner folds over all crops, fitted on all of them ->
   OUT/bundle (a copy of --bundle with `atypical.safetensors` and the `atypical` entry of bundle.json).

MIDOG++ crops carry neither slide, tumour type nor species here, so no split by those is possible.
"""

from __future__ import annotations

import argparse
import csv
import logging
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, roc_auc_score, roc_curve
from sklearn.model_selection import StratifiedGroupKFold

from model.atomic_files import write_json_atomically
from model.atypical import CROP_PX, AtypicalHead, descriptors
from model.bundle import DEFAULT_BUNDLE_DIR, load_networks, read_bundle, write_atypical
from model.command_line import command_parser
from model.progress import progress_bar

logger = logging.getLogger(__name__)

C_GRID = (0.0003, 0.001, 0.003)
"""Inverse L2 strengths searched inside the folds (6,336 standardised descriptors, a few thousand crops)."""
INNER_FOLDS = 5
OUTER_FOLDS = 5
CHUNK_CROPS = 256
BOOTSTRAP_RESAMPLES = 1000
SEED = 0


@dataclass(frozen=True)
class Crops:
    """The labelled crops: paths relative to the data root, label (1 = atypical), source dataset and slide group."""

    paths: np.ndarray
    atypical: np.ndarray
    source: np.ndarray
    group: np.ndarray


def read_crops(data_root: Path, limit_per_source: int | None = None) -> Crops:
    """Rows of `patches.csv` with a normal/atypical subclass; `limit_per_source` keeps the first N of each source
    and class (the tiny CI configuration)."""
    with open(Path(data_root) / "patches.csv", newline="") as stream:
        rows = [row for row in csv.DictReader(stream) if row["subclass"] in ("normal", "atypical")]
    if not rows:
        raise SystemExit(f"error: no crop with a normal/atypical subclass in {Path(data_root) / 'patches.csv'}")
    if limit_per_source is not None:
        rows = _first_of_each(rows, limit_per_source)
    return Crops(
        paths=np.array([row["path"] for row in rows]),
        atypical=np.array([row["subclass"] == "atypical" for row in rows]),
        source=np.array([row["dataset"] for row in rows]),
        group=np.array(
            [
                f"{row['dataset']}/{row['slide']}" if row["slide"] else f"{row['dataset']}#{i}"
                for i, row in enumerate(rows)
            ]
        ),
    )


def _slide_group(index: int, row: dict) -> str:
    """The crop's slide, unique across sources; a crop without one (MIDOG++ here) is a group of its own."""
    return f"{row['dataset']}/{row['slide']}" if row["slide"] else f"{row['dataset']}#{index}"


def _first_of_each(rows: list[dict], count: int) -> list[dict]:
    """The first `count` rows of each (source, subclass)."""
    kept: dict[tuple[str, str], int] = {}
    chosen = []
    for row in rows:
        key = (row["dataset"], row["subclass"])
        if kept.get(key, 0) < count:
            kept[key] = kept.get(key, 0) + 1
            chosen.append(row)
    return chosen


def read_crop(path: Path) -> np.ndarray:
    """One crop as (128, 128, 3) uint8; another size is refused (the track's crops are 128x128)."""
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"))
    if rgb.shape[:2] != (CROP_PX, CROP_PX):
        raise SystemExit(f"error: {path} is {rgb.shape[1]}x{rgb.shape[0]} px; the crops must be {CROP_PX}x{CROP_PX}")
    return rgb


def cached_descriptors(crops: Crops, data_root: Path, networks: list, cache: Path) -> np.ndarray:
    """Descriptors of every crop, computed in chunks of `CHUNK_CROPS` and cached as `cache/chunk_<start>.npz` (with
    the crops' paths, so that a cache of other crops is never used)."""
    cache.mkdir(parents=True, exist_ok=True)
    chunks = []
    starts = range(0, len(crops.paths), CHUNK_CROPS)
    with progress_bar(total=len(crops.paths), stage="atypical descriptors", unit="crop") as bar:
        for start in starts:
            paths = crops.paths[start : start + CHUNK_CROPS]
            path = cache / f"chunk_{start:06d}.npz"
            if path.is_file():
                with np.load(path) as stored:
                    if np.array_equal(stored["paths"], paths):
                        chunks.append(stored["descriptors"])
                        bar.update(len(paths))
                        continue
            values = descriptors(networks, np.stack([read_crop(data_root / p) for p in paths]))
            np.savez(path, paths=paths, descriptors=values)
            chunks.append(values)
            bar.update(len(paths))
    return np.concatenate(chunks)


def fit_head(features: np.ndarray, atypical: np.ndarray, c: float) -> AtypicalHead:
    """Standardise, then an L2 logistic regression with balanced class weights (atypical is 1 in 4 to 1 in 9)."""
    mean, scale = features.mean(axis=0), features.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
    model.fit((features - mean) / scale, atypical)
    return AtypicalHead(mean, scale, model.coef_[0].astype(np.float64), float(model.intercept_[0]))


def best_threshold(probability: np.ndarray, atypical: np.ndarray) -> tuple[float, float]:
    """(threshold, balanced accuracy) at the threshold that maximises balanced accuracy on these predictions."""
    candidates = np.unique(np.quantile(probability, np.linspace(0.01, 0.99, 197)))
    scores = [balanced_accuracy_score(atypical, probability >= t) for t in candidates]
    best = int(np.argmax(scores))
    return float(candidates[best]), float(scores[best])


def chosen_on_inner_folds(features: np.ndarray, atypical: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """(C, threshold) chosen by inner, slide-grouped out-of-fold balanced accuracy on the training part only."""
    folds = list(StratifiedGroupKFold(INNER_FOLDS, shuffle=True, random_state=SEED).split(features, atypical, groups))
    best = (-1.0, C_GRID[0], 0.5)
    for c in C_GRID:
        out_of_fold = np.empty(len(atypical))
        for train, test in folds:
            out_of_fold[test] = fit_head(features[train], atypical[train], c).probability(features[test])
        threshold, score = best_threshold(out_of_fold, atypical)
        if score > best[0]:
            best = (score, c, threshold)
    return best[1], best[2]


def bootstrap_ci(atypical: np.ndarray, probability: np.ndarray, predicted: np.ndarray) -> dict:
    """95% percentile intervals of balanced accuracy and AUROC over `BOOTSTRAP_RESAMPLES` resamples of the crops."""
    rng = np.random.default_rng(SEED)
    resampled: dict[str, list[float]] = {"balanced_accuracy": [], "auroc": []}
    for _ in range(BOOTSTRAP_RESAMPLES):
        rows = rng.integers(0, len(atypical), len(atypical))
        if atypical[rows].all() or not atypical[rows].any():
            continue
        resampled["balanced_accuracy"].append(balanced_accuracy_score(atypical[rows], predicted[rows]))
        resampled["auroc"].append(roc_auc_score(atypical[rows], probability[rows]))
    return {
        f"{name}_ci95": [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for name, v in resampled.items()
    }


def held_out_result(name: str, atypical: np.ndarray, probability: np.ndarray, predicted: np.ndarray) -> dict:
    """One held-out part's numbers: counts, balanced accuracy, AUROC, their intervals, confusion matrix, ROC."""
    fpr, tpr, _ = roc_curve(atypical, probability)
    step = max(1, len(fpr) // 200)
    return {
        "held_out": name,
        "crops": int(len(atypical)),
        "atypical": int(atypical.sum()),
        "balanced_accuracy": float(balanced_accuracy_score(atypical, predicted)),
        "auroc": float(roc_auc_score(atypical, probability)),
        **bootstrap_ci(atypical, probability, predicted),
        "confusion": confusion_matrix(atypical, predicted, labels=[False, True]).tolist(),
        "roc": {"fpr": fpr[::step].tolist(), "tpr": tpr[::step].tolist()},
    }


def out_of_fold(features: np.ndarray, crops: Crops, train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, ...]:
    """(probability, decision, C, threshold) on `test`, with C and the threshold chosen inside `train`."""
    c, threshold = chosen_on_inner_folds(features[train], crops.atypical[train], crops.group[train])
    probability = fit_head(features[train], crops.atypical[train], c).probability(features[test])
    return probability, probability >= threshold, c, threshold


def leave_one_source_out(features: np.ndarray, crops: Crops) -> list[dict]:
    results = []
    for source in progress_bar(sorted(set(crops.source)), stage="leave one source out", unit="source"):
        held = crops.source == source
        probability, predicted, c, threshold = out_of_fold(features, crops, np.flatnonzero(~held), np.flatnonzero(held))
        results.append(held_out_result(source, crops.atypical[held], probability, predicted))
        results[-1] |= {"c": c, "threshold": threshold}
        logger.info("held out %s: balanced accuracy %.3f", source, results[-1]["balanced_accuracy"])
    return results


def slide_grouped_folds(features: np.ndarray, crops: Crops) -> dict:
    """Out of fold over 5 slide-grouped folds, each crop judged by its own fold's C and threshold."""
    splitter = StratifiedGroupKFold(OUTER_FOLDS, shuffle=True, random_state=SEED)
    probability, predicted = np.empty(len(crops.atypical)), np.empty(len(crops.atypical), bool)
    chosen = []
    folds = list(splitter.split(features, crops.atypical, crops.group))
    for train, test in progress_bar(folds, stage="slide-grouped folds", unit="fold"):
        probability[test], predicted[test], c, threshold = out_of_fold(features, crops, train, test)
        chosen.append({"c": c, "threshold": threshold})
    return held_out_result("5 slide-grouped folds", crops.atypical, probability, predicted) | {"folds": chosen}


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = command_parser("training.atypical", __doc__, add_help, argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the real data folder (patches.csv and patches/)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (report, figure, bundle)")
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE_DIR, help="bundle whose networks describe crops")
    parser.add_argument(
        "--limit-per-source", type=int, default=None, help="keep N crops per source and class (a quick check)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = get_args_parser().parse_args(argv)
    from training.figures import plot_atypical_validation

    bundle = read_bundle(args.bundle)
    networks = load_networks(bundle, args.bundle)
    crops = read_crops(args.data, args.limit_per_source)
    features = cached_descriptors(crops, args.data, networks, args.out / "descriptors")
    by_source = leave_one_source_out(features, crops)
    grouped = slide_grouped_folds(features, crops)
    c, threshold = chosen_on_inner_folds(features, crops.atypical, crops.group)
    report = {
        "crops": int(len(crops.paths)),
        "atypical": int(crops.atypical.sum()),
        "per_source": {s: int((crops.source == s).sum()) for s in sorted(set(crops.source))},
        "leave_one_source_out": by_source,
        "mean_balanced_accuracy_leave_one_source_out": float(np.mean([r["balanced_accuracy"] for r in by_source])),
        "slide_grouped_folds": grouped,
        "shipped": {"c": c, "threshold": threshold},
    }
    write_json_atomically(report, args.out / "report.json")
    plot_atypical_validation(report, args.out / "atypical_validation.png")
    summary = {k: report[k] for k in ("crops", "atypical", "mean_balanced_accuracy_leave_one_source_out")}
    summary["leave_one_source_out"] = {r["held_out"]: round(r["balanced_accuracy"], 3) for r in by_source}
    summary["command"] = "python -m training.atypical --data DATA --out DIR"
    write_atypical_bundle(args.bundle, args.out / "bundle", fit_head(features, crops.atypical, c), threshold, summary)
    print(f"report: {args.out / 'report.json'}  figure: {args.out / 'atypical_validation.png'}")
    print(f"bundle: {args.out / 'bundle'}")
    return 0


def write_atypical_bundle(source: Path, out: Path, head: AtypicalHead, threshold: float, extra: dict) -> Path:
    """A copy of the bundle `source` with the atypical classifier added."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("README.md", "*.png"))
    write_atypical(read_bundle(out), head, threshold, extra, out)
    return out


if __name__ == "__main__":
    sys.exit(main())
