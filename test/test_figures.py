"""Report figures: each writes a PNG of the expected size from small made-up inputs; the augmentation grid is seeded."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from model.bundle import POLICY_NAMES
from training.augment import POLICIES
from training.data.real_data import DEFAULT_ROOT
from training.figures import (
    CURVES_SIZE_PX,
    HNM_SIZE_PX,
    augmentation_grid_size_px,
    describe_policy,
    main,
    pick_example_patches,
    plot_augmentation_grid,
    plot_hnm_search,
    plot_training_curves,
)


def _png(path) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image)


def _size(array: np.ndarray) -> tuple[int, int]:
    return array.shape[1], array.shape[0]


TAB_RGB = {"C0": (31, 119, 180), "C1": (255, 127, 14), "tab:red": (214, 39, 40), "tab:blue": (31, 119, 180)}
"""matplotlib's default colours, to tell which series a figure actually drew."""


def _pixels_of(array: np.ndarray, colour: str) -> int:
    """Pixels within a few levels of a named colour (anti-aliased edges aside)."""
    rgb = array[..., :3].astype(int) if array.ndim == 3 else np.asarray(Image.fromarray(array).convert("RGB"), int)
    return int((np.abs(rgb - np.array(TAB_RGB[colour])).max(axis=-1) <= 6).sum())


def _metrics(path, rows: int, seed: int):
    rng = np.random.default_rng(seed)
    iteration = np.arange(1, rows + 1) * 100
    pd.DataFrame(
        {
            "iteration": iteration,
            "train_loss": np.exp(-iteration / 500) + rng.uniform(0, 0.05, rows),
            "val_loss": np.exp(-iteration / 600) + rng.uniform(0, 0.05, rows),
            "val_ap": 1 - np.exp(-iteration / 400),
            "lr": 1e-3,
            "seconds": iteration * 0.1,
        }
    ).to_csv(path, index=False)
    return path


def test_training_curves_several_runs_and_a_single_row(tmp_path):
    runs = [_metrics(tmp_path / "a.csv", 8, 0), _metrics(tmp_path / "b.csv", 5, 1)]
    plot_training_curves(runs, tmp_path / "curves.png", labels=["policy A", "policy B"])
    both = _png(tmp_path / "curves.png")
    assert _size(both) == CURVES_SIZE_PX
    assert _pixels_of(both, "C0") > 200 and _pixels_of(both, "C1") > 200  # one colour per run, both drawn

    plot_training_curves(runs[0], tmp_path / "first.png")
    first = _png(tmp_path / "first.png")
    assert _pixels_of(first, "C0") > 200 and _pixels_of(first, "C1") == 0

    plot_training_curves(_metrics(tmp_path / "one.csv", 1, 2), tmp_path / "one.png")
    one = _png(tmp_path / "one.png")
    assert _size(one) == CURVES_SIZE_PX and _pixels_of(one, "C0") > 20  # a single row is still visible (markers)


def test_training_curves_reject_missing_columns(tmp_path):
    pd.DataFrame({"iteration": [1], "train_loss": [0.5]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="missing column"):
        plot_training_curves(tmp_path / "bad.csv", tmp_path / "bad.png")


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    """Four made-up 128 px crops: a dark blob on a pinkish textured background."""
    rng = np.random.default_rng(0)
    base = np.array([225, 170, 200], np.float32) + rng.normal(0, 20, (4, 128, 128, 3))
    y, x = np.mgrid[:128, :128]
    blob = ((y - 64) ** 2 + (x - 60) ** 2 < 15**2)[None, ..., None]
    return np.clip(np.where(blob, base * 0.4, base), 0, 255).astype(np.uint8)


def test_augmentation_grid_is_seeded(crops, tmp_path):
    plot_augmentation_grid(crops, POLICY_NAMES[0], tmp_path / "a0.png", n_variants=3, seed=0)
    plot_augmentation_grid(crops, POLICY_NAMES[0], tmp_path / "a0_again.png", n_variants=3, seed=0)
    plot_augmentation_grid(crops, POLICY_NAMES[0], tmp_path / "a1.png", n_variants=3, seed=1)
    first, again, other = (_png(tmp_path / name) for name in ("a0.png", "a0_again.png", "a1.png"))
    assert _size(first) == augmentation_grid_size_px(4, 3)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_augmentation_grid_policy_b_with_labels(crops, tmp_path):
    plot_augmentation_grid(crops[:2], POLICY_NAMES[1], tmp_path / "b.png", n_variants=2, row_labels=["one", "two"])
    assert _size(_png(tmp_path / "b.png")) == augmentation_grid_size_px(2, 2)
    with pytest.raises(ValueError, match="unknown policy"):
        plot_augmentation_grid(crops, "C", tmp_path / "c.png")


def test_policy_descriptions_name_the_table_1_transforms():
    policy_a, policy_b = (POLICIES[name] for name in POLICY_NAMES)
    assert "hue p=0.8 0..360°" in describe_policy(policy_a)
    assert "gamma" not in describe_policy(policy_a)
    assert "hue p=0.5 ±60°" in describe_policy(policy_b) and "gamma p=0.5" in describe_policy(policy_b)


def _search(seeds: int, all_negatives: bool) -> dict:
    rng = np.random.default_rng(seeds)
    points = []
    for k in (100, 1000, 10000):
        for selection, base in (("hard", 0.85), ("random", 0.8)):
            ap = (base + 0.02 * np.log10(k) + rng.normal(0, 0.01, seeds)).tolist()
            points.append(
                {
                    "k": k,
                    "selection": selection,
                    "pixel_fraction": k * 6084 / 1e9,
                    "ap_mean": float(np.mean(ap)),
                    "ap_std": float(np.std(ap)),
                    "ap": ap,
                }
            )
    search = {
        "metric": "patch-level validation AP",
        "n_training_negatives": 20000,
        "training_pixels": 1e9,
        "points": points,
        "k_selected": 1000,
    }
    if all_negatives:
        search["all_negatives"] = {"ap_mean": 0.9, "ap_std": 0.01, "ap": [0.89, 0.91]}
    return search


def test_hnm_search_from_json_file(tmp_path):
    (tmp_path / "search.json").write_text(json.dumps(_search(seeds=3, all_negatives=True)))
    plot_hnm_search(tmp_path / "search.json", tmp_path / "fig2.png")
    figure = _png(tmp_path / "fig2.png")
    assert _size(figure) == HNM_SIZE_PX
    assert _pixels_of(figure, "tab:red") > 100 and _pixels_of(figure, "tab:blue") > 100  # hard and random drawn


def test_hnm_search_without_random_control_draws_no_random_series(tmp_path):
    search = _search(seeds=2, all_negatives=True)
    search["points"] = [point for point in search["points"] if point["selection"] == "hard"]
    plot_hnm_search(search, tmp_path / "fig2.png")
    figure = _png(tmp_path / "fig2.png")
    assert _pixels_of(figure, "tab:red") > 100 and _pixels_of(figure, "tab:blue") == 0


def test_hnm_search_one_seed_without_all_negatives(tmp_path):
    search = _search(seeds=1, all_negatives=False)
    for point in search["points"]:
        del point["ap_std"]  # one seed: no spread, computed as 0
    plot_hnm_search(search, tmp_path / "fig2.png")
    assert _size(_png(tmp_path / "fig2.png")) == HNM_SIZE_PX


def test_command_line_curves_and_hnm(tmp_path):
    metrics = [str(_metrics(tmp_path / "a.csv", 3, 0)), str(_metrics(tmp_path / "b.csv", 3, 1))]
    assert main(["curves", "--metrics", *metrics, "--out", str(tmp_path / "c.png")]) == 0
    (tmp_path / "s.json").write_text(json.dumps(_search(seeds=2, all_negatives=True)))
    assert main(["hnm", "--search", str(tmp_path / "s.json"), "--out", str(tmp_path / "h.png")]) == 0
    assert _size(_png(tmp_path / "c.png")) == CURVES_SIZE_PX
    assert _size(_png(tmp_path / "h.png")) == HNM_SIZE_PX


@pytest.mark.skipif(not (DEFAULT_ROOT / "patches.csv").is_file(), reason="real data not available")
def test_example_patches_are_fixed_and_span_the_datasets():
    first, again = pick_example_patches(DEFAULT_ROOT), pick_example_patches(DEFAULT_ROOT)
    assert [record.path for record in first] == [record.path for record in again]
    assert len(first) == 5 and all(record.label == 1 for record in first)
    assert {record.dataset for record in first} == {"MIDOG21", "MIDOG++", "TUPAC16"}


@pytest.mark.skipif(not (DEFAULT_ROOT / "patches.csv").is_file(), reason="real data not available")
def test_mined_positives_sheet_shows_each_mined_point(tmp_path):
    from conftest import assert_drawn_png

    from training.data.real_data import load_unlabeled_fields
    from training.figures import plot_mined_positives

    name = load_unlabeled_fields(DEFAULT_ROOT)[0].path.name
    mined = [
        {"image": 0, "row_px": 500, "col_px": 700, "probability": 0.97, "image_name": name},
        {"image": 0, "row_px": 3, "col_px": 2080, "probability": 0.99, "image_name": name},  # at a corner
    ]
    (tmp_path / "mined.json").write_text(json.dumps(mined))
    assert plot_mined_positives(tmp_path / "mined.json", DEFAULT_ROOT, tmp_path / "sheet.png", columns=2) == 2
    assert_drawn_png(tmp_path / "sheet.png")
    assert Image.open(tmp_path / "sheet.png").size == (260, 130)
