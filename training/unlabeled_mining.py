"""The mined stage: mitoses mined from unlabeled images become extra positives (Akram S. U., Qaiser T., Graham S.,
Kannala J., Heikkila J. and Rajpoot N., "Leveraging unlabeled whole-slide-images for mitosis detection", 2018).

Why: the labelled positives come from a few labs and scanners; unlabeled images (the MITOS 2012 fields here, any
image a user adds) hold mitoses of other stains that no one annotated. A mined positive that is wrong teaches the
network to name a look-alike, so only points *both* models are sure of survive, under every view of the dihedral group
(the four right-angle rotations, each also mirrored): a false positive is usually confident under few of them (the
paper's test-time augmentation). The networks are P4-equivariant, so rotations mostly change the sampling grid's
phase; the mirrored views are the independent check.

Steps, per unlabeled image: the agreed candidates of A and B (exact dense maps, as `process.py`) at or above
`threshold`, on tissue (`model.tissue`); each is re-scored by both models on its centred window under the 8 views; a
point is kept when the lowest of those 16 probabilities is at or above `threshold`. `add_mined_positives` then adds
its 128 px crop as a positive of group "mined" (sampled with `weight` times the square-root rule of
`training.data.sources.positive_sampler`) and removes the negative sites of that image within `min_distance_px`.

Whether the stage helps is measured, never assumed (`training.validation.field_cv --mined-positives`: cross-validated
field F1 with and without it, from the same starting models and for the same number of iterations).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from scipy.spatial import cKDTree

from model.architecture import architecture
from model.bundle import POLICY_NAMES, Bundle
from model.candidates import agree, local_maxima
from model.dense import probability_map, window_scorer
from model.plain import PlainP4ResNet
from model.precision import autocast_dtype
from model.spacing import px_from_um
from model.tissue import tissue_mask
from training.augment import centre_windows
from training.data.sources import NegativeSites, TrainingData
from training.train import predict

MINED = "mined"
"""Positive group of mined mitoses (`TrainingData.positive_train_groups`)."""


@dataclass(frozen=True)
class MinedPositive:
    image: int  # index into `TrainingData.images`
    row_px: int
    col_px: int
    probability: float  # the lowest of the 16 (2 models x 8 views) probabilities


def dihedral_views(windows: torch.Tensor) -> list[torch.Tensor]:
    """The 8 views of (N, C, H, W) square windows: 4 rotations by 90 degrees, each also mirrored."""
    views = []
    for quarter_turns in range(4):
        rotated = torch.rot90(windows, quarter_turns, dims=(2, 3))
        views += [rotated, rotated.flip(3)]
    return views


def load_models(weights: dict[str, Path], arch: str) -> dict[str, PlainP4ResNet]:
    models = {}
    for policy, path in weights.items():
        net = PlainP4ResNet(architecture(arch))
        net.load_state_dict(load_file(str(path)))
        models[policy] = net.eval()
    return models


def view_agreement(models: dict[str, torch.nn.Module], windows: torch.Tensor) -> np.ndarray:
    """Per window, the lowest probability any model gives it under any dihedral view."""
    dtype = autocast_dtype(torch.device("cpu"))
    lowest = torch.ones(len(windows))
    for net in models.values():
        for view in dihedral_views(windows):
            lowest = torch.minimum(lowest, torch.softmax(predict(net, view, dtype), 1)[:, 1])
    return lowest.numpy()


@torch.no_grad()
def agreed_candidates(models: dict[str, torch.nn.Module], rgb: np.ndarray, spacing_mm: float) -> tuple:
    """(xy_px, probability) of the agreed candidates of A and B on one image (the bundle's exact dense path)."""
    device = torch.device("cpu")
    dtype = autocast_dtype(device)
    spacing = (spacing_mm, spacing_mm)
    maps = {p: probability_map(rgb, window_scorer(net, device, dtype), device) for p, net in models.items()}
    min_distance_px = px_from_um(Bundle.candidate_min_distance_um, spacing)
    candidates = {p: local_maxima(m, min_distance_px, Bundle.candidate_floor) for p, m in maps.items()}
    first, second = POLICY_NAMES
    merged = agree(candidates[first], candidates[second], maps[second], px_from_um(Bundle.agreement_radius_um, spacing))
    return merged.xy_px[merged.agreed], merged.probability[merged.agreed]


def mine_positives(
    data: TrainingData, images: list[int], models: dict[str, torch.nn.Module], threshold: float
) -> list[MinedPositive]:
    """Confident mitoses of the given (unlabeled) images under both models ("A", "B": `load_models`) and all 8
    views."""
    mined = []
    for index in images:
        image = data.images[index]
        rgb = image.read()
        xy, probability = agreed_candidates(models, rgb, image.spacing_mm)
        rc = np.round(xy[probability >= threshold][:, ::-1]).astype(np.int64)
        if len(rc):
            rc = rc[tissue_mask(rgb[rc[:, 0], rc[:, 1]][None])[0]]
        if len(rc) == 0:
            continue
        crops = np.stack([image.crop(int(r), int(c)) for r, c in rc])
        lowest = view_agreement(models, centre_windows(torch.from_numpy(crops)))
        mined += [
            MinedPositive(index, int(r), int(c), float(p))
            for (r, c), p in zip(rc, lowest, strict=True)
            if p >= threshold
        ]
    return mined


def add_mined_positives(
    data: TrainingData, mined: list[MinedPositive], weight: float = 1.0, min_distance_px: float = 64.0
) -> TrainingData:
    """`data` with the mined crops as positives of group "mined" and no negative site of their image within
    `min_distance_px` of them (in place; returned for chaining)."""
    if not mined:
        return data
    crops = np.stack([data.images[m.image].crop(m.row_px, m.col_px) for m in mined])
    data.positives_train = np.concatenate([data.positives_train, crops])
    data.positive_train_groups = np.concatenate([data.positive_train_groups, np.full(len(mined), MINED)])
    data.positive_scale = dict(data.positive_scale) | {MINED: weight}
    data.negatives_train = without_sites_near(data.negatives_train, mined, min_distance_px)
    return data


def without_sites_near(sites: NegativeSites, mined: list[MinedPositive], min_distance_px: float) -> NegativeSites:
    """`sites` less those within `min_distance_px` of a mined mitosis of the same image."""
    near = np.zeros(len(sites), dtype=bool)
    for index in {m.image for m in mined}:
        points = np.array([[m.row_px, m.col_px] for m in mined if m.image == index], dtype=np.float64)
        own = np.flatnonzero(sites.image == index)
        if len(own):
            site_rc = np.stack([sites.row_px[own], sites.col_px[own]], axis=1).astype(np.float64)
            distance, _ = cKDTree(points).query(site_rc)
            near[own[distance < min_distance_px]] = True
    return sites.subset(np.flatnonzero(~near))
