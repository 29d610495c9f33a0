"""Atypical or normal: the probability that a mitotic figure is atypical (MIDOG 2025 track 2).

Atypical mitoses (multipolar, asymmetric, lagging chromosomes, bridges) carry prognostic weight of their own. The
classifier reuses what the two shipped P4 networks already learned about mitotic figures: a 128x128 crop centred on
the figure (0.25 um/px) passes through both networks, every residual block's output is pooled over the group
(rotation-invariant fields) and over the crop's central half (mean, max, standard deviation), the same for the
mirrored crop, and the two views are averaged. A standardised logistic regression on these descriptors gives
P(atypical); its threshold was chosen for balanced accuracy inside the training folds (`training.atypical`).

Why not a network of its own: fine-tuning needs a GPU; the descriptors of the detector's own networks, with a light
head a CPU trains in minutes, carried across sources better than hand features of the chromatin (model card,
"Atypical mitoses"). The descriptors are computed in fp32 on every device, so a CPU and a GPU agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model.dense import reflect_indices, to_input_tensor
from model.plain import PlainP4ResNet, group_max_pool

CROP_PX = 128
"""Side of the crop centred on a mitotic figure, at the networks' 0.25 um/px (the MIDOG 2025 track 2 crops)."""
BATCH_CROPS = 32


@dataclass(frozen=True)
class AtypicalEntry:
    """The bundle's record of the classifier: its weights file, checksum and decision threshold."""

    file: str
    sha256: str
    threshold: float
    crop_px: int = CROP_PX

    def to_json(self) -> dict:
        return {"file": self.file, "sha256": self.sha256, "threshold": self.threshold, "crop_px": self.crop_px}


def _pooled(features: torch.Tensor) -> torch.Tensor:
    """(N, C * 4, H, W) P4 feature maps -> (N, 3 C): mean, max and std of the group-pooled fields over the central
    half of the map."""
    fields = group_max_pool(features)
    height, width = fields.shape[-2:]
    centre = fields[..., height // 4 : height - height // 4, width // 4 : width - width // 4]
    return torch.cat([centre.mean((2, 3)), centre.amax((2, 3)), centre.std((2, 3))], dim=1)


def _network_descriptors(network: PlainP4ResNet, batch: torch.Tensor) -> torch.Tensor:
    """Every residual block's pooled output and the head's, for one network."""
    maps = network.stem(batch)
    pooled = []
    for block in network.blocks:
        maps = block(maps)
        pooled.append(_pooled(maps))
    pooled.append(_pooled(network.head_conv(network.relu(network.head_bn(maps)))))
    return torch.cat(pooled, dim=1)


@torch.no_grad()
def descriptors(networks: list[PlainP4ResNet], crops_rgb: np.ndarray, device: torch.device | None = None) -> np.ndarray:
    """(N, 128, 128, 3) uint8 crops -> (N, D) float32 descriptors of both networks, the crop and its mirror image
    averaged. fp32 whatever the device, in batches of `BATCH_CROPS`."""
    crops_rgb = np.asarray(crops_rgb)
    if crops_rgb.ndim != 4 or crops_rgb.shape[1:] != (CROP_PX, CROP_PX, 3) or crops_rgb.dtype != np.uint8:
        raise ValueError(f"expected (N, {CROP_PX}, {CROP_PX}, 3) uint8 crops, got {crops_rgb.dtype} {crops_rgb.shape}")
    device = device or next(networks[0].parameters()).device
    rows = []
    for start in range(0, len(crops_rgb), BATCH_CROPS):
        batch = to_input_tensor(crops_rgb[start : start + BATCH_CROPS], device)
        views = [torch.cat([_network_descriptors(n, view) for n in networks], 1) for view in (batch, batch.flip(-1))]
        rows.append(((views[0] + views[1]) / 2).float().cpu().numpy())
    width = sum(_descriptor_width(n) for n in networks)
    return np.concatenate(rows) if rows else np.zeros((0, width), np.float32)


def _descriptor_width(network: PlainP4ResNet) -> int:
    """How many numbers `_network_descriptors` gives for one network (3 per field of every block and the head)."""
    fields = [block.conv3.out_channels // 4 for block in network.blocks]
    return 3 * (sum(fields) + network.head_conv.out_channels // 4)


@dataclass(frozen=True)
class AtypicalHead:
    """Standardised logistic regression: P(atypical) = sigmoid(((x - mean) / scale) . coef + intercept)."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def probability(self, features: np.ndarray) -> np.ndarray:
        logits = ((np.asarray(features, np.float64) - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-logits))

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "mean": self.mean.astype(np.float64),
            "scale": self.scale.astype(np.float64),
            "coef": self.coef.astype(np.float64),
            "intercept": np.array([self.intercept], np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> AtypicalHead:
        return cls(arrays["mean"], arrays["scale"], arrays["coef"], float(arrays["intercept"][0]))


class AtypicalClassifier:
    """P(atypical) and the atypical/normal decision for crops centred on mitotic figures."""

    def __init__(self, networks: list[PlainP4ResNet], head: AtypicalHead, threshold: float):
        width = sum(_descriptor_width(n) for n in networks)
        if head.coef.shape != (width,):
            raise ValueError(f"the atypical head takes {head.coef.shape} features; these networks give {width}")
        self.networks, self.head, self.threshold = networks, head, float(threshold)

    def probability(self, crops_rgb: np.ndarray) -> np.ndarray:
        """(N,) P(atypical) of (N, 128, 128, 3) uint8 crops."""
        return self.head.probability(descriptors(self.networks, crops_rgb))

    def is_atypical(self, probability: np.ndarray) -> np.ndarray:
        """The decision: P(atypical) at or above the threshold chosen for balanced accuracy (NaN: not atypical)."""
        return np.asarray(probability) >= self.threshold


def crops_around(image_rgb: np.ndarray, xy_px: np.ndarray, crop_px: int = CROP_PX) -> np.ndarray:
    """(N, crop_px, crop_px, 3) crops centred on each (x, y) pixel point, mirrored where they pass the image's edge
    (the dense maps mirror the image the same way)."""
    half = crop_px // 2
    height, width = image_rgb.shape[:2]
    crops = np.empty((len(xy_px), crop_px, crop_px, 3), np.uint8)
    for index, (x, y) in enumerate(np.asarray(xy_px, float).reshape(-1, 2)):
        rows = reflect_indices(np.arange(crop_px) + int(round(y)) - half, height)
        cols = reflect_indices(np.arange(crop_px) + int(round(x)) - half, width)
        crops[index] = image_rgb[np.ix_(rows, cols)]
    return crops
