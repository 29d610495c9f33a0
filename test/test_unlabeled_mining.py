"""The mined stage (Akram et al. 2018): only points both models are sure of under all 8 dihedral views become
positives."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from model.bundle import POLICY_NAMES
from training.data.sources import NegativeSites, SiteImage, TrainingData, positive_sampler
from training.unlabeled_mining import (
    MINED,
    MinedPositive,
    add_mined_positives,
    dihedral_views,
    mine_positives,
    view_agreement,
)

SPACING_MM = 0.00025


class StandIn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))  # code that asks a network for its device finds one


class DarkCentre(StandIn):
    """A fully convolutional stand-in with the detector's geometry (78 px window, stride 8): 'mitosis' when the
    window's central 16 px are dark."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        darkness = 1.0 - x.mean(1, keepdim=True)[..., 31:-31, 31:-31]
        pooled = F.avg_pool2d(darkness, kernel_size=16, stride=8)
        return torch.cat([torch.zeros_like(pooled), 40.0 * (pooled - 0.5)], dim=1)


class DarkLeft(StandIn):
    """A patch model that depends on orientation: 'mitosis' when the left half is darker than the right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        width = x.shape[-1]
        contrast = x[..., width // 2 :].mean((1, 2, 3)) - x[..., : width // 2].mean((1, 2, 3))
        return torch.stack([torch.zeros_like(contrast), 40.0 * (contrast - 0.2)], dim=1)[..., None, None]


def tissue_with_spots(spots_rc: list[tuple[int, int]], size: int = 400) -> np.ndarray:
    rgb = np.empty((size, size, 3), np.uint8)
    rgb[:] = (200, 140, 180)  # pink tissue
    rows, cols = np.mgrid[:size, :size]
    for r, c in spots_rc:
        rgb[(rows - r) ** 2 + (cols - c) ** 2 <= 12**2] = (20, 10, 40)
    return rgb


def data_with(images: list[np.ndarray]) -> TrainingData:
    sites = NegativeSites.build(0, np.array([[200, 200], [200, 260], [50, 50]]), "grid", "MITOS 2012")
    return TrainingData(
        source="test",
        images=[SiteImage(f"u{i}", *rgb.shape[:2], SPACING_MM, rgb=rgb) for i, rgb in enumerate(images)],
        positives_train=np.zeros((4, 128, 128, 3), np.uint8),
        positive_train_groups=np.array(["TUPAC16"] * 4),
        positives_val=np.zeros((0, 128, 128, 3), np.uint8),
        positive_val_groups=[],
        negatives_train=sites,
        negatives_val=NegativeSites.empty(),
        unlabeled=list(range(len(images))),
        validation_regions=[],
        training_pixels=0,
        grid_step_px=32,
    )


def test_dihedral_views_are_the_eight_distinct_symmetries():
    window = torch.arange(16.0).reshape(1, 1, 4, 4)
    views = dihedral_views(window)
    assert len(views) == 8
    assert torch.equal(views[0], window)
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8
    rotated = {tuple(v.flatten().tolist()) for v in dihedral_views(torch.rot90(window, 1, (2, 3)).flip(3))}
    assert rotated == {tuple(v.flatten().tolist()) for v in views}  # a group: any view's views are the same set


def test_a_point_confident_under_one_orientation_only_is_not_mined():
    window = torch.full((1, 3, 78, 78), 0.8)
    window[..., :39] = 0.2  # dark on the left: DarkLeft is sure under identity, not when mirrored
    models = {name: DarkLeft() for name in POLICY_NAMES}
    identity = torch.softmax(models[POLICY_NAMES[0]](window).flatten(1), 1)[0, 1]
    assert identity > 0.99
    assert view_agreement(models, window)[0] < 0.01


def test_mining_keeps_the_dark_spots_both_models_agree_on_and_nothing_else():
    data = data_with([tissue_with_spots([(200, 200), (120, 300)]), tissue_with_spots([])])
    mined = mine_positives(data, [0, 1], {name: DarkCentre() for name in POLICY_NAMES}, threshold=0.9)
    found = sorted((m.image, m.row_px, m.col_px) for m in mined)
    assert len(found) == 2 and all(image == 0 for image, _, _ in found)
    for (_, row, col), (r, c) in zip(found, sorted([(120, 300), (200, 200)]), strict=True):
        assert abs(row - r) <= 8 and abs(col - c) <= 8
    assert all(m.probability >= 0.9 for m in mined)


def test_mined_positives_join_training_with_their_weight_and_clear_nearby_negatives():
    data = data_with([tissue_with_spots([(200, 200)])])
    add_mined_positives(data, [MinedPositive(0, 200, 200, 0.97)], weight=0.5, min_distance_px=40)
    assert len(data.positives_train) == 5 and data.positive_train_groups[-1] == MINED
    assert data.positives_train[-1][64, 64].tolist() == [20, 10, 40]  # centred on the mitosis
    kept = {(int(r), int(c)) for r, c in zip(data.negatives_train.row_px, data.negatives_train.col_px, strict=True)}
    assert kept == {(200, 260), (50, 50)}  # the site on the mitosis is gone, the others stay
    sampler = positive_sampler(data.positive_train_groups, data.positive_scale)
    weights = dict(zip(sampler.groups, sampler.probability, strict=True))
    assert weights[MINED] / weights["TUPAC16"] == np.sqrt(1) * 0.5 / np.sqrt(4)
