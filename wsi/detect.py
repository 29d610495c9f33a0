"""One tile of one slide through the project's detector: the unit of work of `wsi.count`, in this process or on a
Dask worker.

A worker keeps its detector and its open slides between tiles (`_detector`, `_slide`), so the models load once
per worker. The exact dense path runs (`use_screen=False`): its output at a point does not depend on where the tile
starts (`wsi.tiles`), and on tissue, the only place slides are read, the screen saves little.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.atomic_files import atomic_output
from wsi.slide import Slide, open_slide
from wsi.tiles import Tile


@dataclass(frozen=True)
class DetectorSettings:
    """What a worker needs to build the same detector as the command: hashable, so workers cache by it."""

    bundle_dir: str
    device: str | None = None
    precision: str = "auto"
    threads: int = 0  # torch CPU threads per worker; 0: torch's choice
    verifier: bool = True  # the bundle's second stage (`model.verifier`)


@dataclass(frozen=True)
class TileResult:
    """The points of a tile's core, in pixels of the level read."""

    key: str
    xy_px: np.ndarray  # (N, 2)
    probability: np.ndarray  # (N,)
    is_mitosis: np.ndarray  # (N,) bool
    seconds: float  # reading and detecting the tile

    def save(self, path: Path) -> None:
        """To an .npz, atomically (an interrupted run keeps only whole tiles); `load` reads it back."""
        with atomic_output(path) as temporary, open(temporary, "wb") as stream:
            np.savez(
                stream,
                xy_px=self.xy_px,
                probability=self.probability,
                is_mitosis=self.is_mitosis,
                seconds=np.float64(self.seconds),
            )

    @classmethod
    def load(cls, path: Path, key: str) -> TileResult:
        """What `save` wrote. Raises (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) for a file
        that is not one whole result (empty, truncated, arrays missing or of unmatched lengths): `wsi.count`
        detects such a tile again."""
        with np.load(path) as data:
            result = cls(key, data["xy_px"], data["probability"], data["is_mitosis"], float(data["seconds"]))
        points = len(result.xy_px)
        if (
            result.xy_px.shape != (points, 2)
            or result.probability.shape != (points,)
            or result.is_mitosis.shape != (points,)
        ):
            raise ValueError(f"arrays of unmatched shapes {result.xy_px.shape}, {result.probability.shape}")
        return result


@functools.lru_cache(maxsize=2)
def _detector(settings: DetectorSettings):
    import torch

    from model import Detector

    if settings.threads:
        torch.set_num_threads(settings.threads)
    return Detector(
        Path(settings.bundle_dir),
        device=settings.device,
        precision=settings.precision,
        use_screen=False,
        verifier=settings.verifier,
    )


@functools.lru_cache(maxsize=8)
def _slide(path: str, mpp_um: float | None) -> Slide:
    return open_slide(Path(path), mpp_um)


def detect_tile(slide_path: str, mpp_um: float | None, tile: Tile, settings: DetectorSettings) -> TileResult:
    """Read the tile with its margin, detect, keep the points of its core (level pixels of the whole slide)."""
    started = time.perf_counter()
    slide = _slide(slide_path, mpp_um)
    x0, y0, x1, y1 = tile.read
    rgb = slide.read(x0, y0, x1 - x0, y1 - y0)
    spacing_mm = slide.level_spacing_mm
    found = _detector(settings).detect(rgb, spacing_mm, source=f"{Path(slide_path).name} {tile.key}")
    xy_px = found.xy_px + np.array([x0, y0], dtype=np.float64)
    keep = tile.in_core(xy_px)
    seconds = time.perf_counter() - started
    return TileResult(tile.key, xy_px[keep], found.probability[keep], found.is_mitosis[keep], seconds)
