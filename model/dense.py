"""Dense application of a window scorer to an image of any size, tile by tile, in bounded memory.

Tiles are aligned to the output-stride grid and overlap by `TILE_OVERLAP_PX` (receptive field - stride), so every
78 px window of the image lies entirely inside exactly one tile: the stitched map equals whole-image application
(up to floating-point summation order). Peak memory depends on the tile size, never on the image size: the image
may be a numpy memory map or any array-like that supports slicing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from model.geometry import OUTPUT_STRIDE_PX, RECEPTIVE_FIELD_PX, map_shape

DEFAULT_TILE_CELLS = 128
"""Map cells per tile side: 1094 px input tiles (78 + 127 * 8), the fastest size measured on CPU."""


def tile_grid(map_height: int, map_width: int, tile_cells: int) -> Iterator[tuple[int, int, int, int]]:
    """(row0, col0, rows, cols) of map-cell tiles covering the whole map, row-major."""
    for row0 in range(0, map_height, tile_cells):
        for col0 in range(0, map_width, tile_cells):
            yield row0, col0, min(tile_cells, map_height - row0), min(tile_cells, map_width - col0)


def input_window_of_tile(row0: int, col0: int, rows: int, cols: int) -> tuple[slice, slice]:
    """Image rows/cols a tile of map cells needs: its first window's origin to its last window's end."""
    y0, x0 = row0 * OUTPUT_STRIDE_PX, col0 * OUTPUT_STRIDE_PX
    return (
        slice(y0, y0 + (rows - 1) * OUTPUT_STRIDE_PX + RECEPTIVE_FIELD_PX),
        slice(x0, x0 + (cols - 1) * OUTPUT_STRIDE_PX + RECEPTIVE_FIELD_PX),
    )


def to_input_tensor(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (1, 3, H, W) in [0, 1], channels-last memory (faster convolutions on CPU)."""
    tensor = torch.from_numpy(np.ascontiguousarray(rgb)).to(device).permute(2, 0, 1).unsqueeze(0).float() / 255.0
    return tensor.contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def probability_map(
    image_rgb: np.ndarray,
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    tile_cells: int = DEFAULT_TILE_CELLS,
    progress: bool = False,
) -> np.ndarray:
    """Dense mitosis probability (float32, one cell per stride) of a uint8 (H, W, 3) image.

    `score_fn` maps a (1, 3, h, w) float tensor to (1, h', w') probabilities (see `model.inference`).
    """
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image_rgb.shape}")
    height_px, width_px = image_rgb.shape[:2]
    map_height, map_width = map_shape(height_px, width_px)
    result = np.zeros((map_height, map_width), dtype=np.float32)
    tiles = list(tile_grid(map_height, map_width, tile_cells))
    for row0, col0, rows, cols in tqdm(tiles, desc="tiles", unit="tile", disable=not progress, leave=False):
        rows_px, cols_px = input_window_of_tile(row0, col0, rows, cols)
        probabilities = score_fn(to_input_tensor(image_rgb[rows_px, cols_px], device))
        result[row0 : row0 + rows, col0 : col0 + cols] = probabilities[0].float().cpu().numpy()
    return result
