"""The verifier: a second stage that re-judges every candidate the two dense networks propose.

Why: the dense nets rank candidates well enough to reach most mitoses (105 of 115 on the MiDeSeC fields at the
candidate floor), but name too many dark or vesicular nuclei, and too many at image borders, where the mirrored
margin turns a half nucleus cut by the edge into a whole round one. Retraining the 70-layer nets needs a GPU; a small
model on a few numbers per candidate trains on a 2-core CPU in minutes (`training.verifier`).

What it reads per candidate (`candidate_features`):

* what the dense nets said: A's and B's probabilities (as logits), their minimum, whether they agreed, and both maps
  averaged over the 3 x 3 cells around the point (a broad peak or a lone cell);
* where it lies: its distance to the nearest image edge, in units of the border strip (1 = a window that sees only
  real pixels, `model.geometry.BORDER_STRIP_PX`);
* what the pixels show in a square crop around it (`crop_px`, at the networks' 0.25 um/px), **real pixels only**
  (the part of the crop beyond the image is left out, never mirrored): hematoxylin optical density (Ruifrok's
  matrix, `skimage.color.rgb2hed`) in a central disk and in the ring around it, the darkest grey values, texture,
  and the same stains over the whole crop as a reference for the slide's staining.

The model is logistic regression or gradient-boosted trees, stored as plain arrays in safetensors (no pickled
code), and its score is calibrated (Platt) on out-of-fold candidates of whole fields, so its probability is the
output's `probability`. A candidate is named "mitotic figure" when that probability reaches `threshold`, or
`strip_threshold` for a point in the border strip: both chosen by the field cross-validation (`training.verifier`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from model.candidates import EnsembleDetections
from model.geometry import BORDER_STRIP_PX, distance_to_border_px, in_border_strip

DETECTOR_FEATURES = ("logit_a", "logit_b", "logit_min", "agreed", "logit_a_3x3", "logit_b_3x3")
BORDER_FEATURES = ("edge_distance",)
PIXEL_FEATURES = (
    "h_disk_over_background",
    "h_disk_p90_over_background",
    "h_disk_peak_over_background",
    "h_ring_over_background",
    "h_disk_minus_ring",
    "grey_disk_p02_to_background",
    "grey_disk_p10_to_background",
    "grey_disk_std",
    "dark_disk_fraction",
    "gradient_disk_mean",
    "e_disk_over_background",
    "blob_area",
    "blob_solidity",
    "blob_eccentricity",
    "blob_roughness",
    "blob_h_std",
    "blob_centre_offset",
)
BLOB_REACH_PX = 24
"""The dark blob at the centre is looked for within this distance: a figure's chromatin (a metaphase plate is up to
about 10 um long)."""
DISK_RADIUS_PX = 12.0
"""Central disk: a mitotic figure's chromatin (about 6 um across at 0.25 um/px)."""
RING_PX = (16.0, 30.0)
"""The ring around it: the cytoplasm a mitotic figure clears around itself, up to the matching radius (7.5 um)."""
LOGIT_CLIP = 12.0


def logit(probability: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probability, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.clip(np.log(p / (1 - p)), -LOGIT_CLIP, LOGIT_CLIP)


def feature_names(crop_px: int | None) -> tuple[str, ...]:
    """Columns of `candidate_features`; no pixel features when `crop_px` is None."""
    return DETECTOR_FEATURES + BORDER_FEATURES + (PIXEL_FEATURES if crop_px else ())


def edge_distance(xy_px: np.ndarray, shape_px: tuple[int, int]) -> np.ndarray:
    """Distance to the nearest image edge in units of the border strip, capped at 1 (a window on real pixels only)."""
    distance = distance_to_border_px(xy_px, shape_px[0], shape_px[1])
    return np.clip(distance / BORDER_STRIP_PX, 0.0, 1.0)


def _hed(rgb: np.ndarray) -> np.ndarray:
    """Optical densities of hematoxylin, eosin and DAB (Ruifrok & Johnston's matrix, as `skimage.color.rgb2hed`)."""
    from skimage.color import rgb2hed

    return rgb2hed(rgb)


def _real_crop(image_rgb: np.ndarray, centre_xy: np.ndarray, crop_px: int) -> tuple[np.ndarray, np.ndarray]:
    """(crop_px, crop_px, 3) float RGB in [0, 1] around a point and the mask of its pixels that lie in the image."""
    height, width = image_rgb.shape[:2]
    half = crop_px // 2
    cx, cy = int(round(centre_xy[0])), int(round(centre_xy[1]))
    x0, y0 = cx - half, cy - half
    crop = np.ones((crop_px, crop_px, 3), dtype=np.float64)
    inside = np.zeros((crop_px, crop_px), dtype=bool)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + crop_px, width), min(y0 + crop_px, height)
    if sx1 > sx0 and sy1 > sy0:
        crop[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = np.asarray(image_rgb[sy0:sy1, sx0:sx1], dtype=np.float64) / 255
        inside[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = True
    return crop, inside


def _radius_px(crop_px: int) -> np.ndarray:
    centre = crop_px // 2
    rows, cols = np.mgrid[0:crop_px, 0:crop_px]
    return np.hypot(rows - centre, cols - centre)


def pixel_features(image_rgb: np.ndarray, xy_px: np.ndarray, crop_px: int) -> np.ndarray:
    """(N, len(PIXEL_FEATURES)) stains, darkness and texture around each point, from real pixels only."""
    radius = _radius_px(crop_px)
    disk, ring = radius <= DISK_RADIUS_PX, (radius >= RING_PX[0]) & (radius <= RING_PX[1])
    reach = int(DISK_RADIUS_PX) + 6  # the disk plus the filters' reach
    near = (slice(max(crop_px // 2 - reach, 0), crop_px // 2 + reach + 1),) * 2
    rows = []
    for centre in np.asarray(xy_px, dtype=np.float64).reshape(-1, 2):
        crop, inside = _real_crop(image_rgb, centre, crop_px)
        hed = _hed(crop)
        grey = crop.mean(axis=2)
        h_smooth = np.zeros_like(grey)  # filters on the disk's neighbourhood only: most of the time is here
        gradient = np.zeros_like(grey)
        h_smooth[near] = ndimage.gaussian_filter(hed[..., 0][near], 1.5)
        gradient[near] = np.hypot(ndimage.sobel(grey[near], 0), ndimage.sobel(grey[near], 1))
        real = inside if inside.any() else np.ones_like(inside)  # a point outside the image: the whole crop
        in_disk, in_ring = disk & inside, ring & inside
        if not in_disk.any():
            in_disk = real
        if not in_ring.any():
            in_ring = in_disk
        h_disk, h_ring = hed[..., 0][in_disk], hed[..., 0][in_ring]
        grey_disk = grey[in_disk]
        # relative to the crop's own background (its median): absolute stain levels say which lab and scanner a
        # crop comes from, and the training positives come from other labs than the field negatives
        h_background, e_background = np.median(hed[..., 0][real]), np.median(hed[..., 1][real])
        grey_background = max(float(np.median(grey[real])), 1e-3)
        rows.append(
            [
                h_disk.mean() - h_background,
                np.percentile(h_disk, 90) - h_background,
                h_smooth[in_disk].max() - h_background,
                h_ring.mean() - h_background,
                h_disk.mean() - h_ring.mean(),
                np.percentile(grey_disk, 2) / grey_background,
                np.percentile(grey_disk, 10) / grey_background,
                grey_disk.std(),
                float((grey_disk < grey_background - 0.25).mean()),
                gradient[in_disk].mean(),
                hed[..., 1][in_disk].mean() - e_background,
                *blob_shape(h_smooth, hed[..., 0], inside, crop_px),
            ]
        )
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(PIXEL_FEATURES))


def blob_shape(h_smooth: np.ndarray, h: np.ndarray, inside: np.ndarray, crop_px: int) -> list[float]:
    """Shape of the hematoxylin blob at the centre, cut at half its height above the crop's background: area (px),
    solidity, eccentricity, roughness (perimeter^2 / (4 pi area), 1 for a disk), the spread of hematoxylin within it
    (clumped chromatin), and how far its centroid lies from the candidate (px). A mitotic figure is a dense, often
    irregular or elongated blob without a membrane; a resting nucleus a round, smooth, evenly stained one."""
    from skimage.measure import label, regionprops

    centre = crop_px // 2
    reach = min(BLOB_REACH_PX, centre, crop_px - centre - 1)  # the window stays inside the crop
    window = (slice(centre - reach, centre + reach + 1),) * 2
    smooth, raw, real = h_smooth[window], h[window], inside[window]
    background = float(np.median(h[inside])) if inside.any() else 0.0
    radius = _radius_px(2 * reach + 1)
    near_centre = (radius <= DISK_RADIUS_PX) & real
    if not near_centre.any():
        return [0.0, 1.0, 0.0, 1.0, 0.0, float(reach)]
    peak = float(smooth[near_centre].max())
    mask = (smooth >= background + 0.5 * (peak - background)) & real
    labels = label(mask, connectivity=2)
    seed = np.unravel_index(np.argmax(np.where(near_centre, smooth, -np.inf)), smooth.shape)
    blob = labels == labels[seed]
    region = regionprops(blob.astype(np.uint8))[0]
    area = float(region.area)
    cy, cx = region.centroid
    return [
        area,
        float(region.solidity),
        float(region.eccentricity),
        float(region.perimeter**2 / (4 * np.pi * area)) if area > 1 else 1.0,
        float(raw[blob].std()),
        float(np.hypot(cy - reach, cx - reach)),
    ]


def candidate_features(image_rgb: np.ndarray, points: EnsembleDetections, crop_px: int | None) -> np.ndarray:
    """(N, len(feature_names(crop_px))) features of the points of an image at 0.25 um/px (`points` as
    `model.cascade.cascade_points` merges them: A's and B's probabilities and the maps' neighbourhood filled in)."""
    xy = np.asarray(points.xy_px, dtype=np.float64).reshape(-1, 2)
    logit_a, logit_b = logit(points.probability_a), logit(points.probability_b)
    neighbourhood = np.asarray(points.neighbourhood, dtype=np.float64).reshape(-1, 2)
    columns = [
        logit_a,
        logit_b,
        np.minimum(logit_a, logit_b),
        np.asarray(points.agreed, dtype=np.float64),
        logit(neighbourhood[:, 0]),
        logit(neighbourhood[:, 1]),
        edge_distance(xy, image_rgb.shape[:2]),
    ]
    features = np.column_stack(columns) if len(xy) else np.zeros((0, len(columns)))
    if crop_px:
        features = np.hstack([features, pixel_features(image_rgb, xy, crop_px)])
    return features


# --- the model: plain arrays, evaluated with numpy -------------------------------------------------------------------


@dataclass
class VerifierModel:
    """Logistic regression (`coef`, `intercept` on standardised features) or gradient-boosted trees (`trees`: one
    row per node, `baseline`), then Platt calibration: probability = sigmoid(calibration[0] * raw + calibration[1])."""

    kind: str  # "logistic" or "trees"
    crop_px: int | None
    mean: np.ndarray
    scale: np.ndarray
    calibration: np.ndarray  # (2,)
    coef: np.ndarray | None = None  # (F,)
    intercept: float = 0.0
    tree_nodes: np.ndarray | None = None  # (nodes, 5): feature, threshold, left, right, is_leaf (absolute node ids)
    tree_values: np.ndarray | None = None  # (nodes,)
    tree_roots: np.ndarray | None = None  # (trees,) node id of each tree's root
    baseline: float = 0.0

    def raw(self, features: np.ndarray) -> np.ndarray:
        x = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        if self.kind == "logistic":
            return x @ self.coef + self.intercept
        if self.kind != "trees":
            raise ValueError(f"unknown verifier kind {self.kind!r}")
        nodes, values = self.tree_nodes, self.tree_values
        feature, threshold = nodes[:, 0].astype(np.int64), nodes[:, 1]
        left, right, leaf = nodes[:, 2].astype(np.int64), nodes[:, 3].astype(np.int64), nodes[:, 4] > 0
        total = np.full(len(x), self.baseline)
        rows = np.arange(len(x))
        for root in self.tree_roots.astype(np.int64):
            node = np.full(len(x), root)
            while True:
                open_ = ~leaf[node]
                if not open_.any():
                    break
                at = node[open_]
                go_left = x[rows[open_], feature[at]] <= threshold[at]
                node[open_] = np.where(go_left, left[at], right[at])
            total += values[node]
        return total

    def probability(self, features: np.ndarray) -> np.ndarray:
        z = self.calibration[0] * self.raw(features) + self.calibration[1]
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))

    def tensors(self) -> dict[str, np.ndarray]:
        out = {"mean": self.mean, "scale": self.scale, "calibration": self.calibration}
        if self.kind == "logistic":
            out |= {"coef": self.coef, "intercept": np.array([self.intercept])}
        else:
            out |= {
                "tree_nodes": self.tree_nodes,
                "tree_values": self.tree_values,
                "tree_roots": self.tree_roots,
                "baseline": np.array([self.baseline]),
            }
        return {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in out.items()}

    @classmethod
    def from_tensors(cls, kind: str, crop_px: int | None, tensors: dict[str, np.ndarray]) -> VerifierModel:
        common = {"kind": kind, "crop_px": crop_px, "mean": tensors["mean"], "scale": tensors["scale"]}
        common["calibration"] = tensors["calibration"]
        if kind == "logistic":
            return cls(**common, coef=tensors["coef"], intercept=float(tensors["intercept"][0]))
        return cls(
            **common,
            tree_nodes=tensors["tree_nodes"],
            tree_values=tensors["tree_values"],
            tree_roots=tensors["tree_roots"],
            baseline=float(tensors["baseline"][0]),
        )


@dataclass(frozen=True)
class VerifierEntry:
    """The bundle's record of the verifier (`bundle.json` -> `verifier`)."""

    file: str
    sha256: str
    kind: str
    crop_px: int | None
    threshold: float
    strip_threshold: float

    def to_json(self) -> dict:
        return dict(vars(self))


@dataclass
class Verifier:
    """A loaded verifier: its model and its naming rule."""

    model: VerifierModel
    threshold: float
    strip_threshold: float

    def probability(self, image_rgb: np.ndarray, points: EnsembleDetections) -> np.ndarray:
        """The calibrated probability of each point of an image at 0.25 um/px."""
        features = candidate_features(image_rgb, points, self.model.crop_px)
        return self.model.probability(features) if len(features) else np.zeros(0)

    def names(self, probability: np.ndarray, xy_px: np.ndarray, shape_px: tuple[int, int]) -> np.ndarray:
        """The naming rule with the verifier (`names_by_rule`) for points of an image of `shape_px`."""
        in_strip = in_border_strip(xy_px, shape_px[0], shape_px[1])
        return names_by_rule(probability, in_strip, self.threshold, self.strip_threshold)


def names_by_rule(
    probability: np.ndarray, in_strip: np.ndarray, threshold: float, strip_threshold: float
) -> np.ndarray:
    """The verifier's naming rule, in one place: its probability at or above `threshold`, or `strip_threshold` for a
    point in the border strip."""
    return np.asarray(probability) >= np.where(in_strip, strip_threshold, threshold)


def save_verifier(model: VerifierModel, path: Path) -> str:
    """Write the model's arrays as safetensors; returns the file's sha256."""
    from safetensors.numpy import save_file

    save_file(model.tensors(), str(path))
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_verifier_model(path: Path, kind: str, crop_px: int | None) -> VerifierModel:
    from safetensors.numpy import load_file

    return VerifierModel.from_tensors(kind, crop_px, load_file(str(path)))
