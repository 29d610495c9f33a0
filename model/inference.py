"""The detector: a cascade of dense networks over an image, candidates, agreement, physical coordinates.

`Detector.detect(image_rgb, spacing_mm, origin_mm)` is everything `process.py` needs. The cascade (`model.cascade`):
the screen (`model.screen`, when the bundle has one) marks where model A must look; model A scores those windows;
model B scores only the windows the output depends on, around A's candidates (exact: the same points as B
everywhere). `use_screen=False` runs the exact dense path (A everywhere); by default the screen runs on CPUs only (on
a GPU the exact path was faster: 11.0 against 13.3 s for a 39 MP image on an H100). CUDA is used when available (fp16
autocast), else CPU with bf16 autocast where the CPU supports it (about 2x faster here; the bundle's validation
numbers were measured with the same setting, see `model/weights/README.md`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model import cascade, spacing
from model.bundle import DEFAULT_BUNDLE_DIR, Bundle, load_networks, load_screen, read_bundle
from model.candidates import (
    Candidates,
    EnsembleDetections,
    agree,
    ensemble_probability,
    local_maxima,
    min_distance_cells,
)
from model.dense import DEFAULT_TILE_CELLS, covered_cells, probability_map
from model.geometry import RECEPTIVE_FIELD_PX, map_shape
from model.plain import PlainP4ResNet
from model.plausibility import looks_like_micrograph
from model.screen import p4_cells_passing, screen_map

logger = logging.getLogger(__name__)


def pick_device(requested: str | None = None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_supports_bf16() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The one precision rule of inference (also used where training ranks hard negatives and picks checkpoints, so
    that what is tuned is what ships): fp16 on CUDA, bf16 on a CPU that supports it, else fp32 (None)."""
    if precision == "fp32":
        return None
    if precision not in ("auto", "bf16", "fp16"):
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, not {precision!r}")
    if device.type == "cuda":
        return torch.float16 if precision in ("auto", "fp16") else torch.bfloat16
    if precision == "fp16":
        raise ValueError("fp16 autocast is for CUDA; use bf16 or fp32 on CPU")
    return torch.bfloat16 if (precision == "bf16" or cpu_supports_bf16()) else None


def window_scorer(network: torch.nn.Module, device: torch.device, dtype: torch.dtype | None):
    """(1, 3, h, w) float image -> (1, h', w') mitosis probability map of `network` under `dtype` autocast."""

    def score(batch: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = network(batch)
        return torch.softmax(logits.float(), dim=1)[:, 1]

    return score


PART_TILE_CELLS = {"A": 24, "B": 12}
"""Map cells per tile side where only part of a map is scored (the cascade), per model: A's cells come in patches
(262 px tiles), B's are scattered squares around A's candidates (166 px tiles). Measured on the 7215x5412 benchmark
tile, 2-core AMD EPYC: A 5.4 s with 24-cell tiles against 6.2-8.0 s with 16, 12 or 8; B 2.9 s with 12-cell tiles
against 4.0 s with 24."""
PART_FITTED_TILES = {"A": False, "B": True}
"""Tiles fitted to the wanted cells (`model.dense.tiles_holding`) or the fixed grid's tiles holding them. B's
output is exact whatever B scores beyond its wanted cells (`model.cascade`), so B takes the cheaper fitted tiles.
A keeps the fixed grid: which of A's candidates are trusted depends on every cell A scored, and the screen's
threshold keeps 99.5% of the points with the grid's cells (tiles fitted to the same mask kept only 98.0% at that
threshold and needed 0.19 instead of 0.26, which made A slower overall: 19.1 against 15.3 s end to end)."""
PART_BATCH_TILES = {"A": 4, "B": 16}
"""Tiles of that size scored per forward call (16 per call on a GPU)."""
CUDA_TILE_CELLS = 128
"""On a GPU, big tiles and big batches: 0.4 us per window for 128-cell tiles against 1.8 for 64 on an H100
(`benchmarks/window_throughput.py --device cuda`), where small tiles only add kernel launches."""
CUDA_PART_BATCH_TILES = 16


MapOf = Callable[[np.ndarray | None], tuple[np.ndarray, np.ndarray | None]]
"""cells mask (None: everywhere) -> (a P4 model's map, 0 where not scored; the cells scored, None: all)."""


def cascade_points(
    bundle: Bundle,
    spacing_mm: Sequence[float],
    map_a_of: MapOf,
    map_b_of: MapOf,
    passing: np.ndarray | None,
    full_maps: bool = False,
) -> tuple[Candidates, Candidates, EnsembleDetections]:
    """The cascade (`model.cascade`): A on the cells the screen passes (`passing`; None: everywhere), its candidates
    where trusted, B around them (everywhere with `full_maps`), and their agreement. The maps come from `map_*_of`, so
    the screen's threshold can be chosen by replaying this very function on full maps (`training.screen`)."""
    min_distance_px = spacing.px_from_um(bundle.candidate_min_distance_um, spacing_mm)
    md_cells = min_distance_cells(min_distance_px)
    radius_px = spacing.px_from_um(bundle.agreement_radius_um, spacing_mm)
    floor = bundle.candidate_floor

    def trusted(computed: np.ndarray | None) -> np.ndarray | None:
        return None if computed is None else cascade.trusted_cells(computed, md_cells)

    map_a, computed_a = map_a_of(None if passing is None else cascade.cells_near(passing, md_cells))
    candidates_a = local_maxima(map_a, min_distance_px, floor, trusted(computed_a))
    if full_maps:
        map_b, computed_b = map_b_of(None)
    else:  # B in two steps: around every A candidate, then the peak margin only where B can reach the floor
        map_b, computed_b = map_b_of(cascade.cells_for_model_b(candidates_a.cells, map_a.shape, radius_px, 0))
        candidates_a = candidates_a.subset(cascade.b_reaches_floor(map_b, candidates_a.cells, radius_px, floor))
        wanted = cascade.cells_for_model_b(candidates_a.cells, map_a.shape, radius_px, md_cells) & ~computed_b
        if wanted.any():
            more_b, more_computed = map_b_of(wanted)
            map_b, computed_b = np.where(computed_b, map_b, more_b), computed_b | more_computed
    candidates_b = local_maxima(map_b, min_distance_px, floor, trusted(computed_b))
    return candidates_a, candidates_b, agree(candidates_a, candidates_b, map_b, radius_px)


@dataclass(frozen=True)
class Detections:
    xy_px: np.ndarray  # (N, 2) continuous pixel coordinates (x, y)
    xy_mm: np.ndarray  # (N, 2) physical coordinates in mm
    probability: np.ndarray  # (N,) ensemble probability
    agreed: np.ndarray  # (N,) bool: both models have a candidate here
    is_mitosis: np.ndarray  # (N,) bool: agreed, >= threshold, and on a micrograph (`model.plausibility`)


class Detector:
    """Loads the bundle once; `detect` may then be called for any number of images."""

    def __init__(
        self,
        bundle_dir: Path = DEFAULT_BUNDLE_DIR,
        device: str | None = None,
        precision: str = "auto",
        tile_cells: int | None = None,
        use_screen: bool | None = None,
    ):
        self.bundle_dir = Path(bundle_dir)
        self.bundle: Bundle = read_bundle(self.bundle_dir)
        self.device = pick_device(device)
        self.networks = [
            net.to(self.device).to(memory_format=torch.channels_last) for net in load_networks(self.bundle, bundle_dir)
        ]
        if use_screen is None:  # the screen pays on CPUs; on a GPU the exact dense path is faster (README)
            use_screen = self.device.type == "cpu"
        screen = load_screen(self.bundle, bundle_dir) if use_screen else None
        self.screen = screen.to(self.device).to(memory_format=torch.channels_last) if screen is not None else None
        self.autocast_dtype = autocast_dtype(self.device, precision)
        on_gpu = self.device.type == "cuda"
        self.tile_cells = tile_cells or (CUDA_TILE_CELLS if on_gpu else DEFAULT_TILE_CELLS)
        self.part_batch_tiles = {
            policy: CUDA_PART_BATCH_TILES if on_gpu else batch for policy, batch in PART_BATCH_TILES.items()
        }

    def _score_fn(self, network: PlainP4ResNet):
        return window_scorer(network, self.device, self.autocast_dtype)

    def _map_of(self, role: str, network: PlainP4ResNet, image_rgb: np.ndarray, progress: bool) -> MapOf:
        """`MapOf` for one P4 model (`role` "A" or "B" in the cascade) on one image."""
        tile_cells, batch_tiles, fitted = PART_TILE_CELLS[role], self.part_batch_tiles[role], PART_FITTED_TILES[role]

        def map_of(cells: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
            score = self._score_fn(network)
            if cells is None:
                return probability_map(image_rgb, score, self.device, self.tile_cells, progress), None
            values = probability_map(
                image_rgb, score, self.device, tile_cells, progress, cells=cells, batch_tiles=batch_tiles, fitted=fitted
            )
            return values, covered_cells(cells, tile_cells, fitted)

        return map_of

    def screen_passing(self, image_rgb: np.ndarray) -> np.ndarray:
        """P4 cells the screen passes (owned by screen cells at or above the bundle's screen threshold)."""
        probability = screen_map(image_rgb, self.screen, self.device, self.autocast_dtype)
        return p4_cells_passing(probability >= self.bundle.screen.threshold, map_shape(*image_rgb.shape[:2]))

    def candidates(
        self, image_rgb: np.ndarray, spacing_mm: Sequence[float], progress: bool = False, full_maps: bool = False
    ) -> tuple[Candidates, Candidates, EnsembleDetections]:
        """Each model's local maxima and their merge, through the cascade (`cascade_points`). Threshold tuning
        scores single models too: it passes `full_maps` (both models everywhere, no screen), as B's own candidates
        are complete only where B scored everywhere."""
        passing = self.screen_passing(image_rgb) if self.screen is not None and not full_maps else None
        map_a_of, map_b_of = (
            self._map_of(role, net, image_rgb, progress) for role, net in zip("AB", self.networks, strict=True)
        )
        return cascade_points(self.bundle, spacing_mm, map_a_of, map_b_of, passing, full_maps)

    def detect(
        self,
        image_rgb: np.ndarray,
        spacing_mm: Sequence[float] = (spacing.DEFAULT_SPACING_MM, spacing.DEFAULT_SPACING_MM),
        origin_mm: Sequence[float] = (0.0, 0.0),
        progress: bool = False,
    ) -> Detections:
        """All candidates of an (H, W, 3) uint8 image with ensemble probabilities and the mitosis decision."""
        merged = self.candidates(image_rgb, spacing_mm, progress)[2]
        keep = merged.probability >= self.bundle.candidate_floor
        xy_px, probability, agreed = merged.xy_px[keep], merged.probability[keep], merged.agreed[keep]
        return Detections(
            xy_px=xy_px,
            xy_mm=spacing.mm_from_px(xy_px, spacing_mm, origin_mm),
            probability=probability,
            agreed=agreed,
            # `model.plausibility`: nothing is named where the window is not a micrograph (noise, synthetic junk)
            is_mitosis=agreed & (probability >= self.bundle.threshold) & looks_like_micrograph(image_rgb, xy_px),
        )

    @torch.no_grad()
    def centre_probability(self, patch_rgb: np.ndarray) -> float:
        """Ensemble probability that a patch (any size >= 1 px) is centred on a mitotic figure.

        The central 78 px window is scored; patches smaller than the receptive field are reflection-padded.
        """
        window = centre_window(patch_rgb)
        scores = [
            float(probability_map(window, self._score_fn(net), self.device, pad_px=0)[0, 0]) for net in self.networks
        ]
        return float(ensemble_probability(np.float64(scores[0]), np.float64(scores[1])))


def centre_window(patch_rgb: np.ndarray) -> np.ndarray:
    """The receptive-field-sized window centred on the patch centre, reflection-padded when the patch is smaller."""
    height, width = patch_rgb.shape[:2]
    pad_y, pad_x = max(0, RECEPTIVE_FIELD_PX - height), max(0, RECEPTIVE_FIELD_PX - width)
    if pad_y or pad_x:
        patch_rgb = np.pad(
            patch_rgb, ((pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2), (0, 0)), mode="reflect"
        )
        height, width = patch_rgb.shape[:2]
    y0, x0 = (height - RECEPTIVE_FIELD_PX) // 2, (width - RECEPTIVE_FIELD_PX) // 2
    return patch_rgb[y0 : y0 + RECEPTIVE_FIELD_PX, x0 : x0 + RECEPTIVE_FIELD_PX]
