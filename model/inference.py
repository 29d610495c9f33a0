"""The detector: both policy models densely over an image, candidates, agreement, physical coordinates.

`Detector.detect(image_rgb, spacing_mm, origin_mm)` is everything `process.py` needs. CUDA is used when available
(fp16 autocast), else CPU with bf16 autocast where the CPU supports it (about 2x faster here; the bundle's
validation numbers were measured with the same setting, see `model/weights/README.md`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model import spacing
from model.bundle import DEFAULT_BUNDLE_DIR, Bundle, load_networks, read_bundle
from model.candidates import Candidates, EnsembleDetections, agree, ensemble_probability, local_maxima
from model.dense import DEFAULT_TILE_CELLS, probability_map
from model.geometry import RECEPTIVE_FIELD_PX
from model.plain import PlainP4ResNet
from model.plausibility import looks_like_micrograph

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
        tile_cells: int = DEFAULT_TILE_CELLS,
    ):
        self.bundle_dir = Path(bundle_dir)
        self.bundle: Bundle = read_bundle(self.bundle_dir)
        self.device = pick_device(device)
        self.networks = [
            net.to(self.device).to(memory_format=torch.channels_last) for net in load_networks(self.bundle, bundle_dir)
        ]
        self.autocast_dtype = autocast_dtype(self.device, precision)
        self.tile_cells = tile_cells

    def _score_fn(self, network: PlainP4ResNet):
        return window_scorer(network, self.device, self.autocast_dtype)

    def probability_maps(self, image_rgb: np.ndarray, progress: bool = False) -> list[np.ndarray]:
        """One dense map per policy model (bundle order)."""
        return [
            probability_map(image_rgb, self._score_fn(net), self.device, self.tile_cells, progress)
            for net in self.networks
        ]

    def candidates(
        self, image_rgb: np.ndarray, spacing_mm: Sequence[float], progress: bool = False
    ) -> tuple[Candidates, Candidates, EnsembleDetections]:
        """Each model's local maxima and their merge (threshold tuning scores single models and the ensemble)."""
        map_a, map_b = self.probability_maps(image_rgb, progress)
        min_distance_px = spacing.px_from_um(self.bundle.candidate_min_distance_um, spacing_mm)
        floor = self.bundle.candidate_floor
        candidates_a = local_maxima(map_a, min_distance_px, floor)
        candidates_b = local_maxima(map_b, min_distance_px, floor)
        radius_px = spacing.px_from_um(self.bundle.agreement_radius_um, spacing_mm)
        return candidates_a, candidates_b, agree(candidates_a, candidates_b, map_a, map_b, radius_px)

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
        scores = [float(probability_map(window, self._score_fn(net), self.device)[0, 0]) for net in self.networks]
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
