"""Augmentation policies A and B: the transforms do what Table 1 says, with the stated probabilities."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.color import rgb2lab

from model.bundle import POLICY_NAMES
from training.augment import (
    POLICIES,
    Policy,
    augment_batch,
    centre_windows,
    colour_jitter,
    lab_to_srgb,
    lab_transfer,
    rotate_hue,
    sampling_grid,
    srgb_to_lab,
    transfer_lab_statistics,
    with_lab_transfer,
)


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
    policy_a, policy_b = POLICIES[POLICY_NAMES[0]], POLICIES[POLICY_NAMES[1]]
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


# ---------------------------------------------------------------- LAB colour transfer (Reinhard et al. 2001)


def _stained_crops(count: int, seed: int) -> torch.Tensor:
    """Crops with a different mid-range colour and texture each, so a transfer rarely leaves the sRGB gamut."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.rand((count, 1, 1, 3), generator=generator) * 0.3 + 0.35
    spread = torch.rand((count, 1, 1, 1), generator=generator) * 0.06 + 0.02
    noise = torch.randn((count, 128, 128, 3), generator=generator) * spread
    return ((base + noise).clamp(0, 1) * 255).round().to(torch.uint8)


def _lab_stats(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lab = srgb_to_lab(rgb.double()).float()
    return lab.mean(dim=(2, 3)), lab.std(dim=(2, 3))


def test_lab_round_trip_and_agreement_with_skimage():
    rgb = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    rgb[0, :, 0, :2] = torch.tensor([[0.0, 1.0]] * 3)  # black and white
    lab = srgb_to_lab(rgb)
    assert lab.dtype == torch.float32
    assert (lab_to_srgb(lab) - rgb).abs().max() < 1e-3
    expected = rgb2lab(rgb.permute(0, 2, 3, 1).double().numpy())
    assert np.abs(lab.permute(0, 2, 3, 1).numpy() - expected).max() < 1e-2


def test_transfer_gives_each_selected_window_its_targets_lab_statistics():
    windows = centre_windows(_stained_crops(6, seed=4))
    target = torch.tensor([3, 0, 1, 5, 2, 4])
    selected = torch.tensor([True, True, True, True, False, True])
    out = transfer_lab_statistics(windows, target, selected)
    mean_in, std_in = _lab_stats(windows)
    mean_out, std_out = _lab_stats(out)
    chosen = selected.nonzero().squeeze(1)
    assert torch.allclose(mean_out[chosen], mean_in[target[chosen]], atol=0.05)
    assert torch.allclose(std_out[chosen], std_in[target[chosen]], rtol=0.01, atol=0.05)
    assert torch.equal(out[~selected], windows[~selected])  # unselected windows untouched


def test_policy_with_transfer_on_takes_another_samples_statistics():
    crops = _stained_crops(12, seed=5)
    policy = with_lab_transfer(POLICIES["none"], 1.0)  # no geometry or jitter: output = transferred centre windows
    assert policy.lab_transfer_p == 1.0 and POLICIES["none"].lab_transfer_p == 0.0
    out = augment_batch(crops, policy, torch.Generator().manual_seed(6))
    mean_in, std_in = _lab_stats(centre_windows(crops))
    mean_out, std_out = _lab_stats(out)
    distance = torch.cdist(torch.cat([mean_out, std_out], 1), torch.cat([mean_in, std_in], 1))
    donor = distance.argmin(1)
    assert (donor != torch.arange(12)).all()  # j != i: the colours come from another sample of the batch
    assert torch.allclose(mean_out, mean_in[donor], atol=0.05)
    assert torch.allclose(std_out, std_in[donor], rtol=0.01, atol=0.05)


@pytest.mark.parametrize("name", [*POLICY_NAMES, "none"])
def test_transfer_off_reproduces_the_pipeline_without_it(name):
    """lab_transfer_p = 0 must draw nothing from the generator: same output and generator state as before."""
    crops = torch.randint(0, 256, (8, 128, 128, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    before = torch.Generator().manual_seed(8)
    source = crops.permute(0, 3, 1, 2).float() / 255.0
    grid = sampling_grid(8, 128, POLICIES[name], before)
    windows = F.grid_sample(source, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    expected = colour_jitter(windows, POLICIES[name], before)
    after = torch.Generator().manual_seed(8)
    assert torch.equal(augment_batch(crops, with_lab_transfer(POLICIES[name], 0.0), after), expected)
    assert torch.equal(after.get_state(), before.get_state())


def test_transfer_is_a_no_op_for_a_single_sample():
    crops = _stained_crops(1, seed=9)
    off = augment_batch(crops, POLICIES[POLICY_NAMES[1]], torch.Generator().manual_seed(10))
    on = augment_batch(crops, with_lab_transfer(POLICIES[POLICY_NAMES[1]], 1.0), torch.Generator().manual_seed(10))
    assert torch.equal(on, off)


def test_transfer_is_deterministic_for_a_seed():
    crops = _stained_crops(8, seed=11)
    policy = with_lab_transfer(POLICIES[POLICY_NAMES[0]], 0.5)
    first = augment_batch(crops, policy, torch.Generator().manual_seed(12))
    again = augment_batch(crops, policy, torch.Generator().manual_seed(12))
    other = augment_batch(crops, policy, torch.Generator().manual_seed(13))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_transfer_probability_is_respected():
    generator = torch.Generator().manual_seed(14)
    windows = torch.rand(4000, 1, 1, 1, generator=generator).expand(-1, 3, 4, 4) * 0.6 + 0.2  # distinct greys
    windows = windows + torch.rand(4000, 3, 4, 4, generator=generator) * 0.1
    out = lab_transfer(windows, with_lab_transfer(Policy(), 0.3), generator)
    changed = (out - windows).abs().amax(dim=(1, 2, 3)) > 1e-4
    assert abs(changed.float().mean().item() - 0.3) < 0.03


def test_with_lab_transfer_rejects_bad_probabilities():
    with pytest.raises(ValueError):
        with_lab_transfer(POLICIES[POLICY_NAMES[0]], 1.5)
