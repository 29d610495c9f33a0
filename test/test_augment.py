"""Augmentation policies A and B: the transforms do what Table 1 says, with the stated probabilities."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch

from training.augment import POLICIES, Policy, augment_batch, centre_windows, colour_jitter, rotate_hue


def test_identity_policy_cuts_the_centre_window():
    crops = torch.randint(0, 256, (4, 128, 128, 3), dtype=torch.uint8)
    out = augment_batch(crops, POLICIES["none"], torch.Generator().manual_seed(0))
    assert torch.allclose(out, centre_windows(crops), atol=1e-5)


@pytest.mark.parametrize("angle", [0.0, 45.0, 200.0, -60.0])
def test_hue_rotation_matches_hls(angle):
    rgb = torch.rand(6, 3, 2, 2)
    rotated = rotate_hue(rgb, torch.full((6,), angle))
    for sample in range(6):
        pixel = rgb[sample, :, 0, 0].tolist()
        hue, lightness, saturation = colorsys.rgb_to_hls(*pixel)
        expected = colorsys.hls_to_rgb((hue + angle / 360.0) % 1.0, lightness, saturation)
        assert np.allclose(rotated[sample, :, 0, 0].numpy(), expected, atol=1e-5)


def test_transform_probabilities_are_respected():
    generator = torch.Generator().manual_seed(0)
    windows = torch.full((4000, 3, 4, 4), 0.5)
    only_gamma = Policy(hue_p=0, colour_shift_p=0, contrast_p=0, gamma_p=0.5, gamma_range=(2.0, 2.0))
    out = colour_jitter(windows, only_gamma, generator)
    changed = (out[:, 0, 0, 0] - 0.5).abs() > 1e-6
    assert abs(changed.float().mean().item() - 0.5) < 0.03
    assert torch.allclose(out[changed][:, 0, 0, 0], torch.tensor(0.25))


def test_colour_shift_range_in_8bit_units():
    generator = torch.Generator().manual_seed(1)
    windows = torch.full((3000, 3, 2, 2), 0.5)
    only_shift = Policy(hue_p=0, colour_shift_p=1.0, contrast_p=0, gamma_p=0)
    shift = (colour_jitter(windows, only_shift, generator)[:, :, 0, 0] - 0.5) * 255
    assert shift.min() >= -51.01 and shift.max() <= 51.01
    assert shift.min() < -48 and shift.max() > 48  # uniform over the whole range


def test_policy_b_differs_from_a_as_in_table_1():
    policy_a, policy_b = POLICIES["A"], POLICIES["B"]
    assert (policy_a.elastic_p, policy_b.elastic_p) == (1.0, 0.5)
    assert (policy_a.hue_range_deg, policy_b.hue_range_deg) == ((0.0, 360.0), (-60.0, 60.0))
    assert (policy_a.gamma_p, policy_b.gamma_p) == (0.0, 0.5)
    assert policy_a.shift_px == policy_b.shift_px == 12.0
    assert policy_a.zoom_range == policy_b.zoom_range == (-0.10, 0.20)


def test_shift_moves_content_by_up_to_12_px():
    crops = torch.zeros(500, 128, 128, 3, dtype=torch.uint8)
    crops[:, 64, 64] = 255  # one bright pixel at the centre (63.5 is the crop centre)
    only_shift = Policy(transpose_p=0, elastic_p=0, zoom_p=0, hue_p=0, colour_shift_p=0, contrast_p=0)
    out = augment_batch(crops, only_shift, torch.Generator().manual_seed(2))[:, 0]
    flat = out.flatten(1).argmax(1)
    rows, cols = flat // 78, flat % 78
    assert (rows - 39).abs().max() <= 13 and (cols - 39).abs().max() <= 13
    assert (rows - 39).abs().max() >= 10  # the whole range is used
