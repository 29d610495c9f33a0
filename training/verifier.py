"""Train and cross-validate the verifier (`model.verifier`), the CPU-trainable second stage, and bundle it.

    python -m training.verifier --data ../shared/data/real --out runs/verifier [--bundle model/weights]

Stages (resumable: each writes its file under --out and is skipped when rerun):

1. candidates (`training.verifier_data`): the shipped detector on the 35 MiDeSeC fields, the mitosis crops and the
   mitosis-free tiles, exactly as `process.py` runs it -> candidates/<set>.npz;
2. features for every candidate at each crop size -> features/<set>_<crop>.npz;
3. the field cross-validation (`training.validation.field_cv.split_folds`: 5 folds of 7 fields by the SHA-256 of
   their names).
   Every choice is made out of fold: for each outer fold, each variant (model kind, crop size, crop positives on or
   off) is fitted on three of the other four folds and scored on the fourth, in turn; the variant, its Platt
   calibration, its threshold and its border-strip threshold are chosen on those inner out-of-fold points; the
   chosen variant is then fitted on the four folds and applied to the outer fold's fields. -> report.json,
   precision_recall.png (out-of-fold curves with and without the verifier, all fields and the 10 never-trained);
4. the shipped verifier: the variant chosen the same way over all five folds (its calibration and thresholds from
   their out-of-fold points), fitted on all 35 fields -> bundle/verifier.safetensors and the `verifier` entry of
   bundle.json (a copy of --bundle with it added).

Training data of a fit: the candidates of its training fields (labelled by the challenge's matching), the
candidates of the left 80% of the mitosis-free tiles (negatives; the right 20% are kept to check false positives),
and optionally the positive candidates of the dense nets' training crops (their held-out crops measure recall per
source). Crops weigh as much in all as the fields' positives, so they widen what a mitosis looks like without
outvoting the fields.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from evaluation.metrics import best_threshold, f1_by_threshold, match_image, precision_recall
from model.atomic_files import write_json_atomically
from model.bundle import BUNDLE_FILE, DEFAULT_BUNDLE_DIR, read_bundle
from model.command_line import command_parser
from model.geometry import in_border_strip
from model.spacing import DEFAULT_SPACING_MM
from model.verifier import (
    VerifierEntry,
    VerifierModel,
    candidate_features,
    feature_names,
    names_by_rule,
    save_verifier,
)
from training.data import real_data
from training.data.sources import TILE_TRAIN_FRACTION, midesec_validation_names
from training.figures import PrecisionRecallCurve, PrecisionRecallPanel, plot_precision_recall
from training.validation.cv_report import OutOfFoldField, bootstrap_f1, named_counts, summarise
from training.validation.field_cv import split_folds
from training.verifier_data import SETS, CandidateSet, collect

logger = logging.getLogger("training.verifier")

VERIFIER_FILE = "verifier.safetensors"
CROP_RECALL_TOLERANCE = 0.02
"""The verifier's threshold may not lower the recall of any crop set (MIDOG 2021, TUPAC16, MIDOG++) by more than
this against the shipped rule on the same crops: precision on one slide's fields must not cost other sources'
mitoses."""


@dataclass(frozen=True)
class Variant:
    kind: str  # "logistic" or "trees"
    crop_px: int | None  # None: the detector's numbers and the edge distance only
    crop_positives: bool
    mined_positives: bool = False  # mined mitoses (Akram et al. 2018) of the MITOS 2012 fields as extra positives

    @property
    def key(self) -> str:
        extra = ("+crops" if self.crop_positives else "") + ("+mined" if self.mined_positives else "")
        return f"{self.kind}-crop{self.crop_px or 0}-fields{extra}"


@dataclass(frozen=True)
class VerifierSettings:
    folds: int = 5
    # What ships: one variant, so the folds choose only its calibration and thresholds. The study over 24 variants
    # (`--kinds logistic trees --crops-px 0 64 96 --crop-positives both --mined-positives both`) was measured: choosing
    # among them on inner folds lowered out-of-fold F1 (model card, "The verifier").
    kinds: tuple[str, ...] = ("logistic",)
    crops_px: tuple[int | None, ...] = (None,)
    crop_positives: tuple[bool, ...] = (False,)
    mined_positives: tuple[bool, ...] = (False,)
    trees_iterations: int = 150
    trees_depth: int = 3
    trees_learning_rate: float = 0.05
    trees_min_leaf: int = 20
    logistic_c: float = 0.3
    crop_limit: int | None = None  # CI's tiny run: the first N crops only
    shipped_threshold: float = 0.5  # the dense nets' bundle threshold: the rule the crops' recall is kept against
    bootstrap: int = 2000
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def variants(self) -> list[Variant]:
        return [
            Variant(*v) for v in itertools.product(self.kinds, self.crops_px, self.crop_positives, self.mined_positives)
        ]


# --- features --------------------------------------------------------------------------------------------------------


def image_paths(name: str, root: Path) -> dict[str, Path]:
    return {
        "fields": root / "fields" / "midesec" / name,
        "crops": root / name,
        "tiles": root / "tiles" / "cmc-no-mitosis" / name,
        "mined": root / "unlabeled" / "mitos2012" / name,
    }


def set_features(candidates: CandidateSet, set_name: str, root: Path, crop_px: int | None) -> np.ndarray:
    """Features of every candidate of a set, image by image (each image read once)."""
    features = np.zeros((len(candidates.label), len(feature_names(crop_px))))
    for index in tqdm(
        np.unique(candidates.image), desc=f"features {set_name} crop {crop_px}", unit="image", mininterval=5
    ):
        rows = np.flatnonzero(candidates.image == index)
        rgb = real_data.read_image(image_paths(str(candidates.names[index]), root)[set_name])
        features[rows] = candidate_features(rgb, candidates.points(rows), crop_px)
    return features


def cached_features(sets: dict, root: Path, folder: Path, crops_px: Sequence[int | None]) -> dict:
    """features[(set, crop_px)] -> (N, F), computed once per set and crop size."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for set_name, crop_px in itertools.product(SETS, crops_px):
        path = folder / f"{set_name}_{crop_px or 0}_{len(feature_names(crop_px))}.npz"  # new features: new file
        if not path.is_file():
            np.savez(path, features=set_features(sets[set_name], set_name, root, crop_px))
        with np.load(path) as data:
            out[(set_name, crop_px)] = data["features"]
    return out


# --- fitting ---------------------------------------------------------------------------------------------------------


def fit_model(variant: Variant, x: np.ndarray, y: np.ndarray, weight: np.ndarray, settings: VerifierSettings):
    """An uncalibrated `VerifierModel` (calibration [1, 0]) fitted on standardised features."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = (x - mean) / scale
    common = {"kind": variant.kind, "crop_px": variant.crop_px, "mean": mean, "scale": scale}
    common["calibration"] = np.array([1.0, 0.0])
    if len(np.unique(y)) < 2:  # a tiny run's fold may hold one class only: a constant model says so
        prevalence = float(np.clip(np.average(y, weights=weight), 1e-3, 1 - 1e-3))
        constant = float(np.log(prevalence / (1 - prevalence)))
        return VerifierModel(**{**common, "kind": "logistic"}, coef=np.zeros(x.shape[1]), intercept=constant)
    fitted = classifier(variant.kind, settings).fit(z, y, sample_weight=weight)
    if variant.kind == "logistic":
        return VerifierModel(**common, coef=fitted.coef_[0].copy(), intercept=float(fitted.intercept_[0]))
    return VerifierModel(**common, **trees_of(fitted))


def classifier(kind: str, settings: VerifierSettings):
    """The unfitted sklearn model of a variant kind (its settings in one place)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    if kind == "logistic":
        return LogisticRegression(C=settings.logistic_c, max_iter=5000)
    return HistGradientBoostingClassifier(
        max_iter=settings.trees_iterations,
        max_depth=settings.trees_depth,
        learning_rate=settings.trees_learning_rate,
        min_samples_leaf=settings.trees_min_leaf,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=settings.seed,
    )


def trees_of(fitted) -> dict:
    """A fitted `HistGradientBoostingClassifier` (binary, numeric features) as node arrays `VerifierModel` reads."""
    rows, values, roots = [], [], []
    for predictors in fitted._predictors:
        nodes = predictors[0].nodes
        offset = len(values)
        roots.append(offset)
        for node in nodes:
            leaf = bool(node["is_leaf"])
            rows.append(
                [
                    0 if leaf else int(node["feature_idx"]),
                    float(node["num_threshold"]),
                    offset + int(node["left"]) if not leaf else -1,
                    offset + int(node["right"]) if not leaf else -1,
                    1.0 if leaf else 0.0,
                ]
            )
            values.append(float(node["value"]))
    return {
        "tree_nodes": np.asarray(rows, dtype=np.float64),
        "tree_values": np.asarray(values, dtype=np.float64),
        "tree_roots": np.asarray(roots, dtype=np.float64),
        "baseline": float(np.ravel(fitted._baseline_prediction)[0]),
    }


def platt(raw: np.ndarray, label: np.ndarray) -> np.ndarray:
    """(a, b) with sigmoid(a * raw + b) calibrated on out-of-fold candidates."""
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(label)) < 2:
        return np.array([1.0, 0.0])
    fitted = LogisticRegression(C=1e4, max_iter=5000).fit(raw.reshape(-1, 1), label)
    return np.array([float(fitted.coef_[0, 0]), float(fitted.intercept_[0])])


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


# --- the study -------------------------------------------------------------------------------------------------------


class Study:
    """Everything the cross-validation needs, loaded once: candidates, features, fields, folds."""

    def __init__(self, sets: dict, features: dict, root: Path, settings: VerifierSettings):
        self.sets, self.features, self.settings, self.root = sets, features, settings, root
        self.fields = {f.path.name: f for f in real_data.load_midesec_fields(root)}
        field_set = sets["fields"]
        names = [str(n) for n in field_set.names]
        self.folds = split_folds(names, settings.folds)
        fold_of_name = {name: k for k, part in enumerate(self.folds) for name in part}
        self.field_fold = np.array([fold_of_name[str(field_set.names[i])] for i in field_set.image])
        self.never_trained = sorted(str(n) for n, h in zip(field_set.names, field_set.held_out, strict=True) if h)
        tiles = sets["tiles"]
        widths = {t.path.name: t.width_px for t in real_data.load_mitosis_free_tiles(root)}
        tile_width = np.array([widths[str(tiles.names[i])] for i in tiles.image])
        self.tile_train = tiles.xy_px[:, 0] < TILE_TRAIN_FRACTION * tile_width
        crops = sets["crops"]
        self.crop_train = ~crops.held_out[crops.image]
        group_of = {str(r.path.relative_to(root)): r.group for r in real_data.load_patches(root, check_files=False)}
        crop_groups = sorted({group_of[str(n)] for n in crops.names})
        dealt = (
            split_folds(crop_groups, settings.folds)
            if len(crop_groups) >= settings.folds
            else [[g] for g in crop_groups]
        )
        fold_of_group = {g: k for k, part in enumerate(dealt) for g in part}
        self.crop_image_fold = np.array([fold_of_group[group_of[str(n)]] for n in crops.names], dtype=int)
        self.crop_fold = self.crop_image_fold[crops.image]
        """Crops are dealt into the same number of folds by slide (or crop block): fold k's fits leave out fold k's
        fields and crops, so the crops' out-of-fold recall is measured like the fields' F1."""
        self.crop_today = crops.agreed & (crops.probability >= settings.shipped_threshold)
        self._fits: dict = {}

    def design(self, variant: Variant, excluded_folds: frozenset[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        crop = variant.crop_px
        fields_mask = ~np.isin(self.field_fold, sorted(excluded_folds))
        parts = [
            (self.features[("fields", crop)][fields_mask], self.sets["fields"].label[fields_mask]),
            (self.features[("tiles", crop)][self.tile_train], self.sets["tiles"].label[self.tile_train]),
        ]
        weights = [np.ones(len(parts[0][1])), np.ones(len(parts[1][1]))]
        crop_rows = self.crop_train & ~np.isin(self.crop_fold, sorted(excluded_folds))
        if variant.crop_positives and crop_rows.any():
            crop_labels = self.sets["crops"].label[crop_rows]
            parts.append((self.features[("crops", crop)][crop_rows], crop_labels))
            field_positives = max(float(parts[0][1].sum()), 1.0)
            weights.append(np.full(len(crop_labels), field_positives / len(crop_labels)))
        mined = self.sets["mined"]
        if variant.mined_positives and len(mined.label):
            parts.append((self.features[("mined", crop)], mined.label))
            weights.append(np.full(len(mined.label), min(1.0, float(parts[0][1].sum()) / len(mined.label))))
        x = np.vstack([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts]).astype(int)
        return x, y, np.concatenate(weights)

    def fit(self, variant: Variant, excluded_folds: frozenset[int]) -> VerifierModel:
        key = (variant, excluded_folds)
        if key not in self._fits:
            self._fits[key] = fit_model(variant, *self.design(variant, excluded_folds), self.settings)
        return self._fits[key]

    def raw_scores(self, variant: Variant, model: VerifierModel, rows: np.ndarray) -> np.ndarray:
        return model.raw(self.features[("fields", variant.crop_px)][rows])

    def inner_raw(self, variant: Variant, folds: Sequence[int], outer: frozenset[int]) -> tuple[np.ndarray, np.ndarray]:
        """Raw scores of the field candidates and of the training crops' centre candidates of `folds`, each fold
        scored by a fit without it (and without `outer`)."""
        raw = np.full(len(self.field_fold), np.nan)
        crop_raw = np.full(len(self.crop_fold), np.nan)
        crop_features = self.features[("crops", variant.crop_px)]
        for fold in folds:
            model = self.fit(variant, outer | {fold})
            rows = np.flatnonzero(self.field_fold == fold)
            raw[rows] = self.raw_scores(variant, model, rows)
            crop_rows = np.flatnonzero((self.crop_fold == fold) & self.crop_train)
            if len(crop_rows):
                crop_raw[crop_rows] = model.raw(crop_features[crop_rows])
        return raw, crop_raw

    def crop_recall_floor(self, crop_probability: np.ndarray, folds: Sequence[int]) -> float:
        """The highest threshold at which the out-of-fold recall of the training crops of `folds`, in every dataset,
        stays within `CROP_RECALL_TOLERANCE` of the shipped rule's on the same crops (1.0: no crops)."""
        crops = self.sets["crops"]
        rows = np.flatnonzero(self.crop_train & np.isin(self.crop_fold, list(folds)))
        highest = 1.0
        for dataset in np.unique(crops.groups):
            in_folds = np.isin(self.crop_image_fold, list(folds))
            images = np.flatnonzero((crops.groups == dataset) & ~crops.held_out & in_folds)
            mine = rows[np.isin(crops.image[rows], images)]  # at most one candidate per crop: its centre's
            total = len(images)
            if total == 0:
                continue
            wanted = self.crop_today[mine].sum() / total - CROP_RECALL_TOLERANCE
            scores = np.sort(crop_probability[mine])[::-1]  # recall at threshold scores[i] is (i + 1) / total
            keep = int(np.ceil(max(wanted, 0.0) * total - 1e-9))
            if keep > 0:
                highest = min(highest, float(scores[min(keep, len(scores)) - 1]))
        return highest


@dataclass(frozen=True)
class Rule:
    """The naming rule the folds choose: verifier probability >= threshold (strip_threshold in the border strip)."""

    threshold: float
    strip_threshold: float

    def names(self, probability: np.ndarray, in_strip: np.ndarray) -> np.ndarray:
        return names_by_rule(probability, in_strip, self.threshold, self.strip_threshold)


def field_groups(study: Study, rows: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(field name, candidate rows) for every field that has rows among `rows`, in name order."""
    image = study.sets["fields"].image
    names = study.sets["fields"].names
    return [(str(names[i]), rows[image[rows] == i]) for i in np.unique(image[rows])]


def in_strip_of(study: Study, rows: np.ndarray) -> np.ndarray:
    """Which field candidates among `rows` lie in their field's border strip."""
    field_set = study.sets["fields"]
    shapes = np.array([(f.height_px, f.width_px) for f in (study.fields[str(n)] for n in field_set.names)])
    shape_of = shapes[field_set.image[rows]].reshape(-1, 2)
    return in_border_strip(field_set.xy_px[rows], shape_of[:, 0], shape_of[:, 1])


def counts_of(study: Study, rows: np.ndarray, named: np.ndarray) -> list[dict]:
    """Per field among `rows`: challenge counts of the candidates named (boolean over `rows`)."""
    field_set = study.sets["fields"]
    out = []
    for name, picked in field_groups(study, rows):
        record = study.fields[name]
        ooff = OutOfFoldField(
            name, -1, (record.height_px, record.width_px), DEFAULT_SPACING_MM, record.mitoses_xy_px, {}
        )
        chosen = picked[named[np.searchsorted(rows, picked)]]
        out.append(
            {"name": name, "fold": int(study.field_fold[picked[0]])} | named_counts(ooff, field_set.xy_px[chosen])
        )
    return out


def choose_rule(study: Study, rows: np.ndarray, probability: np.ndarray, highest: float = 1.0) -> tuple[Rule, float]:
    """The threshold with the best pooled F1 over the fields of `rows` (`probability` over `rows`) among those at
    most `highest` (the crops' recall floor), then the border strip's threshold with the best F1 given it (the
    lowest of equals)."""
    field_set = study.sets["fields"]
    targets, predictions, scores = [], [], []
    for name, picked in field_groups(study, rows):
        targets.append(study.fields[name].mitoses_xy_px * DEFAULT_SPACING_MM)
        predictions.append(field_set.xy_px[picked] * DEFAULT_SPACING_MM)
        scores.append(probability[np.searchsorted(rows, picked)])
    thresholds, counts = f1_by_threshold(targets, predictions, scores)
    allowed = thresholds <= highest
    best = best_threshold(thresholds[allowed], [c for c, ok in zip(counts, allowed, strict=True) if ok])
    threshold = best["threshold"] if best else 0.5
    in_strip = in_strip_of(study, rows)
    options = np.unique(np.concatenate([[threshold, 1.01], probability[in_strip & (probability >= threshold)]]))
    best_f1, strip_threshold = -1.0, threshold
    for option in options:
        rule = Rule(threshold, float(option))
        f1 = summarise(counts_of(study, rows, rule.names(probability, in_strip)))["f1"]
        if f1 > best_f1 + 1e-12:
            best_f1, strip_threshold = f1, float(option)
    return Rule(float(threshold), strip_threshold), best_f1


def select_variant(study: Study, folds: Sequence[int], outer: frozenset[int]) -> dict:
    """Among the variants, the one whose inner out-of-fold points (folds `folds`, each scored by a fit without it and
    without `outer`) reach the best pooled F1 after calibration and the rule's choice on them."""
    rows = np.flatnonzero(np.isin(study.field_fold, list(folds)))
    trials = []
    for variant in study.settings.variants():
        raw, crop_raw = study.inner_raw(variant, folds, outer)
        raw = raw[rows]
        calibration = platt(raw, study.sets["fields"].label[rows])
        probability = sigmoid(calibration[0] * raw + calibration[1])
        highest = study.crop_recall_floor(sigmoid(calibration[0] * crop_raw + calibration[1]), folds)
        rule, f1 = choose_rule(study, rows, probability, highest)
        trials.append({"variant": variant, "calibration": calibration, "rule": rule, "inner_f1": f1})
    best = max(trials, key=lambda t: t["inner_f1"])  # the first of equals: the simplest variant
    return best | {"trials": {t["variant"].key: round(t["inner_f1"], 4) for t in trials}}


# --- the report ------------------------------------------------------------------------------------------------------


def ap_with_ci(study: Study, rows: np.ndarray, probability: np.ndarray, settings: VerifierSettings) -> dict:
    """Challenge AP over the fields of `rows` (every candidate, scored by `probability`) and a bootstrap interval by
    field."""
    field_set = study.sets["fields"]
    images = []
    for name, picked in field_groups(study, rows):
        images.append(
            match_image(
                study.fields[name].mitoses_xy_px * DEFAULT_SPACING_MM,
                field_set.xy_px[picked] * DEFAULT_SPACING_MM,
                probability[np.searchsorted(rows, picked)],
            )
        )
    rng = np.random.default_rng(settings.seed)
    resampled = [
        precision_recall([images[i] for i in rng.integers(0, len(images), len(images))]).ap or 0.0
        for _ in range(settings.bootstrap // 4)
    ]
    return {
        "ap": precision_recall(images).ap,
        "ap_ci95": [float(np.percentile(resampled, 2.5)), float(np.percentile(resampled, 97.5))],
    }


def summary_with_ci(rows: list[dict], settings: VerifierSettings) -> dict:
    low, high = bootstrap_f1(np.array([[r["tp"], r["fp"], r["fn"]] for r in rows]), settings.bootstrap, settings.seed)
    return summarise(rows) | {"f1_ci95": [low, high]}


def baseline_rule(study: Study, rows: np.ndarray, threshold: float) -> np.ndarray:
    field_set = study.sets["fields"]
    return field_set.agreed[rows] & (field_set.probability[rows] >= threshold)


def cross_validate(study: Study) -> dict:
    """Step 3: nested choice per outer fold, the outer fold's fields named by it; out-of-fold numbers with and
    without the verifier (the shipped rule at the bundle's threshold, and the ensemble's threshold chosen out of fold
    the same way)."""
    settings, field_set = study.settings, study.sets["fields"]
    all_folds = list(range(settings.folds))
    probability = np.full(len(field_set.label), np.nan)
    baseline_named = np.zeros(len(field_set.label), dtype=bool)
    named = np.zeros(len(field_set.label), dtype=bool)
    choices = {}
    for outer in tqdm(all_folds, desc="verifier: outer folds", unit="fold"):
        others = [k for k in all_folds if k != outer]
        chosen = select_variant(study, others, frozenset({outer}))
        rows = np.flatnonzero(study.field_fold == outer)
        variant, (a, b) = chosen["variant"], chosen["calibration"]
        probability[rows] = sigmoid(a * study.raw_scores(variant, study.fit(variant, frozenset({outer})), rows) + b)
        named[rows] = chosen["rule"].names(probability[rows], in_strip_of(study, rows))
        inner_rows = np.flatnonzero(np.isin(study.field_fold, others))
        agreed_inner = inner_rows[field_set.agreed[inner_rows]]
        ensemble_rule, _ = choose_rule(study, agreed_inner, field_set.probability[agreed_inner])
        baseline_named[rows] = baseline_rule(study, rows, ensemble_rule.threshold)
        choices[str(outer)] = {
            "variant": variant.key,
            "calibration": chosen["calibration"].tolist(),
            "threshold": chosen["rule"].threshold,
            "strip_threshold": chosen["rule"].strip_threshold,
            "inner_f1": chosen["inner_f1"],
            "inner_f1_by_variant": chosen["trials"],
            "ensemble_threshold": ensemble_rule.threshold,
        }
    return {"probability": probability, "named": named, "baseline_named": baseline_named, "choices": choices}


def report_of(study: Study, cv: dict, shipped_threshold: float) -> dict:
    """Out-of-fold counts, F1 and AP with 95% intervals, over all fields and the never-trained ones."""
    settings, field_set = study.settings, study.sets["fields"]
    every = np.arange(len(field_set.label))
    shipped = baseline_rule(study, every, shipped_threshold)
    report = {}
    for subset, names in (("all_fields", None), ("never_trained_fields", set(study.never_trained))):
        rows = every if names is None else every[np.isin(field_set.names[field_set.image], sorted(names))]
        part = {}
        for label, mask, scores in (
            ("verifier", cv["named"], cv["probability"]),
            ("ensemble_threshold_out_of_fold", cv["baseline_named"], field_set.probability),
            ("shipped_rule", shipped, field_set.probability),
        ):
            part[label] = summary_with_ci(counts_of(study, rows, mask[rows]), settings) | ap_with_ci(
                study, rows, scores[rows], settings
            )
        part["ceiling_recall_at_floor"] = float(field_set.label[rows].sum()) / sum(
            len(study.fields[n].mitoses_xy_px) for n, _ in field_groups(study, rows)
        )
        report[subset] = part
    return report


def final_verifier(study: Study) -> tuple[VerifierModel, Rule, dict]:
    """Step 4: the variant, calibration and rule chosen on all five folds' out-of-fold points, fitted on all fields."""
    chosen = select_variant(study, list(range(study.settings.folds)), frozenset())
    model = study.fit(chosen["variant"], frozenset())
    model = VerifierModel(**{**vars(model), "calibration": chosen["calibration"]})
    summary = {
        "variant": chosen["variant"].key,
        "calibration": chosen["calibration"].tolist(),
        "out_of_fold_f1": chosen["inner_f1"],
        "out_of_fold_f1_by_variant": chosen["trials"],
    }
    return model, chosen["rule"], summary


def crop_recall(study: Study, model: VerifierModel, rule: Rule, shipped_threshold: float) -> dict:
    """Per dataset, over the crops the dense nets never trained on: the share whose centre is named, today and with
    the verifier (the crop's centre lies far from its edges: the interior threshold applies)."""
    crops = study.sets["crops"]
    rows = np.flatnonzero(crops.held_out[crops.image])
    today = crops.agreed[rows] & (crops.probability[rows] >= shipped_threshold)
    verified = model.probability(study.features[("crops", model.crop_px)][rows]) >= rule.threshold
    out = {}
    for dataset in sorted(set(crops.groups.tolist())):
        images = np.flatnonzero((crops.groups == dataset) & crops.held_out)
        in_dataset = np.isin(crops.image[rows], images)
        total = max(len(images), 1)
        out[dataset] = {
            "held_out_crops": int(len(images)),
            "recall_today": float(today[in_dataset].sum()) / total,
            "recall_verifier": float(verified[in_dataset].sum()) / total,
        }
    return out


def tile_false_positives(study: Study, model: VerifierModel, rule: Rule, shipped_threshold: float) -> dict:
    """Points named on the mitosis-free tiles (every one false), on their held-out right part and on the part the
    verifier trained on."""
    tiles = study.sets["tiles"]
    x = study.features[("tiles", model.crop_px)]
    today = tiles.agreed & (tiles.probability >= shipped_threshold)
    shapes = {t.path.name: (t.height_px, t.width_px) for t in real_data.load_mitosis_free_tiles(study.root)}
    shape_of = np.array([shapes[str(tiles.names[i])] for i in tiles.image]).reshape(-1, 2)
    in_strip = in_border_strip(tiles.xy_px, shape_of[:, 0], shape_of[:, 1])
    verified = rule.names(model.probability(x), in_strip) if len(x) else np.zeros(0, dtype=bool)
    held_out = ~study.tile_train
    return {
        "held_out_right_part": {"today": int(today[held_out].sum()), "verifier": int(verified[held_out].sum())},
        "training_left_part": {"today": int(today[~held_out].sum()), "verifier": int(verified[~held_out].sum())},
    }


def precision_recall_panels(study: Study, cv: dict) -> list[PrecisionRecallPanel]:
    """Out-of-fold precision-recall curves of the fields' candidates, with and without the verifier, and the point of
    the verifier's rule: on all fields, and on the fields the dense nets never trained on (`training.figures` draws
    them)."""
    field_set = study.sets["fields"]
    every = np.arange(len(field_set.label))
    panels = []
    for title, names in (
        ("35 MiDeSeC fields", None),
        ("10 fields the dense nets never trained on", study.never_trained),
    ):
        rows = every if names is None else every[np.isin(field_set.names[field_set.image], names)]
        curves = []
        for label, scores, style in (
            ("verifier (out of fold)", cv["probability"], "-"),
            ("dense nets: ensemble probability", field_set.probability, "--"),
        ):
            images = [
                match_image(
                    study.fields[name].mitoses_xy_px * DEFAULT_SPACING_MM,
                    field_set.xy_px[picked] * DEFAULT_SPACING_MM,
                    scores[picked],
                )
                for name, picked in field_groups(study, rows)
            ]
            curve = precision_recall(images)
            curves.append(PrecisionRecallCurve(f"{label}, AP {curve.ap:.3f}", curve.recall, curve.precision, style))
        counts = summarise(counts_of(study, rows, cv["named"][rows]))
        panels.append(PrecisionRecallPanel(title, curves, counts["recall"], counts["precision"], counts["f1"]))
    return panels


def write_verifier_bundle(source: Path, out: Path, model: VerifierModel, rule: Rule, extra: dict) -> Path:
    """A copy of the bundle `source` with the verifier added (weights, checksum, rule, how it was measured)."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("README.md", "*.png"))
    sha256 = save_verifier(model, out / VERIFIER_FILE)
    entry = VerifierEntry(VERIFIER_FILE, sha256, model.kind, model.crop_px, rule.threshold, rule.strip_threshold)
    payload = json.loads((out / BUNDLE_FILE).read_text())
    payload["verifier"] = entry.to_json() | {"validation": extra}
    write_json_atomically(payload, out / BUNDLE_FILE)
    return out


ARMS = {"off": (False,), "on": (True,), "both": (False, True)}
DEFAULTS = {"crop-positives": "off", "mined-positives": "off"}


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = command_parser("training.verifier", __doc__, add_help, argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the real offline folder (../shared/data/real)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (rerun the same command to resume)")
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE_DIR, help="the dense nets' bundle")
    parser.add_argument("--crop-limit", type=int, help="only the first N mitosis crops (a quick run)")
    parser.add_argument("--bootstrap", type=int, default=VerifierSettings.bootstrap)
    parser.add_argument(
        "--kinds", nargs="+", default=list(VerifierSettings.kinds), choices=["logistic", "trees"], help="model kinds"
    )
    mined = "the mitoses mined from unlabeled fields (Akram et al. 2018)"
    for name, what in (("crop-positives", "the mitosis crops"), ("mined-positives", mined)):
        parser.add_argument(
            f"--{name}",
            choices=["off", "on", "both"],
            default=DEFAULTS[name],
            help=f"{what} as extra positives: off, on, or both (the folds choose)",
        )
    parser.add_argument(
        "--crops-px",
        nargs="+",
        type=int,
        default=[c or 0 for c in VerifierSettings.crops_px],
        help="crop sides to try (0: no pixel features)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    settings = VerifierSettings(
        kinds=tuple(args.kinds),
        crops_px=tuple(c or None for c in args.crops_px),
        crop_positives=ARMS[args.crop_positives],
        mined_positives=ARMS[args.mined_positives],
        crop_limit=args.crop_limit,
        bootstrap=args.bootstrap,
        shipped_threshold=read_bundle(args.bundle).threshold,
    )
    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    bundle = read_bundle(args.bundle)
    from model import Detector  # torch: only to make the candidates

    candidates_folder = args.out / "candidates"
    sets_missing = any(not (candidates_folder / f"{s}.npz").is_file() for s in SETS)
    detector = Detector(args.bundle) if sets_missing else None
    names = [f.path.name for f in real_data.load_midesec_fields(args.data)]
    sets = collect(detector, args.data, candidates_folder, midesec_validation_names(names), settings.crop_limit)
    features = cached_features(sets, args.data, args.out / "features", settings.crops_px)
    study = Study(sets, features, args.data, settings)
    cv = cross_validate(study)
    report = report_of(study, cv, bundle.threshold)
    model, rule, final = final_verifier(study)
    report |= {
        "choices_per_outer_fold": cv["choices"],
        "shipped": final | asdict(rule),
        "crop_recall": crop_recall(study, model, rule, bundle.threshold),
        "mitosis_free_tiles_false_positives": tile_false_positives(study, model, rule, bundle.threshold),
        "candidates": {s: {"candidates": int(len(sets[s].label)), "positives": int(sets[s].label.sum())} for s in SETS},
        "settings": asdict(settings),
        "command": "python -m training.verifier --data DATA --out OUT",
        "seconds": round(time.time() - started, 1),
    }
    write_json_atomically(report, args.out / "report.json")
    plot_precision_recall(precision_recall_panels(study, cv), args.out / "precision_recall.png")
    bundle_dir = write_verifier_bundle(
        args.bundle,
        args.out / "bundle",
        model,
        rule,
        {
            "method": "5-fold cross-validation by field over the 35 MiDeSeC fields, nested choice (training.verifier)",
            "out_of_fold": report["all_fields"]["verifier"],
            "never_trained_fields": report["never_trained_fields"]["verifier"],
            "chosen": final,
        },
    )
    for subset in ("all_fields", "never_trained_fields"):
        v, s = report[subset]["verifier"], report[subset]["shipped_rule"]
        print(
            f"{subset}: verifier F1 {v['f1']:.3f} ({v['f1_ci95'][0]:.3f}-{v['f1_ci95'][1]:.3f}), AP {v['ap']:.3f}; "
            f"shipped rule F1 {s['f1']:.3f}, AP {s['ap']:.3f}; FP/mm2 strip {v['fp_per_mm2_strip']:.1f} vs interior "
            f"{v['fp_per_mm2_interior']:.1f}"
        )
    print(f"shipped verifier: {final['variant']}, threshold {rule.threshold:.3f} (strip {rule.strip_threshold:.3f})")
    print(f"bundle: {bundle_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
