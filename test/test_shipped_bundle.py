"""The shipped bundle: complete, checksummed, trained (not random), documented."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REAL_DATA
from PIL import Image

from model.bundle import DEFAULT_BUNDLE_DIR, load_networks, read_bundle
from model.inference import Detector
from training.real_data import load_patches
from training.sources import validation_fold


def test_bundle_is_complete_and_verified():
    bundle = read_bundle(DEFAULT_BUNDLE_DIR)
    assert [m.policy for m in bundle.models] == ["A", "B"]
    assert len(load_networks(bundle, DEFAULT_BUNDLE_DIR)) == 2  # raises on a checksum mismatch
    assert 0 < bundle.threshold < 1
    for key in ("provenance", "validation"):
        assert key in bundle.extra
    assert (DEFAULT_BUNDLE_DIR / "README.md").is_file()


@pytest.mark.skipif(not (REAL_DATA / "patches.csv").is_file(), reason="../shared/data/real not available")
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
