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
    """The points of a tile's core, in pixels of the level read. `atypical_probability` (P(atypical) of each named
    figure, NaN for the other points) and `is_atypical` (the detector's decision) are None when the bundle has no
    atypical classifier: unknown, which a count must not read as "none atypical"."""

    key: str
    xy_px: np.ndarray  # (N, 2)
    probability: np.ndarray  # (N,)
    is_mitosis: np.ndarray  # (N,) bool
    seconds: float  # reading and detecting the tile
    atypical_probability: np.ndarray | None = None  # (N,)
    is_atypical: np.ndarray | None = None  # (N,) bool

    def save(self, path: Path) -> None:
        """To an .npz, atomically (an interrupted run keeps only whole tiles); `load` reads it back."""
        atypical = {}
        if self.atypical_probability is not None:
            atypical = {"atypical_probability": self.atypical_probability, "is_atypical": self.is_atypical}
        with atomic_output(path) as temporary, open(temporary, "wb") as stream:
            np.savez(
                stream,
                xy_px=self.xy_px,
                probability=self.probability,
                is_mitosis=self.is_mitosis,
                seconds=np.float64(self.seconds),
                **atypical,
            )

    @classmethod
    def load(cls, path: Path, key: str) -> TileResult:
        """What `save` wrote. Raises (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) for a file
        that is not one whole result (empty, truncated, arrays missing or of unmatched lengths): `wsi.count`
        detects such a tile again."""
        with np.load(path) as data:
            atypical = (data["atypical_probability"], data["is_atypical"]) if "is_atypical" in data.files else ()
            result = cls(key, data["xy_px"], data["probability"], data["is_mitosis"], float(data["seconds"]), *atypical)
        points = len(result.xy_px)
        shapes = [result.probability.shape, result.is_mitosis.shape, *(array.shape for array in atypical)]
        if result.xy_px.shape != (points, 2) or any(shape != (points,) for shape in shapes):
            raise ValueError(f"arrays of unmatched shapes {result.xy_px.shape}, {shapes}")
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
    """Read the tile with its margin, detect, keep the points of its core (level pixels of the whole slide), with
    the P(atypical) of its named figures where the bundle has the classifier. That probability is exact across
    seams too: a figure's 128 px crop (at 0.25 um/px) reaches 64 px from it, well inside the tile's margin
    (`wsi.tiles.MARGIN_PX`), and where the margin is cut by the slide's edge the crop mirrors at that edge, as on
    the whole slide; tiles start on the output stride (an even pixel: half-to-even rounding of a point to its
    crop's centre pixel does not depend on the tile)."""
    started = time.perf_counter()
    slide = _slide(slide_path, mpp_um)
    x0, y0, x1, y1 = tile.read
    rgb = slide.read(x0, y0, x1 - x0, y1 - y0)
    spacing_mm = slide.level_spacing_mm
    found = _detector(settings).detect(rgb, spacing_mm, source=f"{Path(slide_path).name} {tile.key}")
    xy_px = found.xy_px + np.array([x0, y0], dtype=np.float64)
    keep = tile.in_core(xy_px)
    seconds = time.perf_counter() - started
    atypical = ()
    if found.atypical_probability is not None:  # the detector's classifier: P(atypical) and its decision
        atypical = (found.atypical_probability[keep], found.is_atypical[keep])
    return TileResult(tile.key, xy_px[keep], found.probability[keep], found.is_mitosis[keep], seconds, *atypical)
