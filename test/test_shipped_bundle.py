"""The shipped bundle: complete, checksummed, trained (not random), documented, and a mitosis detector on real fields.

The last three tests fail for the first bundles, which named nearly every nucleus (field F1 0.05, 176 "mitotic
figures" on a noise image): they are the floor the shipped model must keep.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REAL_DATA
from PIL import Image

from model import Detector
from model.bundle import DEFAULT_BUNDLE_DIR, load_networks, read_bundle
from training.data.real_data import load_midesec_fields, load_patches, read_image
from training.data.sources import TILE_TRAIN_FRACTION, validation_fold
from training.validation.cv_report import OutOfFoldField, field_counts, summarise
from training.validation.field_validation import measure_bundle

FIELD_F1_FLOOR = 0.55
"""Challenge F1 of the agreement ensemble on the 10 held-out MiDeSeC fields must stay above this (measured 0.66 with
bf16 on an AMD EPYC, 0.64 with fp16 on an H100: the floor leaves room for CPU-dependent rounding, not for a regression
to a model that marks every nucleus)."""
has_real_data = pytest.mark.skipif(
    not (REAL_DATA / "patches.csv").is_file(), reason="../shared/data/real not available"
)


def test_bundle_is_complete_and_verified():
    bundle = read_bundle(DEFAULT_BUNDLE_DIR)
    assert [m.policy for m in bundle.models] == ["A", "B"]
    assert len(load_networks(bundle, DEFAULT_BUNDLE_DIR)) == 2  # raises on a checksum mismatch
    assert 0 < bundle.threshold < 1
    for key in ("provenance", "validation"):
        assert key in bundle.extra
    assert (DEFAULT_BUNDLE_DIR / "README.md").is_file()


@has_real_data
def test_held_out_mitoses_score_higher_than_held_out_tissue():
    """Trained weights separate held-out real mitoses from held-out mitosis-free tissue (random weights do not)."""
    held_out = [p for p in load_patches(REAL_DATA) if p.label == 1 and validation_fold(p.group)][::97][:12]
    detector = Detector(DEFAULT_BUNDLE_DIR)
    positives = [detector.centre_probability(np.asarray(Image.open(p.path).convert("RGB"))) for p in held_out]
    tile = REAL_DATA / "tiles" / "cmc-no-mitosis" / "2191a7aa287ce1d5dbc0_patch_0_36075.jpg"
    rgb = np.asarray(Image.open(tile).convert("RGB"))
    rng = np.random.default_rng(0)
    negatives = [  # right 20% of the tile (held out), lower part (tissue)
        detector.centre_probability(rgb[y : y + 128, x : x + 128])
        for y, x in zip(rng.integers(4000, 5200, 12), rng.integers(5800, 7000, 12), strict=True)
    ]
    assert np.median(positives) > 0.5 > np.median(negatives)
    assert np.mean(positives) - np.mean(negatives) > 0.4


def test_noise_image_gets_no_mitotic_figure():
    noise = np.random.default_rng(7).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
    assert Detector(DEFAULT_BUNDLE_DIR).detect(noise).is_mitosis.sum() <= 2


@has_real_data
def test_mitosis_free_real_background_gets_no_mitotic_figure():
    """A held-out 1024 px piece of a certified mitosis-free canine tile (the right columns, never trained on)."""
    tile = REAL_DATA / "tiles" / "cmc-no-mitosis" / "2191a7aa287ce1d5dbc0_patch_0_36075.jpg"
    rgb = np.asarray(Image.open(tile).convert("RGB"))
    x0 = int(rgb.shape[1] * TILE_TRAIN_FRACTION) + 64
    crop = rgb[4200 : 4200 + 1024, x0 : x0 + 1024]
    assert Detector(DEFAULT_BUNDLE_DIR).detect(crop).is_mitosis.sum() == 0


@has_real_data
def test_challenge_f1_on_held_out_fields_is_above_the_floor():
    """Computed here from ../shared/data/real (nothing stored): the shipped bundle on the 10 held-out MiDeSeC fields."""
    report = measure_bundle(DEFAULT_BUNDLE_DIR, REAL_DATA, negatives=False)
    assert report["fields"] == 10
    ensemble = report["variants"]["ensemble"]
    assert ensemble["tp"] + ensemble["fn"] == 35
    assert ensemble["f1"] > FIELD_F1_FLOOR, report
    strip = report["border_strip"]  # the same named points, split by the border strip
    assert strip["fp_strip"] + strip["fp_interior"] == ensemble["fp"]
    assert strip["tp_strip"] <= strip["mitoses_strip"]


@has_real_data
def test_border_strip_has_no_more_false_positives_per_mm2_than_the_interior():
    """Named points that are not annotated mitoses, per mm2, within 39 px of the image edge (where the window reaches
    past it and sees mirrored pixels) and inside, over the 35 MiDeSeC fields. The dense nets alone: about 42 per mm2
    in the strip against 25 inside (half nuclei cut by the edge, doubled by the mirror; the xfail this test was until
    the verifier). With the verifier (default): its edge distance and border-strip threshold (out of fold: 0 against
    25.5 per mm2, model card). One false positive of slack in the strip. Fails with `verifier=False`."""
    detector = Detector(DEFAULT_BUNDLE_DIR)
    regions = [(read_image(f.path), f.spacing_mm, f.mitoses_xy_px) for f in load_midesec_fields(REAL_DATA)]
    rows = []
    for rgb, spacing_mm, mitoses_xy_px in regions:
        found = detector.detect(rgb, (spacing_mm, spacing_mm))
        named = found.xy_px[found.is_mitosis]
        field = OutOfFoldField("", 0, rgb.shape[:2], spacing_mm, mitoses_xy_px, {0: (named, np.ones(len(named)))})
        rows.append(field_counts(field, 0, 0.5))
    strip_mm2 = sum(r["strip_mm2"] for r in rows)
    rates = summarise(rows)
    assert (rates["fp_strip"] - 1) / strip_mm2 <= rates["fp_per_mm2_interior"], rates
