"""Images at another resolution than the networks' 0.25 um/px: resampled, detected, points exact in millimetres."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest
import tifffile
from scipy import ndimage
from test_process import tissue_like, validate_schema

import process
from model import Detections, spacing
from model.candidates import only_micrographs
from model.image_io import InputImageError, read_header
from model.resample import original_px, resample_rgb, to_model_spacing

MODEL_UM = spacing.DEFAULT_SPACING_MM * 1000
DISC_RADIUS_UM = 5.0


def detect_at_model_spacing(detect, image_rgb, spacing_mm, origin_mm=(0.0, 0.0), source="image") -> Detections:
    """`detect` on the image at the networks' pixel size, its points mapped back to the image's pixels: what
    `Detector.detect` does around its own detection."""
    at_model = to_model_spacing(image_rgb, spacing_mm, origin_mm, source)
    found = detect(at_model.image_rgb, at_model.spacing_mm, at_model.origin_mm)
    return dataclasses.replace(found, xy_px=at_model.original_px(found.xy_px))


def test_tolerance_and_model_size():
    assert not spacing.needs_resampling((0.000227, 0.00027))  # the MIDOG scanners' 0.23 .. 0.27: native
    assert spacing.needs_resampling((0.00025, 0.00028))  # 12% on one axis is enough
    assert spacing.model_size_px(1000, 600, (0.00025, 0.00026)) == (1000, 600)
    assert spacing.model_size_px(1000, 600, (0.0005, 0.00025)) == (2000, 600)  # anisotropic: x only doubles
    assert spacing.model_size_px(999, 600, (0.0001, 0.0001)) == (400, 240)


@pytest.mark.parametrize("bad_um", [(0.08, 0.08), (1.0, 1.0), (3.0, 3.0), (0.25, 2.5)])
def test_usable_spacing_range(bad_um):
    with pytest.raises(ValueError, match="outside the 0.1-0.75 um/px"):
        spacing.check_usable_spacing(tuple(v / 1000 for v in bad_um))
    spacing.check_usable_spacing((0.0001, 0.00075))  # the limits themselves are usable


@pytest.mark.parametrize("shape_in, size_out", [((50, 40), (80, 100)), ((90, 120), (45, 30)), ((64, 64), (64, 160))])
def test_resampling_follows_the_area_grid(shape_in, size_out):
    """Bilinear interpolation of a linear ramp is exact: each resampled pixel holds its own original position."""
    height, width = shape_in
    rows, cols = np.mgrid[0:height, 0:width]
    ramp = np.stack([cols * 200 / (width - 1), rows * 200 / (height - 1), np.zeros_like(rows, float)], axis=-1)
    resampled = resample_rgb(np.round(ramp).astype(np.uint8), size_out)
    assert resampled.shape == (size_out[1], size_out[0], 3) and resampled.dtype == np.uint8
    new_rows, new_cols = np.mgrid[0 : size_out[1], 0 : size_out[0]]
    xy = original_px(
        np.stack([new_cols.ravel(), new_rows.ravel()], axis=1), (width / size_out[0], height / size_out[1])
    )
    inside = (xy[:, 0] > 1) & (xy[:, 0] < width - 2) & (xy[:, 1] > 1) & (xy[:, 1] < height - 2)  # away from clamping
    expected_x = xy[inside, 0] * 200 / (width - 1)
    expected_y = xy[inside, 1] * 200 / (height - 1)
    # shrinking smooths first (linear ramps stay linear under a Gaussian); 1.5 grey levels = rounding twice + blur
    assert np.abs(resampled[..., 0].ravel()[inside] - expected_x).max() <= 1.5
    assert np.abs(resampled[..., 1].ravel()[inside] - expected_y).max() <= 1.5


class DiscDetector:
    """Finds dark discs of 4-6 um radius *in pixels at 0.25 um/px* only: like the networks, it knows one pixel size.

    Records what it was given so the test can check that the image arrived at the model's spacing.
    """

    def __init__(self):
        self.seen: list[tuple[tuple[int, ...], tuple[float, ...]]] = []

    def detect(self, image_rgb, spacing_mm, origin_mm=(0.0, 0.0), progress=False) -> Detections:
        self.seen.append((image_rgb.shape, tuple(spacing_mm)))
        labels, count = ndimage.label(image_rgb.mean(axis=2) < 128)
        radius_px = np.sqrt(ndimage.sum(np.ones_like(labels), labels, range(1, count + 1)) / np.pi)
        keep = [i + 1 for i, r in enumerate(radius_px) if 4 / 0.25 <= r <= 6 / 0.25]
        centres_rc = np.array(ndimage.center_of_mass(np.ones_like(labels), labels, keep)).reshape(-1, 2)
        xy_px = centres_rc[:, ::-1]
        ones = np.ones(len(xy_px), bool)
        return Detections(xy_px, spacing.mm_from_px(xy_px, spacing_mm, origin_mm), ones.astype(float), ones, ones)


def field_with_discs(width_um: float = 110.0, height_um: float = 90.0, fine_um: float = 0.125):
    """A bright field with dark discs at known physical centres (mm), rendered at `fine_um` per pixel."""
    centres_um = np.array([[20.3, 18.1], [61.7, 30.4], [88.2, 70.9], [35.5, 66.6]])
    rows, cols = np.mgrid[0 : int(round(height_um / fine_um)), 0 : int(round(width_um / fine_um))]
    x_um, y_um = cols * fine_um, rows * fine_um  # pixel centres, origin 0
    dark = np.zeros(rows.shape, bool)
    for cx, cy in centres_um:
        dark |= (x_um - cx) ** 2 + (y_um - cy) ** 2 <= DISC_RADIUS_UM**2
    fine = np.where(dark[..., None], np.uint8(40), np.uint8(220)) * np.ones(3, np.uint8)
    return fine, centres_um / 1000


def block_mean(image: np.ndarray, factor_y: int, factor_x: int) -> tuple[np.ndarray, tuple[float, float]]:
    """Area average of whole blocks (a coarser scan of the same field) and its origin in fine pixels."""
    h, w = image.shape[0] // factor_y * factor_y, image.shape[1] // factor_x * factor_x
    blocks = image[:h, :w].reshape(h // factor_y, factor_y, w // factor_x, factor_x, 3).mean(axis=(1, 3))
    return np.round(blocks).astype(np.uint8), ((factor_x - 1) / 2, (factor_y - 1) / 2)


@pytest.mark.parametrize(
    "factor_yx",
    [(2, 2), (4, 4), (2, 4), (4, 2), (1, 1)],
    ids=["0.25", "0.5", "x0.5-y0.25", "x0.25-y0.5", "0.125"],
)
def test_detections_in_mm_agree_across_resolutions(factor_yx, caplog):
    fine_um = 0.125
    fine, truth_mm = field_with_discs(fine_um=fine_um)
    image, origin_fine_px = block_mean(fine, *factor_yx)
    spacing_mm = (factor_yx[1] * fine_um / 1000, factor_yx[0] * fine_um / 1000)
    origin_mm = (origin_fine_px[0] * fine_um / 1000, origin_fine_px[1] * fine_um / 1000)
    detector = DiscDetector()
    with caplog.at_level(logging.INFO, logger="model.resample"):
        found = detect_at_model_spacing(detector.detect, image, spacing_mm, origin_mm, source="field")
    (shape, seen_spacing_mm) = detector.seen[0]
    assert np.allclose(seen_spacing_mm, spacing.DEFAULT_SPACING_MM, rtol=0.01), "the detector saw 0.25 um/px"
    assert ("resampled" in caplog.text) == (factor_yx != (2, 2))
    assert len(found.xy_mm) == len(truth_mm)
    order = np.argsort(found.xy_mm[:, 0])
    error_um = np.abs(found.xy_mm[order] - truth_mm[np.argsort(truth_mm[:, 0])]) * 1000
    assert error_um.max() < 0.15, error_um  # well below a pixel of the coarsest image (0.5 um)
    # the points in original pixels convert to the same millimetres
    assert np.allclose(spacing.mm_from_px(found.xy_px, spacing_mm, origin_mm), found.xy_mm, atol=1e-9)


def test_without_resampling_the_coarse_scan_would_lose_its_discs():
    """The premise: a pixel-size-bound detector on 0.5 um/px pixels finds nothing (the issue's 17 against 104)."""
    fine, _ = field_with_discs()
    coarse, _ = block_mean(fine, 4, 4)
    assert len(DiscDetector().detect(coarse, (0.0005, 0.0005)).xy_px) == 0


def write_tiff_um(path, rgb, spacing_xy_um):
    per_cm = tuple(1e4 / value for value in spacing_xy_um)
    tifffile.imwrite(path, rgb, photometric="rgb", resolution=per_cm, resolutionunit="CENTIMETER")


@pytest.mark.parametrize("spacing_xy_um", [(0.5, 0.5), (0.25, 0.5)])
def test_process_resamples_a_20x_image(tmp_path, random_bundle_dir, caplog, spacing_xy_um):
    (tmp_path / "in").mkdir()
    rgb = tissue_like(100, 90)
    write_tiff_um(tmp_path / "in" / "001.tiff", rgb, spacing_xy_um)
    out = tmp_path / "out.json"
    with caplog.at_level(logging.INFO):
        code = process.main(["--input", str(tmp_path / "in"), "--output", str(out), "--bundle", str(random_bundle_dir)])
    assert code == 0
    assert "resampled 90x100" in caplog.text
    document = json.loads(out.read_text())
    validate_schema(document)
    xy_mm = np.array([p["point"][:2] for p in document["points"]])
    extent_mm = np.array([90 * spacing_xy_um[0], 100 * spacing_xy_um[1]]) / 1000
    assert len(xy_mm) and (xy_mm >= 0).all() and (xy_mm <= extent_mm).all()
    assert xy_mm[:, 1].max() > 0.6 * extent_mm[1], "points spread over the whole physical field, not its first half"


@pytest.mark.parametrize(
    "spacing_xy_um, size_px, message",
    [
        ((3.0, 3.0), 200, "outside the 0.1-0.75 um/px"),
        ((0.08, 0.08), 200, "outside the 0.1-0.75 um/px"),
        ((0.1, 0.1), 150, "is 60x60 px at the model's 0.25 um/px, which is smaller than the 78 px"),
    ],
)
def test_unusable_resolutions_are_refused(tmp_path, spacing_xy_um, size_px, message):
    path = tmp_path / "001.tiff"
    write_tiff_um(path, tissue_like(size_px, size_px), spacing_xy_um)
    with pytest.raises(InputImageError, match=message.replace(".", r"\.")):
        read_header(path)


def test_noise_is_not_named_after_upsampling():
    """Interpolated noise is as smooth as a micrograph; the guard is therefore also asked on the original pixels."""
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)

    def guarded(image_rgb, spacing_mm):
        """Points every 40 px, all named by the rule, then through the micrograph guard as the detector applies it."""
        at_model = to_model_spacing(image_rgb, spacing_mm)
        rows, cols = np.mgrid[39 : at_model.image_rgb.shape[0] - 39 : 40, 39 : at_model.image_rgb.shape[1] - 39 : 40]
        xy_px = np.stack([cols.ravel(), rows.ravel()], axis=1).astype(float)
        original = (image_rgb, at_model.original_px(xy_px)) if at_model.upsampled else None
        return only_micrographs(np.ones(len(xy_px), dtype=bool), at_model.image_rgb, xy_px, original)

    assert not guarded(noise, (0.00025, 0.00025)).any()  # native: the guard works
    assert guarded(resample_rgb(noise, (400, 400)), (0.00025, 0.00025)).all()  # the hole being closed
    named = guarded(noise, (0.0005, 0.0005))
    assert len(named) and not named.any()
    fine, _ = field_with_discs()
    tissue_like_field, _ = block_mean(fine, 4, 4)  # smooth content at 0.5 um/px keeps its names
    assert guarded(tissue_like_field, (0.0005, 0.0005)).all()


def test_detect_resamples_like_process(tmp_path, random_bundle_dir):
    """The one way in: `Detector().detect` on a 0.5 um/px image gives exactly process.py's candidates and names."""
    from model import Detector

    rng = np.random.default_rng(3)
    rgb = np.clip(170 + 60 * ndimage.gaussian_filter(rng.normal(0, 1, (160, 150, 3)), (3, 3, 0)) / 0.1, 0, 255)
    rgb = rgb.astype(np.uint8)
    (tmp_path / "in").mkdir()
    write_tiff_um(tmp_path / "in" / "001.tiff", rgb, (0.5, 0.5))
    out = tmp_path / "out.json"
    assert (
        process.main(["--input", str(tmp_path / "in"), "--output", str(out), "--bundle", str(random_bundle_dir)]) == 0
    )
    points = json.loads(out.read_text())["points"]
    found = Detector(random_bundle_dir).detect(rgb, (0.0005, 0.0005))
    assert len(points) == len(found.xy_mm) > 0
    np.testing.assert_allclose([p["point"][:2] for p in points], found.xy_mm, atol=1e-7)
    np.testing.assert_allclose([p["probability"] for p in points], found.probability, atol=1e-6)
    assert [p["name"] == "mitotic figure" for p in points] == found.is_mitosis.tolist()


def test_detect_refuses_resolutions_it_cannot_serve(random_bundle_dir):
    from model import Detector

    with pytest.raises(ValueError, match="outside the"):
        Detector(random_bundle_dir).detect(np.zeros((100, 100, 3), np.uint8), (0.003, 0.003))
