"""Field cross-validation: folds, nested choice, counts by border strip, bootstrap (synthetic points, no ../shared)."""

from __future__ import annotations

import numpy as np
import pytest

from model.geometry import BORDER_STRIP_PX
from training.validation.cv_report import (
    OutOfFoldField,
    bootstrap_f1,
    cross_validated,
    field_counts,
    nested_choice,
    subset_report,
)
from training.validation.field_cv import CvSettings, most_chosen_iteration, snapshot_iterations, split_folds

SPACING_MM = 0.00025  # 7.5 um = 30 px


def make_field(name: str, fold: int, mitoses: list, points: dict[int, list], shape=(1000, 1000)) -> OutOfFoldField:
    return OutOfFoldField(
        name=name,
        fold=fold,
        shape_px=shape,
        spacing_mm=SPACING_MM,
        mitoses_xy_px=np.asarray(mitoses, dtype=float).reshape(-1, 2),
        points={
            it: (np.asarray([p[:2] for p in pts], float).reshape(-1, 2), np.asarray([p[2] for p in pts], float))
            for it, pts in points.items()
        },
    )


def test_folds_are_balanced_fixed_and_disjoint():
    names = [f"P{i}.webp" for i in range(35)]
    folds = split_folds(names, 5)
    assert [len(f) for f in folds] == [7] * 5
    assert sorted(sum(folds, [])) == sorted(names)
    assert split_folds(list(reversed(names)), 5) == folds  # listing order does not matter
    with pytest.raises(ValueError):
        split_folds(names, 1)


def test_snapshots_always_end_at_the_last_iteration():
    assert snapshot_iterations(CvSettings(iterations=400, snapshot_every=200)) == [200, 400]
    assert snapshot_iterations(CvSettings(iterations=500, snapshot_every=200)) == [200, 400, 500]


def test_counts_split_false_positives_by_border_strip_and_match_within_the_radius():
    field = make_field(
        "f",
        0,
        mitoses=[[500, 500], [10, 500]],
        points={1: [[510, 505, 0.9], [5, 300, 0.95], [700, 700, 0.8], [12, 498, 0.7], [300, 300, 0.2]]},
    )
    counts = field_counts(field, 1, threshold=0.5)
    assert (counts["tp"], counts["fp"], counts["fn"]) == (2, 2, 0)
    assert counts["fp_strip"] == 1 and counts["fp_interior"] == 1  # (5, 300) is in the strip, (700, 700) not
    assert counts["mitoses_strip"] == 1 and counts["tp_strip"] == 1
    inner = (1000 - 2 * BORDER_STRIP_PX) ** 2 * SPACING_MM**2
    assert counts["interior_mm2"] == pytest.approx(inner)
    assert counts["strip_mm2"] + counts["interior_mm2"] == pytest.approx(1000 * 1000 * SPACING_MM**2)
    # a point 31 px away is outside the challenge's 7.5 um (30 px)
    far = make_field("g", 0, mitoses=[[500, 500]], points={1: [[531, 500, 0.9]]})
    assert field_counts(far, 1, 0.5)["tp"] == 0


def test_nested_choice_never_looks_at_the_fold_it_is_applied_to():
    # folds 1 and 2 say "iteration 200, high threshold"; fold 0 alone would prefer iteration 100
    fields = [
        make_field("a", 0, [[100, 100]], {100: [[100, 100, 0.6]], 200: [[900, 900, 0.99]]}),
        make_field("b", 1, [[100, 100]], {100: [[900, 900, 0.95], [100, 100, 0.6]], 200: [[100, 100, 0.9]]}),
        make_field("c", 2, [[100, 100]], {100: [[900, 900, 0.95], [100, 100, 0.6]], 200: [[100, 100, 0.9]]}),
    ]
    choice = nested_choice(fields)
    assert choice[0]["iteration"] == 200 and choice[0]["threshold"] == pytest.approx(0.9)
    report = cross_validated(fields, resamples=200)
    row = next(r for r in report["per_field"] if r["name"] == "a")
    assert (row["tp"], row["fp"], row["fn"]) == (0, 1, 1)  # fold 0 pays for the choice the others made
    # folds 1 and 2, judged on a field where iteration 100 is right, keep 100 at 0.6 and pay one FP each
    assert choice[1]["iteration"] == choice[2]["iteration"] == 100
    assert report["nested"]["f1"] == pytest.approx(2 * 2 / (2 * 2 + 3 + 1))
    assert report["pooled_best_per_checkpoint"]["100"]["f1"] == pytest.approx(0.75)  # optimistic, reported apart
    assert subset_report(report, ["b", "c"])["f1"] == pytest.approx(2 / 3)


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_fields():
    rng = np.random.default_rng(0)
    few = rng.integers(0, 6, size=(7, 3))
    many = np.tile(few, (10, 1))
    low_few, high_few = bootstrap_f1(few, 1000)
    low_many, high_many = bootstrap_f1(many, 1000)
    tp, fp, fn = few.sum(axis=0)
    estimate = 2 * tp / (2 * tp + fp + fn)
    assert low_few <= estimate <= high_few
    assert high_many - low_many < high_few - low_few


def test_the_final_checkpoint_is_the_one_most_folds_chose():
    choice = {"0": {"iteration": 200}, "1": {"iteration": 400}, "2": {"iteration": 400}, "3": {"iteration": 200}}
    assert most_chosen_iteration(choice) == 400  # tie: the longer training
    assert most_chosen_iteration({"0": {"iteration": 0}, "1": {"iteration": 0}, "2": {"iteration": 400}}) == 0


def test_out_of_fold_fields_round_trip_through_json():
    field = make_field("a", 3, [[1, 2]], {0: [], 200: [[3, 4, 0.5]]})
    again = OutOfFoldField.from_json(field.to_json())
    assert again.name == "a" and again.fold == 3 and again.shape_px == (1000, 1000)
    assert again.points[0][0].shape == (0, 2)
    np.testing.assert_array_equal(again.points[200][0], [[3, 4]])


def test_hard_negatives_are_the_top_k_without_suspects_plus_the_border_strip():
    from training.data.sources import NegativeSites, TrainingData
    from training.validation.field_cv import fold_negatives

    sites = (
        NegativeSites.build(0, np.array([[100, 100], [100, 200], [100, 300]]), "nucleus", "MiDeSeC")
        .concatenate(NegativeSites.build(1, np.array([[50, 50], [60, 60]]), "grid", "MITOS 2012"))
        .concatenate(NegativeSites.build(0, np.array([[7, 100]]), "border", "MiDeSeC"))
    )
    data = TrainingData(
        source="test",
        images=[],
        positives_train=np.zeros((0, 128, 128, 3), np.uint8),
        positive_train_groups=np.array([]),
        positives_val=np.zeros((0, 128, 128, 3), np.uint8),
        positive_val_groups=[],
        negatives_train=sites,
        negatives_val=NegativeSites.empty(),
        unlabeled=[1],
        validation_regions=[],
        training_pixels=0,
        grid_step_px=32,
    )
    scores = np.array([0.5, 0.9, 0.1, 0.99, 0.7, 0.05])  # site 3: an unlabeled image's likely mitosis
    chosen = fold_negatives(data, scores, k=2, cut=0.95)
    found = zip(chosen.image.tolist(), chosen.row_px.tolist(), chosen.col_px.tolist(), strict=True)
    assert sorted(found) == [
        (0, 7, 100),  # the border site, whatever its score
        (0, 100, 200),  # 0.9
        (1, 60, 60),  # 0.7 (0.99 is a suspect)
    ]
    assert len(fold_negatives(data, scores, k=2, cut=0.95, border=False)) == 2
