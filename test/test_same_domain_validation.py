"""Same-domain validation: the held-out composite set holds only held-out crops in held-out tile columns, the default
composite output is unchanged by the new options, and the benchmark's counts are the challenge's counts."""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from benchmarks.same_domain_validation import SPACING_MM, ensure_dataset, ground_truth, run, score
from evaluation.inputs import read_ground_truth, read_predictions
from evaluation.metrics import detection_counts
from model import Detections
from training.data.composite import TILE_TRAIN_FRACTION, generate_composite, is_held_out_positive
from training.data.real_data import DEFAULT_ROOT, load_mitosis_free_tiles, load_patches, read_image
from training.data.sources import from_real, validation_fold

needs_real_data = pytest.mark.skipif(
    not (DEFAULT_ROOT / "patches.csv").is_file(),
    reason=f"real data not found at {DEFAULT_ROOT} (shared data folder next to the repo)",
)


def _hashes(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_held_out_definitions_are_the_training_pipelines():
    assert TILE_TRAIN_FRACTION == inspect.signature(from_real).parameters["train_fraction"].default


@needs_real_data
def test_default_output_unchanged_by_new_options(tmp_path):
    common = {"n_images": 2, "seed": 0, "size_px": 512, "mitoses_per_image": 3, "progress": False}
    generate_composite(tmp_path / "plain", **common)
    generate_composite(tmp_path / "explicit", **common, patch_filter=None, held_out_only=False)
    # accepting every crop and writing provenance must not perturb the random stream either
    generate_composite(
        tmp_path / "accept_all",
        **common,
        patch_filter=lambda record: True,
        provenance_path=tmp_path / "provenance.json",
    )
    reference = _hashes(tmp_path / "plain")
    assert set(reference) == {"001.tiff", "002.tiff", "MIDOG2022_training.json"}
    assert _hashes(tmp_path / "explicit") == reference
    assert _hashes(tmp_path / "accept_all") == reference


@needs_real_data
def test_patch_filter_and_held_out_backgrounds(tmp_path):
    def only_held_out_tupac(record):
        return record.dataset == "TUPAC16" and is_held_out_positive(record)

    allowed = {
        record.path.relative_to(DEFAULT_ROOT).as_posix()
        for record in load_patches(check_files=False)
        if only_held_out_tupac(record)
    }
    provenance_path = tmp_path / "provenance.json"
    annotation = generate_composite(
        tmp_path / "set",
        2,
        seed=3,
        size_px=512,
        mitoses_per_image=3,
        progress=False,
        patch_filter=only_held_out_tupac,
        held_out_only=True,
        provenance_path=provenance_path,
    )
    provenance = json.loads(provenance_path.read_text())
    tiles = {tile.path.name: tile for tile in load_mitosis_free_tiles()}
    pasted = [m for image in provenance["images"] for m in image["mitoses"]]
    assert pasted and all(m["patch"] in allowed and m["dataset"] == "TUPAC16" for m in pasted)
    assert all(validation_fold(m["group"]) for m in pasted)
    for image in provenance["images"]:
        background = image["background"]
        tile = tiles[background["file"]]  # a tile, never a MITOS 2012 field
        assert background["kind"] == "tile"
        assert background["x0_px"] >= int(TILE_TRAIN_FRACTION * tile.width_px)
        assert background["x0_px"] + 512 <= tile.width_px and background["y0_px"] + 512 <= tile.height_px
    # the recorded origin is true: away from the pastes the image is that window of the tile, pixel for pixel
    first = provenance["images"][0]
    window = read_image(tiles[first["background"]["file"]].path)[
        first["background"]["y0_px"] : first["background"]["y0_px"] + 512,
        first["background"]["x0_px"] : first["background"]["x0_px"] + 512,
    ]
    composite = tifffile.imread(tmp_path / "set" / first["file_name"])
    untouched = np.ones((512, 512), bool)
    for m in first["mitoses"]:
        untouched[max(0, m["y_px"] - 64) : m["y_px"] + 64, max(0, m["x_px"] - 64) : m["x_px"] + 64] = False
    assert untouched.any() and np.array_equal(composite[untouched], window[untouched])
    # provenance lists the mitoses in annotation order
    names, targets, datasets = ground_truth(annotation, provenance)
    assert names == ["001.tiff", "002.tiff"] and sum(map(len, targets)) == len(pasted)


def _detections(xy_mm, probability, agreed, threshold=0.5) -> Detections:
    xy_mm, probability, agreed = np.asarray(xy_mm, float).reshape(-1, 2), np.asarray(probability), np.asarray(agreed)
    return Detections(xy_mm / SPACING_MM[0], xy_mm, probability, agreed, agreed & (probability >= threshold))


def test_score_rules_on_hand_made_detections():
    targets = [np.array([[0.10, 0.10], [0.20, 0.20], [0.30, 0.30]]), np.array([[0.10, 0.10]])]
    datasets = [["MIDOG21", "TUPAC16", "MIDOG++"], ["TUPAC16"]]
    detections = [
        # hit (agreed, 0.9); hit but below threshold (0.4); not agreed (0.99, never counts); far FP (0.8)
        _detections(
            [[0.101, 0.10], [0.20, 0.203], [0.30, 0.30], [0.5, 0.5]], [0.9, 0.4, 0.99, 0.8], [True, True, False, True]
        ),
        _detections(np.zeros((0, 2)), [], np.zeros(0, bool)),
    ]
    report = score(targets, datasets, detections, threshold=0.5)
    at = report["at_threshold"]
    assert (at["tp"], at["fp"], at["fn"]) == (1, 1, 3) and at["fp_per_image"] == 0.5
    assert at["recall_by_dataset"] == {
        "MIDOG++": {"n": 1, "tp": 0, "recall": 0.0},
        "MIDOG21": {"n": 1, "tp": 1, "recall": 1.0},
        "TUPAC16": {"n": 2, "tp": 0, "recall": 0.0},
    }
    best = report["best_threshold"]  # keeping 0.4 too: TP 2, FP 1, FN 2 -> F1 4/7 > 2/5
    assert best["threshold"] == 0.4 and (best["tp"], best["fp"], best["fn"]) == (2, 1, 2)
    assert best["recall_by_dataset"]["TUPAC16"]["tp"] == 1


@needs_real_data
def test_benchmark_counts_are_detection_counts(random_bundle_dir, tmp_path):
    report = run(random_bundle_dir, tmp_path, n_images=2, seed=1, size_px=512, mitoses_per_image=3, progress=False)
    dataset = tmp_path / "dataset"
    stamp = {p.name: p.stat().st_mtime_ns for p in dataset.iterdir()}
    saved = json.loads((tmp_path / "same_domain.json").read_text())
    assert saved["at_threshold"] == report["at_threshold"]
    gt, _ = read_ground_truth(next(dataset.glob("*.json")), spacing_um=SPACING_MM[0] * 1000)
    total = np.zeros(3, int)
    for entry in report["per_image"]:
        stem = Path(entry["file_name"]).stem
        predictions = read_predictions(tmp_path / "predictions" / f"{stem}.json")
        counts = detection_counts(gt[stem].xy_mm, predictions.xy_mm[predictions.is_mitosis])
        assert (entry["tp"], entry["fp"], entry["fn"]) == (counts.tp, counts.fp, counts.fn)
        total += (counts.tp, counts.fp, counts.fn)
    at = report["at_threshold"]
    assert tuple(total) == (at["tp"], at["fp"], at["fn"]) and at["tp"] + at["fn"] == report["n_mitoses"] > 0
    assert sum(entry["n"] for entry in at["recall_by_dataset"].values()) == report["n_mitoses"]
    # the set is cached: same parameters reuse it, other parameters regenerate it
    ensure_dataset(tmp_path, n_images=2, seed=1, size_px=512, mitoses_per_image=3, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in dataset.iterdir()} == stamp
    _, provenance = ensure_dataset(tmp_path, n_images=1, seed=1, size_px=512, mitoses_per_image=3, progress=False)
    assert provenance["n_images"] == 1 and sorted(p.name for p in dataset.iterdir()) == [
        "001.tiff",
        "MIDOG2022_training.json",
    ]
