"""The verifier (`model.verifier`): its stored models compute what sklearn fitted, its features read real pixels
only, the bundle verifies it, and `Detector(verifier=False)` gives the dense nets' output exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import REAL_DATA

from model import Detector
from model.bundle import BUNDLE_FILE, DEFAULT_BUNDLE_DIR, BundleError, load_verifier, read_bundle
from model.candidates import EnsembleDetections
from model.geometry import BORDER_STRIP_PX
from model.verifier import (
    PIXEL_FEATURES,
    Verifier,
    VerifierModel,
    candidate_features,
    feature_names,
    load_verifier_model,
    pixel_features,
    save_verifier,
)
from training.verifier import Variant, VerifierSettings, classifier, fit_model, platt

has_real_data = pytest.mark.skipif(
    not (REAL_DATA / "fields" / "midesec").is_dir(), reason="../shared/data/real not available"
)


def _toy(seed: int = 0, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    y = ((x[:, 0] + 0.5 * x[:, 1] * x[:, 2] + rng.normal(scale=0.5, size=n)) > 0).astype(int)
    return x, y


@pytest.mark.parametrize("kind", ["logistic", "trees"])
def test_stored_model_computes_what_sklearn_fitted(kind, tmp_path):
    x, y = _toy()
    settings = VerifierSettings()
    model = fit_model(Variant(kind, None, False), x, y, np.ones(len(y)), settings)
    z = (x - model.mean) / model.scale
    expected = classifier(kind, settings).fit(z, y).decision_function(z)  # sklearn's own prediction
    np.testing.assert_allclose(model.raw(x), expected, rtol=1e-6, atol=1e-6)
    model.calibration = platt(model.raw(x), y)
    path = tmp_path / "verifier.safetensors"
    save_verifier(model, path)
    loaded = load_verifier_model(path, kind, None)
    np.testing.assert_array_equal(loaded.probability(x), model.probability(x))
    assert loaded.probability(x)[y == 1].mean() > loaded.probability(x)[y == 0].mean() + 0.3


def test_platt_calibration_is_calibrated_on_what_it_saw():
    rng = np.random.default_rng(1)
    raw = rng.normal(size=4000) * 3
    label = (rng.random(4000) < 1 / (1 + np.exp(-(0.5 * raw - 1)))).astype(int)
    a, b = platt(raw, label)
    assert abs(a - 0.5) < 0.08 and abs(b + 1) < 0.15


def _dark_disk(size: int, centre_xy: tuple[float, float], radius: float) -> np.ndarray:
    rows, cols = np.mgrid[0:size, 0:size]
    image = np.full((size, size, 3), (230, 200, 220), dtype=np.uint8)
    inside = np.hypot(cols - centre_xy[0], rows - centre_xy[1]) <= radius
    image[inside] = (60, 30, 120)
    return image


def test_pixel_features_see_real_pixels_only():
    """A half nucleus cut by the image edge is half a nucleus to the verifier (the dense nets' mirrored margin makes
    it a whole one): its dark share in the disk is the real half's, the outside is left out, not mirrored."""
    whole = _dark_disk(200, (100, 100), 10)
    at_edge = whole[:, 100:]  # the disk cut through its centre by the left edge
    dark = PIXEL_FEATURES.index("dark_disk_fraction")
    inside = pixel_features(whole, np.array([[100.0, 100.0]]), 64)[0]
    edge = pixel_features(at_edge, np.array([[0.0, 100.0]]), 64)[0]
    # the in-image half of the disk is all nucleus: the same share as the whole disk, not diluted by glass
    assert edge[dark] == pytest.approx(inside[dark], abs=0.05)
    mirrored = np.pad(at_edge, ((0, 0), (100, 0), (0, 0)), mode="reflect")  # what the dense nets' margin shows
    np.testing.assert_allclose(pixel_features(mirrored, np.array([[100.0, 100.0]]), 64)[0], inside, atol=0.05)
    points = EnsembleDetections(
        xy_px=np.array([[0.0, 100.0], [50.0, 100.0]]),
        probability=np.array([0.9, 0.9]),
        agreed=np.array([True, True]),
        probability_a=np.array([0.9, 0.9]),
        probability_b=np.array([0.9, 0.9]),
        neighbourhood=np.array([[0.5, 0.5], [0.5, 0.5]]),
    )
    features = candidate_features(at_edge, points, 64)
    assert features.shape == (2, len(feature_names(64)))
    edge_column = feature_names(64).index("edge_distance")
    assert features[0, edge_column] == 0.0 and features[1, edge_column] == 1.0  # 50 px >= the 39 px strip


def test_strip_threshold_applies_in_the_border_strip_only():
    model = VerifierModel("logistic", None, np.zeros(5), np.ones(5), np.array([1.0, 0.0]), np.zeros(5), 0.0)
    verifier = Verifier(model, threshold=0.5, strip_threshold=0.9)
    xy = np.array([[BORDER_STRIP_PX - 1.0, 500.0], [BORDER_STRIP_PX + 1.0, 500.0]])
    assert verifier.names(np.array([0.7, 0.7]), xy, (1000, 1000)).tolist() == [False, True]
    assert verifier.names(np.array([0.95, 0.4]), xy, (1000, 1000)).tolist() == [True, False]


def test_the_shipped_verifier_is_listed_and_verified(tmp_path):
    bundle = read_bundle(DEFAULT_BUNDLE_DIR)
    assert bundle.verifier is not None, "the shipped bundle has a verifier"
    verifier = load_verifier(bundle, DEFAULT_BUNDLE_DIR)
    assert 0 < verifier.threshold < 1 and verifier.threshold <= verifier.strip_threshold
    copy = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE_DIR, copy)
    weights = copy / bundle.verifier.file
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum"):
        load_verifier(read_bundle(copy), copy)
    payload = json.loads((copy / BUNDLE_FILE).read_text())
    del payload["verifier"]
    (copy / BUNDLE_FILE).write_text(json.dumps(payload))
    assert read_bundle(copy).verifier is None


@has_real_data
def test_no_verifier_is_the_dense_nets_output_exactly(tmp_path):
    """`Detector(verifier=False)` on the shipped bundle equals the same bundle without its verifier entry; with the
    verifier the points are the same candidates, re-scored and re-named."""
    from training.data.real_data import load_midesec_fields, read_image

    without = tmp_path / "without"
    shutil.copytree(DEFAULT_BUNDLE_DIR, without)
    payload = json.loads((without / BUNDLE_FILE).read_text())
    del payload["verifier"]
    (without / BUNDLE_FILE).write_text(json.dumps(payload))
    field = load_midesec_fields(REAL_DATA)[0]
    rgb = read_image(field.path)
    today = Detector(without).detect(rgb)
    off = Detector(DEFAULT_BUNDLE_DIR, verifier=False).detect(rgb)
    for name in ("xy_px", "xy_mm", "probability", "agreed", "is_mitosis"):
        np.testing.assert_array_equal(getattr(off, name), getattr(today, name))
    on = Detector(DEFAULT_BUNDLE_DIR).detect(rgb)
    assert sorted(map(tuple, on.xy_px)) == sorted(map(tuple, today.xy_px))
    assert not np.array_equal(np.sort(on.probability), np.sort(today.probability))
    assert np.all(np.diff(on.probability) <= 0)
    verifier = load_verifier(read_bundle(DEFAULT_BUNDLE_DIR), DEFAULT_BUNDLE_DIR)
    np.testing.assert_array_equal(on.is_mitosis, verifier.names(on.probability, on.xy_px, rgb.shape[:2]))


def _real_like_folder(root: Path, fields: int = 6) -> None:
    """The layout of ../shared/data/real (README there), filled with synthetic images: MiDeSeC-like fields with their
    annotations, mitosis crops and a mitosis-free tile."""
    from PIL import Image

    from training.data.synthetic import SCANNERS, TUMOUR_TYPES, render_image

    rng = np.random.default_rng(5)
    folder = root / "fields" / "midesec"
    folder.mkdir(parents=True)
    images, annotations, crops = [], [], []
    for index in range(fields):
        rendered = render_image(rng, 320, 320, TUMOUR_TYPES[0], SCANNERS[index % len(SCANNERS)])
        name = f"P0_{index:02d}.webp"
        Image.fromarray(rendered.pixels).save(folder / name, lossless=True)
        images.append({"id": index + 1, "file_name": name, "width": 320, "height": 320})
        for x, y, category in rendered.annotations:
            if category == 1:
                annotations.append({"bbox": [x - 25, y - 25, x + 25, y + 25], "category_id": 1, "image_id": index + 1})
                if 64 <= x < 256 and 64 <= y < 256:
                    crops.append(rendered.pixels[y - 64 : y + 64, x - 64 : x + 64])
    payload = {"images": images, "annotations": [a | {"id": i} for i, a in enumerate(annotations)], "categories": []}
    (folder / "midesec.json").write_text(json.dumps(payload))
    patches = root / "patches" / "amibr" / "normal"
    patches.mkdir(parents=True)
    rows = ["path,label,source,dataset,slide,x,y,subclass,size"]
    for index, crop in enumerate(crops):
        Image.fromarray(np.ascontiguousarray(crop)).save(patches / f"MIDOG21_{index}.webp", lossless=True)
        rows.append(f"patches/amibr/normal/MIDOG21_{index}.webp,1,AMi-Br,MIDOG21,{index:03d}.tiff,0,0,normal,128")
    (root / "patches.csv").write_text("\n".join(rows) + "\n")
    tiles = root / "tiles" / "cmc-no-mitosis"
    tiles.mkdir(parents=True)
    tile = render_image(rng, 480, 320, TUMOUR_TYPES[1], SCANNERS[0], annotate=False).pixels
    Image.fromarray(tile).save(tiles / "tile_0.jpg", quality=95)
    unlabeled = root / "unlabeled" / "mitos2012"
    unlabeled.mkdir(parents=True)
    field = render_image(rng, 300, 300, TUMOUR_TYPES[0], SCANNERS[1], annotate=False).pixels
    Image.fromarray(field).save(unlabeled / "A00_00.jpg", quality=95)


def test_training_runs_end_to_end_on_a_tiny_folder_and_resumes(tmp_path, capsys):
    """`python -m training.verifier` on a tiny synthetic folder of the real data's layout: candidates, features,
    nested cross-validation, report, plot and a bundle the detector loads (the numbers mean nothing here)."""
    from conftest import assert_drawn_png

    from training import verifier as training_verifier

    data, out = tmp_path / "data", tmp_path / "run"
    _real_like_folder(data)
    argv = ["--data", str(data), "--out", str(out), "--kinds", "logistic", "--crops-px", "0", "32"]  # trees: above
    assert training_verifier.main([*argv, "--bootstrap", "20"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["all_fields"]) >= {"verifier", "shipped_rule", "ensemble_threshold_out_of_fold"}
    assert len(report["choices_per_outer_fold"]) == 5
    assert report["candidates"]["fields"]["candidates"] > 0
    assert_drawn_png(out / "precision_recall.png")
    bundle = read_bundle(out / "bundle")
    assert bundle.verifier is not None and bundle.verifier.kind in ("logistic", "trees")
    stamp = (out / "candidates" / "fields.npz").stat().st_mtime_ns
    assert training_verifier.main([*argv, "--bootstrap", "20"]) == 0  # resumes: candidates are not made again
    assert (out / "candidates" / "fields.npz").stat().st_mtime_ns == stamp
    field = data / "fields" / "midesec" / "P0_00.webp"
    from training.data.real_data import read_image

    found = Detector(out / "bundle").detect(read_image(field))
    assert np.all((found.probability >= 0) & (found.probability <= 1))
