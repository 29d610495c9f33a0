"""Dense application of a window scorer to an image of any size, tile by tile, in bounded memory.

The image is mirrored by `BORDER_PAD_PX` on every side (lazily: `MirroredImage` reads only what a tile needs), so
windows are centred up to the image's edges. Tiles are aligned to the output-stride grid and overlap by the receptive
field minus the stride, so every window of the padded image lies entirely inside exactly one tile: the stitched map
equals whole-image application (up to floating-point summation order). Peak memory depends on the tile size, never
on the image size: the image may be a numpy memory map or any array-like that supports slicing.

`probability_map(..., cells=mask)` scores only the tiles that hold a cell of `mask` (the cascade of
`model.cascade`: the screen decides where model A looks, model A where model B looks); the other cells stay 0 and
`covered_cells` says which cells were computed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from scipy import ndimage

from model.geometry import BORDER_PAD_PX, P4_GRID, Grid
from model.precision import autocast
from model.progress import progress_bar

DEFAULT_TILE_CELLS = 64
"""Map cells per tile side for a full map on a CPU: 582 px input tiles (78 + 63 * 8), small enough to stay in cache
(measured in docs/performance.md, "Tile and batch settings")."""


def reflect_indices(indices: np.ndarray, length: int) -> np.ndarray:
    """Indices mirrored into [0, length) as numpy's "reflect" padding does (the edge pixel is not repeated)."""
    if length == 1:
        return np.zeros_like(indices)
    period = 2 * (length - 1)
    folded = np.abs(indices) % period
    return np.where(folded >= length, period - folded, folded)


class MirroredImage:
    """An (H, W, 3) image seen mirrored by `pad_px` on every side, read slice by slice without copying the whole.

    `view[rows, cols]` equals `np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")[rows, cols]`.
    """

    def __init__(self, image_rgb: np.ndarray, pad_px: int = BORDER_PAD_PX):
        height_px, width_px = image_rgb.shape[:2]
        if pad_px and min(height_px, width_px) <= pad_px:
            raise ValueError(f"image of {width_px}x{height_px} px is too small to be mirrored by {pad_px} px")
        self.image = image_rgb
        self.pad_px = pad_px
        self.shape = (height_px + 2 * pad_px, width_px + 2 * pad_px, *image_rgb.shape[2:])

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        rows, cols = (range(*part.indices(size)) for part, size in zip(key, self.shape[:2], strict=True))
        height_px, width_px = self.image.shape[:2]
        y0, y1 = rows.start - self.pad_px, rows.stop - self.pad_px
        x0, x1 = cols.start - self.pad_px, cols.stop - self.pad_px
        if 0 <= y0 and 0 <= x0 and y1 <= height_px and x1 <= width_px:
            return np.asarray(self.image[y0:y1, x0:x1])
        row_index = reflect_indices(np.arange(y0, y1), height_px)
        col_index = reflect_indices(np.arange(x0, x1), width_px)
        top, left = int(row_index.min()), int(col_index.min())
        block = np.asarray(self.image[top : int(row_index.max()) + 1, left : int(col_index.max()) + 1])
        return block[np.ix_(row_index - top, col_index - left)]


def tile_grid(map_height: int, map_width: int, tile_cells: int) -> Iterator[tuple[int, int, int, int]]:
    """(row0, col0, rows, cols) of map-cell tiles covering the whole map, row-major."""
    for row0 in range(0, map_height, tile_cells):
        for col0 in range(0, map_width, tile_cells):
            yield row0, col0, min(tile_cells, map_height - row0), min(tile_cells, map_width - col0)


def input_window_of_tile(row0: int, col0: int, rows: int, cols: int, grid: Grid = P4_GRID) -> tuple[slice, slice]:
    """Input rows/cols a tile of map cells needs: its first window's origin to its last window's end."""
    y0, x0 = row0 * grid.stride_px, col0 * grid.stride_px
    return (
        slice(y0, y0 + (rows - 1) * grid.stride_px + grid.receptive_field_px),
        slice(x0, x0 + (cols - 1) * grid.stride_px + grid.receptive_field_px),
    )


def tiles_holding(
    cells: np.ndarray | None, map_shape: tuple[int, int], tile_cells: int, fitted: bool = False
) -> list[tuple[int, ...]]:
    """Tiles (row0, col0, rows, cols) that score every cell of the boolean mask `cells` (all of `tile_grid` when None).

    Fixed grid (default): the tiles of `tile_grid` that hold a wanted cell. `fitted`: each 8-connected group of
    wanted cells gets its own grid of tiles laid from the group's top-left corner, and each of its tiles that holds a
    cell of the group shrinks to those cells (sides rounded up, `_fitted_tile`). A tile's input is its side plus the
    receptive field, so the fixed grid, which cuts small groups in up to four pieces and scores whole tiles around a
    few cells, scores far more (docs/performance.md, "Tile and batch settings").
    Fitted tiles of different groups may overlap; a cell's value does not depend on the tile that scores it (up to
    floating-point summation order).
    """
    if cells is None:
        return list(tile_grid(*map_shape, tile_cells))
    if cells.shape != tuple(map_shape):
        raise ValueError(f"cell mask of shape {cells.shape} does not match the map's {tuple(map_shape)}")
    if not fitted:
        return [(r, c, h, w) for r, c, h, w in tile_grid(*map_shape, tile_cells) if cells[r : r + h, c : c + w].any()]
    groups, _ = ndimage.label(cells, structure=np.ones((3, 3), dtype=bool))
    tiles = []
    for label, (rows, cols) in enumerate(ndimage.find_objects(groups), start=1):
        group = groups[rows, cols] == label
        for row0, col0, height, width in tile_grid(*group.shape, tile_cells):
            part = group[row0 : row0 + height, col0 : col0 + width]
            held_rows, held_cols = np.flatnonzero(part.any(axis=1)), np.flatnonzero(part.any(axis=0))
            if len(held_rows):
                top, left = rows.start + row0 + int(held_rows[0]), cols.start + col0 + int(held_cols[0])
                height_held = int(held_rows[-1] - held_rows[0]) + 1
                width_held = int(held_cols[-1] - held_cols[0]) + 1
                tiles.append(_fitted_tile(top, height_held, left, width_held, map_shape, tile_cells))
    return tiles


TILE_SIDE_STEP_CELLS = 8
"""Fitted tiles' sides are rounded up to a multiple of this (or to the tile size): every new input shape costs
oneDNN a new set of convolution kernels, and free-form sides made the fitted tiles slower than the fixed grid."""


def _fitted_tile(
    row0: int, rows: int, col0: int, cols: int, map_shape: tuple[int, int], tile_cells: int
) -> tuple[int, int, int, int]:
    """The tile (row0, col0, rows, cols) holding the given box, its sides rounded up to `TILE_SIDE_STEP_CELLS`
    (at most `tile_cells`, at most the map) and moved back inside the map where it would stick out."""
    placed = []
    for start, length, size in ((row0, rows, map_shape[0]), (col0, cols, map_shape[1])):
        side = min(-(-length // TILE_SIDE_STEP_CELLS) * TILE_SIDE_STEP_CELLS, tile_cells, size)
        placed.append((min(start, size - side), side))
    (row0, rows), (col0, cols) = placed
    return row0, col0, rows, cols


def covered_cells(cells: np.ndarray, tile_cells: int, fitted: bool = False) -> np.ndarray:
    """Cells `probability_map(..., cells=cells, tile_cells=tile_cells, fitted=fitted)` computes: every cell of a tile
    it scores."""
    covered = np.zeros(cells.shape, dtype=bool)
    for row0, col0, rows, cols in tiles_holding(cells, cells.shape, tile_cells, fitted):
        covered[row0 : row0 + rows, col0 : col0 + cols] = True
    return covered


def to_input_tensor(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (N, 3, H, W) in [0, 1], channels-last memory (faster convolutions on CPU)."""
    tensor = torch.from_numpy(np.ascontiguousarray(rgb)).to(device)
    tensor = tensor.reshape(-1, *tensor.shape[-3:]).permute(0, 3, 1, 2).float() / 255.0
    return tensor.contiguous(memory_format=torch.channels_last)


def window_scorer(network: torch.nn.Module, device: torch.device, dtype: torch.dtype | None):
    """`network` as a `score_fn`: (N, 3, h, w) float images -> (N, h', w') mitosis probability under `dtype`
    autocast (`model.precision`)."""

    def score(batch: torch.Tensor) -> torch.Tensor:
        with autocast(device, dtype):
            logits = network(batch)
        return torch.softmax(logits.float(), dim=1)[:, 1]

    return score


@torch.no_grad()
def probability_map(
    image_rgb: np.ndarray,
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device,
    tile_cells: int = DEFAULT_TILE_CELLS,
    progress: bool | str = False,
    pad_px: int = BORDER_PAD_PX,
    cells: np.ndarray | None = None,
    grid: Grid = P4_GRID,
    batch_tiles: int = 1,
    fitted: bool = False,
) -> np.ndarray:
    """Dense probability (float32, one cell per stride) of a uint8 (H, W, 3) image mirrored by `pad_px`.

    `score_fn` maps an (N, 3, h, w) float tensor to (N, h', w') probabilities (`window_scorer`). With a boolean
    `cells` mask, only the tiles holding one of its cells are scored (`covered_cells`; `fitted`: tiles fitted to
    the mask, `tiles_holding`), `batch_tiles` of the same shape per call; every other cell is 0. `progress`: a bar
    on a terminal, named by the string given (the stage: "model A"), else "tiles".
    """
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image_rgb.shape}")
    padded = MirroredImage(image_rgb, pad_px) if pad_px else image_rgb
    map_height, map_width = grid.map_shape(*padded.shape[:2])
    result = np.zeros((map_height, map_width), dtype=np.float32)
    tiles = tiles_holding(cells, (map_height, map_width), tile_cells, fitted)
    batches = [tiles[i : i + 1] for i in range(len(tiles))]
    if batch_tiles > 1:  # tiles of one shape share a forward call (the last row/column of tiles may be smaller)
        by_shape: dict[tuple[int, int], list] = {}
        for tile in tiles:
            by_shape.setdefault(tile[2:], []).append(tile)
        batches = [group[i : i + batch_tiles] for group in by_shape.values() for i in range(0, len(group), batch_tiles)]
    stage = progress if isinstance(progress, str) else "tiles"

    def score_batch(batch: list[tuple[int, ...]]) -> np.ndarray:
        windows = [padded[input_window_of_tile(*tile, grid)] for tile in batch]
        return score_fn(to_input_tensor(np.stack(windows), device)).float().cpu().numpy()

    with progress_bar(total=len(tiles), stage=stage, unit="tile", show=bool(progress)) as bar:
        # in order, whichever worker scored a batch: fitted tiles may overlap, and the last write must not vary
        for batch, probabilities in zip(batches, in_tile_workers(score_batch, batches, device), strict=True):
            for (row0, col0, rows, cols), tile_map in zip(batch, probabilities, strict=True):
                result[row0 : row0 + rows, col0 : col0 + cols] = tile_map
            bar.update(len(batch))
    return result


def in_tile_workers(score_batch: Callable[[list], np.ndarray], batches: list[list], device: torch.device) -> Iterator:
    """`score_batch` of each batch, in order. On a CPU, one single-threaded worker per thread of the budget
    (`model.threads`) scores whole batches side by side: a 2-thread convolution meets its other thread at a barrier
    after every layer, and with passive waiting (needed on a busy machine) each meeting costs a wake-up; small tiles
    meet thousands of times (docs/performance.md, "Threads"). Workers never meet. A batch's result does not depend on
    the worker that scored it (each scores single-threaded). As many workers as torch has threads in the calling
    thread (`process.py --threads`)."""
    threads = torch.get_num_threads()  # the budget process.py set (`model.threads`), or what a caller chose
    workers = min(threads, len(batches)) if device.type == "cpu" else 1
    if workers <= 1:
        yield from map(score_batch, batches)
        return

    def score_alone(batch: list) -> np.ndarray:
        torch.set_num_threads(1)  # this worker thread's own OpenMP team: itself
        with torch.no_grad():  # grad mode is per thread
            return score_batch(batch)

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tiles")
    try:
        queued = 2 * workers  # a worker finishing before the oldest batch finds the next one waiting
        pending = deque(pool.submit(score_alone, batch) for batch in batches[:queued])
        for batch in batches[queued:]:  # at most `queued` batches in flight or waiting: bounded memory
            done = pending.popleft().result()
            pending.append(pool.submit(score_alone, batch))
            yield done
        while pending:
            yield pending.popleft().result()
    finally:  # an error or Ctrl-C: drop the waiting batches, let the running ones end
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)  # the workers lowered torch's default for threads started later
