"""The detector: `Detector(...).detect(image_rgb, spacing_mm, origin_mm)` is the one way in for every caller.

`process.py`, the benchmarks, field validation and the training tools call `detect` and nothing below it. It
resamples an image whose pixel size is off the networks' 0.25 um/px (`model.resample`), runs the cascade of dense
networks (`model.cascade`: the screen where the bundle has one, model A, model B around A's candidates), merges the
two policies' candidates, and names mitotic figures by the one naming rule (`model.candidates.name_mitotic_figures`:
both models agree, at or above the bundle's threshold, on a micrograph). Coordinates come back in the input's pixels
and in millimetres.

By default the screen runs on CPUs only: on a GPU the exact dense path (model A everywhere) is faster
(docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model import cascade, spacing
from model.atypical import crops_around
from model.bundle import (
    DEFAULT_BUNDLE_DIR,
    POLICY_NAMES,
    Bundle,
    load_atypical,
    load_networks,
    load_screen,
    load_verifier,
    read_bundle,
)
from model.candidates import (
    Candidates,
    EnsembleDetections,
    ensemble_probability,
    name_mitotic_figures,
    only_micrographs,
)
from model.dense import DEFAULT_TILE_CELLS, probability_map, window_scorer
from model.geometry import OUTPUT_STRIDE_PX, RECEPTIVE_FIELD_PX, map_shape
from model.plain import PlainP4ResNet
from model.precision import autocast_dtype, pick_device
from model.resample import AtModelSpacing, to_model_spacing
from model.screen import p4_cells_passing, screen_cells_off_glass, screen_map


@dataclass(frozen=True)
class Detections:
    xy_px: np.ndarray  # (N, 2) continuous pixel coordinates (x, y) of the input image
    xy_mm: np.ndarray  # (N, 2) physical coordinates in mm
    probability: np.ndarray  # (N,) the output probability: the verifier's where it runs, else the ensemble's
    agreed: np.ndarray  # (N,) bool: both models have a candidate here
    is_mitosis: np.ndarray  # (N,) bool: the naming rule (the verifier's, or `model.candidates.name_mitotic_figures`)
    ensemble_probability: np.ndarray | None = None  # (N,) the two dense nets' probability (their minimum)
    atypical_probability: np.ndarray | None = None
    """(N,) P(atypical) of each named mitotic figure (`model.atypical`); NaN for the other candidates; None without
    the bundle's atypical classifier."""
    is_atypical: np.ndarray | None = None
    """(N,) bool: named mitotic figures the classifier calls atypical (its own rule, `AtypicalClassifier.is_atypical`);
    None without the classifier."""


class Detector:
    """Loads the bundle once (checksums verified); `detect` may then be called for any number of images."""

    def __init__(
        self,
        bundle_dir: Path = DEFAULT_BUNDLE_DIR,
        device: str | None = None,
        precision: str = "auto",
        tile_cells: int | None = None,
        use_screen: bool | None = None,
        verifier: bool = True,
        atypical: bool = True,
    ):
        self.bundle_dir = Path(bundle_dir)
        self.bundle: Bundle = read_bundle(self.bundle_dir)
        self.device = pick_device(device)
        self.autocast_dtype = autocast_dtype(self.device, precision)
        self.networks = [
            net.to(self.device).to(memory_format=torch.channels_last) for net in load_networks(self.bundle, bundle_dir)
        ]
        if use_screen is None:  # the screen pays on CPUs; on a GPU the exact dense path is faster
            use_screen = self.device.type == "cpu"
        self.verifier = load_verifier(self.bundle, bundle_dir) if verifier else None
        """The second stage (`model.verifier`); None: the dense nets' own rule, today's output exactly."""
        self.atypical = load_atypical(self.bundle, self.networks, bundle_dir) if atypical else None
        """P(atypical) of each named figure (`model.atypical`); None: no atypical probabilities."""
        screen = load_screen(self.bundle, bundle_dir) if use_screen else None
        self.screen = screen.to(self.device).to(memory_format=torch.channels_last) if screen is not None else None
        on_gpu = self.device.type == "cuda"
        self.tile_cells = tile_cells or (cascade.CUDA_TILE_CELLS if on_gpu else DEFAULT_TILE_CELLS)
        self.part_batch_tiles = {
            role: cascade.CUDA_PART_BATCH_TILES if on_gpu else batch for role, batch in cascade.PART_BATCH_TILES.items()
        }

    def detect(
        self,
        image_rgb: np.ndarray,
        spacing_mm: Sequence[float] = (spacing.DEFAULT_SPACING_MM, spacing.DEFAULT_SPACING_MM),
        origin_mm: Sequence[float] = (0.0, 0.0),
        progress: bool = False,
        source: str = "image",
    ) -> Detections:
        """Every candidate of an (H, W, 3) uint8 image at `spacing_mm` (x, y), with its probability (the verifier's
        where the detector has one) and the mitosis decision. Raises ValueError (one line) for a resolution outside
        `model.spacing.USABLE_SPACING_MM`, an image smaller than the receptive field at the networks' pixel size, or
        a spacing or origin that is not a finite number."""
        image_rgb = np.asarray(image_rgb)
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image_rgb.dtype} {image_rgb.shape}")
        spacing_mm, origin_mm = _xy("spacing_mm", spacing_mm), _xy("origin_mm", origin_mm)
        spacing.check_usable_spacing(spacing_mm)
        height_px, width_px = image_rgb.shape[:2]
        model_width_px, model_height_px = (
            spacing.model_size_px(width_px, height_px, spacing_mm)
            if spacing.needs_resampling(spacing_mm)
            else (width_px, height_px)
        )
        if min(model_width_px, model_height_px) < RECEPTIVE_FIELD_PX:
            raise ValueError(
                f"image of {width_px}x{height_px} px ({model_width_px}x{model_height_px} px at the networks' "
                f"{spacing.DEFAULT_SPACING_MM * 1000:g} um/px) is smaller than the {RECEPTIVE_FIELD_PX} px "
                "receptive field"
            )
        at_model = to_model_spacing(image_rgb, spacing_mm, origin_mm, source)
        return self._detect_at_model_spacing(at_model, image_rgb, progress)

    def _detect_at_model_spacing(self, at_model: AtModelSpacing, image_rgb: np.ndarray, progress: bool) -> Detections:
        """`detect` on the image at the networks' pixel size (`at_model`); the points mapped back to `image_rgb`."""
        merged = self.candidates(at_model.image_rgb, at_model.spacing_mm, progress)[2]
        merged = merged.subset(merged.probability >= self.bundle.candidate_floor)
        probability = merged.probability
        if self.verifier is not None:  # every candidate re-judged; strongest first
            probability = self.verifier.probability(at_model.image_rgb, merged)
            order = np.argsort(-probability, kind="stable")
            merged, probability = merged.subset(order), probability[order]
        xy_px = at_model.original_px(merged.xy_px)
        original = (image_rgb, xy_px) if at_model.upsampled else None
        if self.verifier is None:
            is_mitosis = name_mitotic_figures(merged, self.bundle.threshold, at_model.image_rgb, original)
        else:
            named = self.verifier.names(probability, merged.xy_px, at_model.image_rgb.shape[:2])
            is_mitosis = only_micrographs(named, at_model.image_rgb, merged.xy_px, original)
        return Detections(
            xy_px=xy_px,
            xy_mm=spacing.mm_from_px(merged.xy_px, at_model.spacing_mm, at_model.origin_mm),
            probability=probability,
            agreed=merged.agreed,
            is_mitosis=is_mitosis,
            ensemble_probability=merged.probability,
            **self._atypical_of(at_model.image_rgb, merged.xy_px, is_mitosis),
        )

    def _atypical_of(self, image_rgb: np.ndarray, xy_px: np.ndarray, is_mitosis: np.ndarray) -> dict:
        """The `Detections` fields of the atypical classifier: P(atypical) of the named figures, from 128 px crops of
        the image at the networks' pixel size."""
        if self.atypical is None:
            return {}
        probability = np.full(len(is_mitosis), np.nan)
        if is_mitosis.any():
            probability[is_mitosis] = self.atypical.probability(crops_around(image_rgb, xy_px[is_mitosis]))
        return {"atypical_probability": probability, "is_atypical": is_mitosis & self.atypical.is_atypical(probability)}

    def candidates(
        self, image_rgb: np.ndarray, spacing_mm: Sequence[float], progress: bool = False, full_maps: bool = False
    ) -> tuple[Candidates, Candidates, EnsembleDetections]:
        """Each model's local maxima and their merge on an image at the networks' pixel size, through the cascade
        (`model.cascade.cascade_points`). For tools that study the models themselves (threshold tuning, field
        validation): `full_maps` scores both models everywhere without the screen, as B's own candidates are complete
        only where B scored everywhere."""
        passing = self.screen_passing(image_rgb) if self.screen is not None and not full_maps else None
        # None: A everywhere (no screen, or an image the screen cannot pay on)
        map_a_of, map_b_of = (
            self._map_of(role, net, image_rgb, progress) for role, net in zip(POLICY_NAMES, self.networks, strict=True)
        )
        return cascade.cascade_points(self.bundle, spacing_mm, map_a_of, map_b_of, passing, full_maps)

    def screen_passing(self, image_rgb: np.ndarray) -> np.ndarray | None:
        """P4 cells the screen passes (owned by screen cells at or above the bundle's screen threshold), or None
        when more than `cascade.FULL_MAP_SHARE` of the image is off glass: on tissue the screen passes nearly
        every cell, so A would score its whole map anyway and the screen would only add its own time
        (docs/performance.md)."""
        off_glass = screen_cells_off_glass(image_rgb)
        if off_glass.mean() > cascade.FULL_MAP_SHARE:
            return None
        probability = screen_map(image_rgb, self.screen, self.device, self.autocast_dtype, off_glass)
        return p4_cells_passing(probability >= self.bundle.screen.threshold, map_shape(*image_rgb.shape[:2]))

    def scorer(self, network: PlainP4ResNet):
        """(1, 3, h, w) image tensor -> (1, h', w') probability map of `network` under this detector's precision."""
        return window_scorer(network, self.device, self.autocast_dtype)

    def _map_of(self, role: str, network: PlainP4ResNet, image_rgb: np.ndarray, progress: bool) -> cascade.MapOf:
        """`cascade.MapOf` for one P4 model (`role` "A" or "B" in the cascade) on one image."""
        tile_cells = cascade.PART_TILE_CELLS[role]
        batch_tiles, fitted = self.part_batch_tiles[role], cascade.PART_FITTED_TILES[role]
        stage = f"model {role}" if progress else False

        def map_of(cells: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
            score = self.scorer(network)
            covered = None if cells is None else cascade.part_tiles(cells, role)
            if covered is None or cascade.full_map_pays(covered):
                full = probability_map(image_rgb, score, self.device, self.tile_cells, stage)
                return full, (None if cells is None else np.ones_like(cells, dtype=bool))
            values = probability_map(
                image_rgb, score, self.device, tile_cells, stage, cells=cells, batch_tiles=batch_tiles, fitted=fitted
            )
            return values, covered

        return map_of

    @torch.no_grad()
    def centre_probability(self, patch_rgb: np.ndarray) -> float:
        """Probability that a patch (any size >= 1 px, at the networks' pixel size) is centred on a mitotic figure:
        the two nets score the central 78 px window (smaller patches reflection-padded); the verifier, where it runs,
        re-judges their scores with the patch's own pixels around its centre."""
        if self.verifier is None:
            window = centre_window(patch_rgb)
            scores = [
                float(probability_map(window, self.scorer(net), self.device, pad_px=0)[0, 0]) for net in self.networks
            ]
            return float(ensemble_probability(np.float64(scores[0]), np.float64(scores[1])))
        # the verifier also reads the 3 x 3 cells around the centre: the window grown by one stride on each side
        window = centre_window(patch_rgb, RECEPTIVE_FIELD_PX + 2 * OUTPUT_STRIDE_PX)
        maps = [probability_map(window, self.scorer(net), self.device, pad_px=0) for net in self.networks]
        height, width = patch_rgb.shape[:2]
        centre = EnsembleDetections(
            xy_px=np.array([[(width - 1) / 2, (height - 1) / 2]]),
            probability=np.array([min(m[1, 1] for m in maps)], dtype=np.float64),
            agreed=np.array([True]),  # both score the same centre
            probability_a=np.array([maps[0][1, 1]], dtype=np.float64),
            probability_b=np.array([maps[1][1, 1]], dtype=np.float64),
            neighbourhood=np.array([[maps[0].mean(), maps[1].mean()]], dtype=np.float64),
        )
        return float(self.verifier.probability(patch_rgb, centre)[0])


def _xy(name: str, values) -> tuple[float, float]:
    """(x, y) of a spacing or origin given as one number (both axes) or a sequence (x, y[, z]); ValueError (one line)
    unless both are finite numbers."""
    try:
        array = np.atleast_1d(np.asarray(values, dtype=np.float64)).ravel()
    except (TypeError, ValueError):
        array = np.zeros(0)
    if array.size == 1:
        array = np.repeat(array, 2)
    if array.size < 2 or not np.isfinite(array[:2]).all():
        raise ValueError(f"{name} must be two finite numbers (x, y) or one for both, got {values!r}")
    return float(array[0]), float(array[1])


def centre_window(patch_rgb: np.ndarray, side_px: int = RECEPTIVE_FIELD_PX) -> np.ndarray:
    """The window of `side_px` (default: the receptive field) centred on the patch centre, reflection-padded when
    the patch is smaller."""
    height, width = patch_rgb.shape[:2]
    pad_y, pad_x = max(0, side_px - height), max(0, side_px - width)
    if pad_y or pad_x:
        patch_rgb = np.pad(
            patch_rgb, ((pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2), (0, 0)), mode="reflect"
        )
        height, width = patch_rgb.shape[:2]
    y0, x0 = (height - side_px) // 2, (width - side_px) // 2
    return patch_rgb[y0 : y0 + side_px, x0 : x0 + side_px]
