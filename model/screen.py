"""The fast first stage: a small plain-torch network that says where the P4 models need to look.

Six valid convolutions (BN + ReLU) and a 1x1 output, receptive field 96 px, output stride 16: about 1/60 of the
compute of one P4 model per pixel. It is trained by distillation (`training.screen`) to predict, for each of its
cells, the ensemble probability (lower of A and B) of the P4 cells it owns, plus the annotated mitoses. At inference
the P4 models score only the windows near the cells where the screen reaches the bundle's screen threshold, which was
chosen on validation fields so that the ensemble's candidates and named mitoses survive (`model/weights/README.md`).

Geometry: the screen reads the same mirrored image as the P4 models (`model.geometry.BORDER_PAD_PX`). Screen cell i
covers padded pixels [16 i, 16 i + 96); it owns P4 cells 2 i + 1 and 2 i + 2 (per axis), whose windows lie inside its
own and whose centres are the two nearest its centre. `p4_cells_passing` and `screen_targets` are the two directions
of that one ownership rule. Windows that hold nothing but glass are not scored (`screen_map`): on a MIDOG-sized tile
that is mostly background, most of the screen's own cost.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from model.dense import probability_map
from model.geometry import BORDER_PAD_PX, OUTPUT_STRIDE_PX, Grid
from model.tissue import non_glass_blocks

SCREEN_LAYERS: tuple[tuple[int, int, int], ...] = (
    (4, 2, 16),
    (3, 2, 32),
    (3, 2, 48),
    (3, 2, 64),
    (3, 1, 64),
    (3, 1, 64),
)
"""(kernel, stride, output channels) of each convolution, in order."""


def _grid_of(layers: tuple[tuple[int, int, int], ...]) -> Grid:
    field_px, jump_px = 1, 1
    for kernel, stride, _ in layers:
        field_px += (kernel - 1) * jump_px
        jump_px *= stride
    return Grid(field_px, jump_px)


SCREEN_GRID: Grid = _grid_of(SCREEN_LAYERS)
"""Receptive field 96 px, stride 16 px, derived from `SCREEN_LAYERS`."""

CELLS_PER_SCREEN_CELL = SCREEN_GRID.stride_px // OUTPUT_STRIDE_PX
"""P4 cells per screen cell along each axis (2)."""

SCREEN_TILE_CELLS = 32
"""Screen cells per tile side: 592 px input tiles, so that glass is skipped in pieces of half a millimetre or less."""


class ScreenNet(nn.Module):
    """(B, 3, H, W) float in [0, 1] -> (B, 1, h, w) logits, one cell per 96 px window every 16 px."""

    def __init__(self, layers: tuple[tuple[int, int, int], ...] = SCREEN_LAYERS):
        super().__init__()
        modules: list[nn.Module] = []
        in_channels = 3
        for kernel, stride, channels in layers:
            modules += [nn.Conv2d(in_channels, channels, kernel, stride=stride, bias=False), nn.BatchNorm2d(channels)]
            modules.append(nn.ReLU(inplace=True))
            in_channels = channels
        modules.append(nn.Conv2d(in_channels, 1, 1))
        self.layers = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def screen_scorer(
    network: ScreenNet, device: torch.device, dtype: torch.dtype | None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """(N, 3, h, w) float image -> (N, h', w') screen probability under `dtype` autocast."""

    def score(batch: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = network(batch)
        return torch.sigmoid(logits.float())[:, 0]

    return score


def screen_map_shape(height_px: int, width_px: int) -> tuple[int, int]:
    """The screen map's shape for an image, mirrored by the same margin as the P4 maps."""
    return SCREEN_GRID.map_shape(height_px + 2 * BORDER_PAD_PX, width_px + 2 * BORDER_PAD_PX)


def screen_cells_off_glass(image_rgb: np.ndarray) -> np.ndarray:
    """Screen cells whose window holds anything but glass (`model.tissue.glass_mask`, sampled every 4th pixel)."""
    stride_px = SCREEN_GRID.stride_px
    blocks = non_glass_blocks(image_rgb, stride_px)
    before = BORDER_PAD_PX // stride_px  # cell i's window starts `before` blocks above block i
    after = SCREEN_GRID.receptive_field_px // stride_px - before
    padded = np.pad(blocks, ((before, after), (before, after)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (before + after, before + after))
    rows, cols = screen_map_shape(*image_rgb.shape[:2])
    return windows.any(axis=(2, 3))[:rows, :cols]


def screen_map(
    image_rgb: np.ndarray,
    network: ScreenNet,
    device: torch.device,
    dtype: torch.dtype | None,
    cells: np.ndarray | None = None,
) -> np.ndarray:
    """The screen's probability map of an image (mirrored like the P4 maps); only glass is skipped (0 there).
    `cells`: `screen_cells_off_glass(image_rgb)` when the caller has it already."""
    scorer = screen_scorer(network, device, dtype)
    cells = screen_cells_off_glass(image_rgb) if cells is None else cells
    return probability_map(image_rgb, scorer, device, SCREEN_TILE_CELLS, grid=SCREEN_GRID, cells=cells, fitted=True)


def _owner_index(p4_cells: int, screen_cells: int) -> np.ndarray:
    """For each P4 cell along one axis, the screen cell that owns it (the edge cells go to the nearest screen cell)."""
    return np.clip((np.arange(p4_cells) - 1) // CELLS_PER_SCREEN_CELL, 0, screen_cells - 1)


def p4_cells_passing(screen_pass: np.ndarray, p4_shape: tuple[int, int]) -> np.ndarray:
    """Boolean P4-map mask: the P4 cells owned by screen cells where `screen_pass` is True."""
    rows = _owner_index(p4_shape[0], screen_pass.shape[0])
    cols = _owner_index(p4_shape[1], screen_pass.shape[1])
    return screen_pass[np.ix_(rows, cols)]


def screen_targets(p4_map: np.ndarray, screen_shape: tuple[int, int]) -> np.ndarray:
    """What a screen cell learns: the maximum of a P4-grid map over the cells it owns (`p4_cells_passing`'s rule)."""
    rows = _owner_index(p4_map.shape[0], screen_shape[0])
    cols = _owner_index(p4_map.shape[1], screen_shape[1])
    target = np.zeros(screen_shape, dtype=np.float32)
    by_rows = np.zeros((screen_shape[0], p4_map.shape[1]), dtype=np.float32)
    np.maximum.at(by_rows, rows, p4_map)
    np.maximum.at(target.T, cols, by_rows.T)
    return target
