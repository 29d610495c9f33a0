"""Tissue and glass at low resolution: where the screen need not look, and how much tissue an image holds.

Thresholds are for 8-bit H&E at 40x: glass is ~230-250 in every channel with almost no saturation
(saturation = (max - min) / max). `tissue_mask` is stained tissue (dark enough and coloured); `glass_mask` is its
conservative opposite, bright and colourless at once, the only thing the screen skips (`model.screen`): a mitosis
is dark and stained, never glass.
"""

from __future__ import annotations

import numpy as np

MAX_BRIGHTNESS = 215.0
"""Mean 8-bit intensity above which a pixel may be glass."""
MIN_SATURATION = 0.07
"""Saturation below which a pixel may be glass (or grey)."""


def _brightness_saturation(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb must have shape (H, W, 3), got {rgb.shape}")
    brightest = rgb.max(axis=-1)
    return rgb.mean(axis=-1), (brightest - rgb.min(axis=-1)) / np.maximum(brightest, 1.0)


def tissue_mask(
    rgb: np.ndarray, max_brightness: float = MAX_BRIGHTNESS, min_saturation: float = MIN_SATURATION
) -> np.ndarray:
    """Boolean (H, W) mask of stained tissue: not bright glass and not grey."""
    brightness, saturation = _brightness_saturation(rgb)
    return (brightness < max_brightness) & (saturation > min_saturation)


def glass_mask(rgb: np.ndarray) -> np.ndarray:
    """Boolean (H, W) mask of pixels that are bright and colourless at once (glass, empty background)."""
    brightness, saturation = _brightness_saturation(rgb)
    return (brightness >= MAX_BRIGHTNESS) & (saturation <= MIN_SATURATION)


def non_glass_blocks(image_rgb: np.ndarray, block_px: int, sample_px: int = 4) -> np.ndarray:
    """(ceil(H / block), ceil(W / block)) mask: does the block hold any non-glass pixel among every `sample_px`-th
    pixel? Read in strips of blocks, so memory stays bounded for any image size."""
    height_px, width_px = image_rgb.shape[:2]
    if block_px % sample_px:
        raise ValueError(f"block_px {block_px} must be a multiple of sample_px {sample_px}")
    per_block = block_px // sample_px
    rows, cols = -(-height_px // block_px), -(-width_px // block_px)
    blocks = np.zeros((rows, cols), dtype=bool)
    strip_blocks = max(1, 2048 // block_px)
    for row0 in range(0, rows, strip_blocks):
        strip = np.asarray(image_rgb[row0 * block_px : (row0 + strip_blocks) * block_px : sample_px, ::sample_px])
        occupied = ~glass_mask(strip)
        strip_rows = -(-occupied.shape[0] // per_block)
        padded = np.zeros((strip_rows * per_block, cols * per_block), dtype=bool)
        padded[: occupied.shape[0], : occupied.shape[1]] = occupied
        blocks[row0 : row0 + strip_rows] = padded.reshape(strip_rows, per_block, cols, per_block).any(axis=(1, 3))
    return blocks
