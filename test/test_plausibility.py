"""The micrograph check: noise is refused, real tissue windows of every source pass."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REAL_DATA
from scipy.ndimage import gaussian_filter

from model import Detector
from model.plausibility import MAX_ROUGHNESS, looks_like_micrograph, roughness
from training.data import real_data


def test_noise_is_rough_and_smooth_images_are_not():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (78, 78, 3)).astype(np.uint8)
    assert roughness(noise) > 1.0 > MAX_ROUGHNESS
    blurred = np.stack([gaussian_filter(noise[..., c].astype(np.float32), 2.0) for c in range(3)], axis=-1)
    assert roughness(blurred) < MAX_ROUGHNESS
    assert roughness(np.full((78, 78, 3), 200, np.uint8)) == 0.0  # flat: no spread, nothing to judge


def test_points_are_judged_by_their_own_window():
    image = np.full((200, 400, 3), 180, np.uint8)
    image[:, 200:] = np.random.default_rng(1).integers(0, 256, (200, 200, 3))
    verdict = looks_like_micrograph(image, np.array([[60.0, 100.0], [300.0, 100.0], [399.0, 0.0]]))
    assert verdict.tolist() == [True, False, False]


@pytest.mark.skipif(not (REAL_DATA / "patches.csv").is_file(), reason="../shared/data/real not available")
def test_real_windows_of_every_source_pass():
    windows = [real_data.read_patch(p)[25:103, 25:103] for p in real_data.load_patches(REAL_DATA)[::50]]
    for field in real_data.load_midesec_fields(REAL_DATA)[::7] + real_data.load_unlabeled_fields(REAL_DATA)[::5]:
        rgb = real_data.read_image(field.path)
        windows += [rgb[y : y + 78, x : x + 78] for y in range(0, 900, 300) for x in range(0, 900, 300)]
    assert len(windows) > 100
    assert max(roughness(w) for w in windows) < MAX_ROUGHNESS


def test_detector_names_nothing_on_noise_even_when_the_networks_fire(random_bundle_dir):
    detector = Detector(random_bundle_dir)
    detector.bundle.threshold = 0.0  # every agreed candidate would be named without the check
    noise = np.random.default_rng(2).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    detections = detector.detect(noise)
    assert detections.agreed.any() and not detections.is_mitosis.any()
