"""Training data as the paper defines it, read from a MIDOG-format dataset or from the real offline folder.

- Positives: a 128 px crop centred on every mitotic figure (room for the +/-12 px shift and the zoom of the
  augmentation around the 78 px window). They are held in memory: N x 48 KiB (MIDOG 2022: 9,501 -> 470 MB; the
  real offline set: 5,696 -> 280 MB).
- Negatives: *sites* (image, row, col), cut on demand: every point of a grid (step `grid_step_px`) on tissue whose
  centre is at least `min_distance_um` from any mitotic figure, plus every imposter / look-alike annotation. Hard
  negative mining ranks these sites and trains on a subset of them (`NegativeSites.subset`).
- Unlabeled images: where stain-unmixing enrichment looks for extra negatives (`training.pipeline.enrich`,
  `training.stain`).
- Validation regions: whole image regions with their annotated mitoses, where the detector's threshold is tuned.

Two readers fill the same `TrainingData`:
- `from_midog` (a participant's MIDOG 2021 / 2022 / MIDOG++ download, or `training.data.synthetic` output): images split
  80/20 by `training.data.split` (stratified by domain); TIFF windows are read lazily, never whole slides at once.
- `from_real` (../shared/data/real): positives are the 5,696 real crops (validation: ~20% of slides, by hash);
  labelled negatives are the two certified mitosis-free canine tiles (left 80% train, right 20% validation) with their
  look-alikes; the 15 MITOS 2012 fields are unlabeled: the training ones give grid negatives of kind "unlabeled"
  (a few are unannotated mitoses: the pipeline drops the ones the base model scores as likely mitoses before mining)
  and feed enrichment; the validation ones measure false positives (an overestimate: they hold mitoses).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage
from scipy.spatial import cKDTree
from tqdm import tqdm

from model.dense import reflect_indices
from model.geometry import BORDER_STRIP_PX, NEAREST_CENTRE_PX, RECEPTIVE_FIELD_PX, in_border_strip
from model.spacing import px_from_um
from training.data import real_data
from training.data.midog_dataset import ImageRecord, load_dataset, read_spacing_mm, read_window, unlisted_images
from training.data.nuclei import nucleus_centres
from training.data.split import VALIDATION_FRACTION, split_images
from training.validation_metrics import calibrated_negative_weight

logger = logging.getLogger(__name__)


NEGATIVE_MIN_DISTANCE_UM: float = 16.0
"""Grid sites whose centre is this close to a mitotic figure are not negatives: the figure (5-10 um across) would sit
inside the window, off centre (the default of every config and of the field cross-validation)."""

SOURCE_PX = 128
"""Side of the crops training cuts around a site: the 78 px window plus shift and zoom margins."""
REAL_DATA_DIR = real_data.DEFAULT_ROOT.resolve()
TILE_TRAIN_FRACTION = 0.8
"""The mitosis-free tiles' columns x < 0.8 width are for training, the rest for validation."""


@dataclass
class SiteImage:
    """An image negatives or positives are cut from: in memory (`rgb`) or a TIFF read window by window (`path`)."""

    name: str
    height_px: int
    width_px: int
    spacing_mm: float
    rgb: np.ndarray | None = None
    path: Path | None = None

    def crop(self, row: int, col: int, size_px: int = SOURCE_PX) -> np.ndarray:
        """size_px crop centred exactly on (row, col); parts outside the image are mirrored (numpy "reflect", as
        dense inference pads). Shifting the crop inside the image instead would move a border mitosis off the
        window centre, so the network would learn an off-centre figure as "centred"."""
        half = size_px // 2
        top, left = row - half, col - half
        if self.rgb is None:
            return read_window(self.path, left, top, size_px, size_px)  # pads by reflection itself
        if 0 <= top and 0 <= left and top + size_px <= self.height_px and left + size_px <= self.width_px:
            return self.rgb[top : top + size_px, left : left + size_px]
        rows = reflect_indices(np.arange(top, top + size_px), self.height_px)
        cols = reflect_indices(np.arange(left, left + size_px), self.width_px)
        return self.rgb[np.ix_(rows, cols)]

    def read(self, x_range: tuple[int, int] | None = None) -> np.ndarray:
        """All pixels (or a column range): for dense detection and stain estimation on one image at a time."""
        x0, x1 = x_range or (0, self.width_px)
        if self.rgb is not None:
            return self.rgb[:, x0:x1]
        return read_window(self.path, x0, 0, x1 - x0, self.height_px)


NEGATIVE_KINDS = ("grid", "nucleus", "border", "imposter", "enrichment")
"""grid: a point of a regular grid on tissue (stroma, background, anything); nucleus: centred on a hematoxylin-dense
nucleus (`training.data.nuclei`); border: a grid point on tissue in the image's border strip, where the window is cut
mirrored exactly as dense inference pads (`model.geometry.BORDER_STRIP_PX`); imposter: an annotated look-alike;
enrichment: a high stain-residual window."""


@dataclass
class NegativeSites:
    """Negative window centres: `image` indexes `TrainingData.images`; `kind` is one of `NEGATIVE_KINDS`; `source`
    names where the image comes from (a dataset / domain), so that batches can be balanced across sources."""

    image: np.ndarray
    row_px: np.ndarray
    col_px: np.ndarray
    kind: np.ndarray
    source: np.ndarray

    def __len__(self) -> int:
        return len(self.image)

    def subset(self, indices: np.ndarray) -> NegativeSites:
        return NegativeSites(*(array[indices] for array in self.arrays()))

    def concatenate(self, other: NegativeSites) -> NegativeSites:
        return NegativeSites(*(np.concatenate([a, b]) for a, b in zip(self.arrays(), other.arrays(), strict=True)))

    def arrays(self) -> tuple[np.ndarray, ...]:
        return self.image, self.row_px, self.col_px, self.kind, self.source

    @classmethod
    def empty(cls) -> NegativeSites:
        return cls(
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            np.zeros(0, "<U10"),
            np.zeros(0, "<U32"),
        )

    @classmethod
    def build(cls, image: int, centres_rc: np.ndarray, kind: str, source: str) -> NegativeSites:
        if kind not in NEGATIVE_KINDS:
            raise ValueError(f"unknown negative kind {kind!r} (one of {NEGATIVE_KINDS})")
        centres_rc = np.asarray(centres_rc, dtype=np.int64).reshape(-1, 2)
        count = len(centres_rc)
        return cls(
            np.full(count, image),
            centres_rc[:, 0],
            centres_rc[:, 1],
            np.full(count, kind, "<U10"),
            np.full(count, source, "<U32"),
        )

    def counts(self) -> dict[str, dict[str, int]]:
        """{source: {kind: count}}: what the data summary reports."""
        table: dict[str, dict[str, int]] = {}
        for source, kind in zip(self.source, self.kind, strict=True):
            table.setdefault(str(source), {}).setdefault(str(kind), 0)
            table[str(source)][str(kind)] += 1
        return table


class GroupSampler:
    """Draws indices group by group: a group is chosen by its weight, then a member uniformly."""

    def __init__(self, keys: np.ndarray, weight_of: dict[str, float]):
        if len(keys) == 0:
            raise ValueError("nothing to sample from")
        groups, inverse = np.unique(np.asarray(keys).astype(str), return_inverse=True)
        weight = np.array([weight_of[str(g)] for g in groups], dtype=np.float64)
        self.groups = groups
        self.probability = weight / weight.sum()
        self.members = np.argsort(inverse, kind="stable")
        self.sizes = np.bincount(inverse, minlength=len(groups))
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])

    def draw(self, rng: np.random.Generator, count: int) -> np.ndarray:
        group = rng.choice(len(self.groups), size=count, p=self.probability)
        within = np.minimum((rng.random(count) * self.sizes[group]).astype(np.int64), self.sizes[group] - 1)
        return self.members[self.starts[group] + within]


def negative_sampler(sites: NegativeSites) -> GroupSampler:
    """Every source equally likely, and within a source every kind: without it the largest pool decides what a
    batch looks like (grid sites of one big tile would outnumber the nuclei of every field), and "which source"
    becomes a feature the network can learn instead of "mitosis"."""
    keys = np.char.add(np.char.add(sites.source.astype(str), "|"), sites.kind.astype(str))
    groups = np.unique(keys)
    sources = [g.split("|")[0] for g in groups]
    n_sources = len(set(sources))
    weights = {g: 1.0 / (n_sources * sources.count(src)) for g, src in zip(groups, sources, strict=True)}
    return GroupSampler(keys, weights)


def positive_sampler(datasets: np.ndarray, scale: dict[str, float] | None = None) -> GroupSampler:
    """Positive datasets weighted by the square root of their size: a small same-domain set (the MiDeSeC training
    fields' mitoses) is not drowned by thousands of crops from elsewhere, nor memorised by plain balancing. `scale`
    multiplies a group's weight (mined positives: `training.unlabeled_mining`)."""
    names, counts = np.unique(np.asarray(datasets).astype(str), return_counts=True)
    scale = scale or {}
    return GroupSampler(
        datasets, {n: float(np.sqrt(c)) * scale.get(str(n), 1.0) for n, c in zip(names, counts, strict=True)}
    )


@dataclass
class ValidationRegion:
    """A region where the whole detector runs: `mitoses_rc` are its annotated mitoses; `exhaustive` says whether
    every mitosis is annotated (False for unlabeled fields: their detections overestimate false positives)."""

    image: int
    x_range: tuple[int, int]
    mitoses_rc: np.ndarray
    exhaustive: bool
    group: str


@dataclass
class TrainingData:
    """Everything training, mining, enrichment and threshold tuning read (see the module docstring)."""

    source: str
    images: list[SiteImage]
    positives_train: np.ndarray
    positive_train_groups: np.ndarray  # dataset / domain of each training positive (`positive_sampler`)
    positives_val: np.ndarray
    positive_val_groups: list[str]
    negatives_train: NegativeSites
    negatives_val: NegativeSites
    unlabeled: list[int]
    validation_regions: list[ValidationRegion]
    training_pixels: int
    grid_step_px: int
    notes: dict = field(default_factory=dict)
    positive_scale: dict[str, float] = field(default_factory=dict)  # group -> weight factor (`positive_sampler`)

    def area_mm2(self, sites: NegativeSites) -> float:
        """Tissue the grid sites among `sites` stand for (one grid cell each; imposters add none)."""
        spacing_mm = np.array([image.spacing_mm for image in self.images])[sites.image[sites.kind == "grid"]]
        return float(np.sum((self.grid_step_px * spacing_mm) ** 2))

    def negative_weight(self, sites: NegativeSites) -> float:
        """Per-negative weight of `validation_metrics.patch_metrics`' calibrated AP for these validation sites."""
        return calibrated_negative_weight(len(self.positives_val), self.area_mm2(sites))

    def crops(self, sites: NegativeSites, indices: np.ndarray | None = None) -> np.ndarray:
        """(N, 128, 128, 3) uint8 crops around the chosen sites (all when `indices` is None)."""
        chosen = np.arange(len(sites)) if indices is None else indices
        out = np.empty((len(chosen), SOURCE_PX, SOURCE_PX, 3), dtype=np.uint8)
        for slot, index in enumerate(chosen):
            out[slot] = self.images[sites.image[index]].crop(int(sites.row_px[index]), int(sites.col_px[index]))
        return out

    @property
    def field_regions(self) -> list[ValidationRegion]:
        """Where the recipe is measured (field AP, F1, threshold): completely annotated validation regions of the
        groups that hold mitoses (the MiDeSeC validation fields; a MIDOG split's validation images). Mitosis-free
        groups (the canine tiles) are reported apart as false positives per mm2."""
        with_mitoses = {r.group for r in self.validation_regions if r.exhaustive and len(r.mitoses_rc)}
        return [r for r in self.validation_regions if r.exhaustive and r.group in with_mitoses]

    def summary(self) -> str:
        positives = dict(zip(*np.unique(self.positive_train_groups.astype(str), return_counts=True), strict=True))
        fields = self.field_regions
        return (
            f"{self.source}: {len(self.positives_train)} train positives {_plain(positives)}, "
            f"{len(self.positives_val)} validation positives; "
            f"train negative sites {len(self.negatives_train)} by source and kind {self.negatives_train.counts()}; "
            f"validation negative sites {len(self.negatives_val)} {self.negatives_val.counts()}; "
            f"{len(self.unlabeled)} unlabeled images; {len(fields)} validation fields with "
            f"{sum(len(r.mitoses_rc) for r in fields)} mitoses; {len(self.validation_regions)} validation regions"
        )


def _plain(counts: dict) -> dict:
    return {str(k): int(v) for k, v in counts.items()}


def validation_fold(key: str, fraction: float = VALIDATION_FRACTION) -> bool:
    """Stable pseudo-random assignment of a group key (slide or file) to validation."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def tissue_grid(
    rgb: np.ndarray,
    step_px: int,
    x_range: tuple[int, int] | None = None,
    mask_step_px: int = 4,
    margin_px: int = BORDER_STRIP_PX,
) -> np.ndarray:
    """(N, 2) (row, col) grid points on tissue, at least `margin_px` from the border (default: half a window, so the
    window holds no mirrored pixel), inside `x_range`."""
    mask = real_data.tissue_mask(rgb[::mask_step_px, ::mask_step_px])
    # a window is 'on tissue' when a fair share of its neighbourhood is: isolated specks do not count
    mask = ndimage.uniform_filter(mask.astype(np.float32), size=max(3, RECEPTIVE_FIELD_PX // mask_step_px)) > 0.25
    x0, x1 = x_range or (0, rgb.shape[1])
    rows = np.arange(margin_px, rgb.shape[0] - margin_px, step_px)
    cols = np.arange(max(margin_px, x0 + step_px // 2), min(rgb.shape[1] - margin_px, x1), step_px)
    grid = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1).reshape(-1, 2)
    keep = mask[grid[:, 0] // mask_step_px, grid[:, 1] // mask_step_px]
    return grid[keep]


def border_grid(rgb: np.ndarray, step_px: int, x_range: tuple[int, int] | None = None) -> np.ndarray:
    """(N, 2) (row, col) points on tissue in the border strip, every `step_px // 2` px from the nearest window centre
    dense inference has (`model.geometry.NEAREST_CENTRE_PX`) inward: the windows that see mirrored pixels. Without
    them no negative of training ever reached past an edge, while dense inference mirrors every image's border:
    half nuclei cut by the edge, doubled by the mirror, were named mitoses."""
    step = max(1, step_px // 2)
    grid = tissue_grid(rgb, step, x_range, margin_px=int(np.ceil(NEAREST_CENTRE_PX)))
    xy = grid[:, ::-1]
    return grid[in_border_strip(xy, *rgb.shape[:2])]


def away_from(centres_rc: np.ndarray, mitoses_rc: np.ndarray, min_distance_px: float) -> np.ndarray:
    """The centres at least `min_distance_px` from every mitosis."""
    if len(mitoses_rc) == 0 or len(centres_rc) == 0:
        return centres_rc
    distance, _ = cKDTree(mitoses_rc).query(centres_rc, k=1)
    return centres_rc[distance >= min_distance_px]


# ------------------------------------------------------------------------------------------ MIDOG-format datasets


def _site_sets(
    index: int,
    rgb: np.ndarray,
    nuclei_rc: np.ndarray,
    grid_step_px: int,
    source: str,
    mitoses_rc: np.ndarray,
    min_distance_px: float,
    x_range: tuple[int, int] | None = None,
) -> NegativeSites:
    """Grid and nucleus-centred negatives of one image (or one column range), away from its mitoses. `nuclei_rc`:
    the image's `nucleus_centres`, found once per image even when its columns are split into parts."""
    grid = away_from(tissue_grid(rgb, grid_step_px, x_range), mitoses_rc, min_distance_px)
    border = away_from(border_grid(rgb, grid_step_px, x_range), mitoses_rc, min_distance_px)
    nuclei = away_from(nuclei_rc, mitoses_rc, min_distance_px)
    if x_range is not None:
        nuclei = nuclei[(nuclei[:, 1] >= x_range[0]) & (nuclei[:, 1] < x_range[1])]
    return (
        NegativeSites.build(index, grid, "grid", source)
        .concatenate(NegativeSites.build(index, nuclei, "nucleus", source))
        .concatenate(NegativeSites.build(index, border, "border", source))
    )


def find_annotations(dataset_dir: Path) -> Path:
    """The one annotation JSON of a dataset folder (MIDOG2022_training.json, MIDOG.json, dataset.json, ...)."""
    candidates = sorted(p for p in dataset_dir.glob("*.json") if not p.name.startswith("."))
    if len(candidates) != 1:
        raise FileNotFoundError(
            f"{dataset_dir}: expected exactly one annotation .json next to the TIFFs, found "
            f"{[p.name for p in candidates] or 'none'}"
        )
    return candidates[0]


def from_midog(
    dataset_dir: Path,
    grid_step_px: int,
    min_distance_um: float,
    validation_fraction: float = VALIDATION_FRACTION,
    seed: int = 0,
) -> TrainingData:
    """Training data of a MIDOG-format folder (annotation JSON + TIFFs); see the module docstring."""
    dataset = load_dataset(find_annotations(dataset_dir), dataset_dir)
    missing = [record.file_name for record in dataset if record.path is None]
    if missing:
        raise FileNotFoundError(f"{dataset_dir}: {len(missing)} image(s) listed but absent: {missing[:5]}")
    split = split_images(dataset.images, validation_fraction, seed)
    images: list[SiteImage] = []
    extra_unlabeled = unlisted_images(dataset)

    def add(record: ImageRecord) -> int:
        spacing_mm = float(record.spacing_mm[0])
        images.append(SiteImage(record.file_name, record.height_px, record.width_px, spacing_mm, path=record.path))
        return len(images) - 1

    def positives_of(records: list[ImageRecord], desc: str) -> tuple[np.ndarray, list[str]]:
        crops, groups = [], []
        for record in tqdm(records, desc=desc, unit="image"):
            index = add(record)
            for x_px, y_px in record.centres_px(1):
                crops.append(images[index].crop(int(round(y_px)), int(round(x_px))))
                groups.append(record.domain)
        return np.stack(crops) if crops else np.zeros((0, SOURCE_PX, SOURCE_PX, 3), np.uint8), groups

    def negatives_of(first: int, records: list[ImageRecord]) -> NegativeSites:
        sites = NegativeSites.empty()
        for offset, record in enumerate(tqdm(records, desc="negative grid", unit="image")):
            index = first + offset
            mitoses = record.centres_px(1)[:, ::-1]
            min_distance_px = px_from_um(min_distance_um, (images[index].spacing_mm,) * 2)
            rgb = images[index].read()
            nuclei = nucleus_centres(rgb, images[index].spacing_mm)
            sites = sites.concatenate(
                _site_sets(index, rgb, nuclei, grid_step_px, record.domain, mitoses, min_distance_px)
            )
            imposters = np.round(record.centres_px(2)[:, ::-1])
            sites = sites.concatenate(NegativeSites.build(index, imposters, "imposter", record.domain))
        return sites

    first_train = len(images)
    positives_train, train_groups = positives_of(split.train, "train positives")
    negatives_train = negatives_of(first_train, split.train)
    first_val = len(images)
    positives_val, val_groups = positives_of(split.validation, "validation positives")
    negatives_val = negatives_of(first_val, split.validation)
    regions = [
        ValidationRegion(first_val + i, (0, r.width_px), r.centres_px(1)[:, ::-1], True, r.domain)
        for i, r in enumerate(split.validation)
    ]
    unlabeled = [add(record) for record in split.unlabeled]
    for path in extra_unlabeled:
        with tifffile.TiffFile(path) as tiff:
            height, width = tiff.pages.first.shape[:2]
        images.append(SiteImage(path.name, height, width, float(read_spacing_mm(path)[0]), path=path))
        unlabeled.append(len(images) - 1)
    training_pixels = sum(r.width_px * r.height_px for r in split.train)
    return TrainingData(
        source=f"MIDOG-format dataset {dataset_dir} ({dataset.flavour})",
        images=images,
        positives_train=positives_train,
        positive_train_groups=np.asarray(train_groups, dtype=str),
        positives_val=positives_val,
        positive_val_groups=val_groups,
        negatives_train=negatives_train,
        negatives_val=negatives_val,
        unlabeled=unlabeled,
        validation_regions=regions,
        training_pixels=training_pixels,
        grid_step_px=grid_step_px,
        notes={"split_seed": seed, "train_images": len(split.train), "validation_images": len(split.validation)},
    )


# ------------------------------------------------------------------------------------------ the real offline data


MIDESEC = "MiDeSeC"
MIDESEC_VALIDATION_FIELDS = 10
"""MiDeSeC fields held out for validation: the 10 whose file names come first in SHA-256 order (a fixed, seedless
choice: P0_06, P0_08, P0_09, P0_14, P0_21, P0_25, P0_26, P0_30, P0_33, P0_34 hold 35 of the 115 mitoses)."""


def midesec_validation_names(names: list[str], count: int = MIDESEC_VALIDATION_FIELDS) -> set[str]:
    """The validation part of the MiDeSeC fields (see `MIDESEC_VALIDATION_FIELDS`)."""
    return set(sorted(names, key=lambda name: hashlib.sha256(name.encode()).hexdigest())[:count])


def from_real(
    root: Path,
    grid_step_px: int,
    min_distance_um: float = NEGATIVE_MIN_DISTANCE_UM,
    train_fraction: float = TILE_TRAIN_FRACTION,
    held_out_fields: Collection[str] | None = None,
) -> TrainingData:
    """Training data of ../shared/data/real; see the module docstring for what plays which role.

    `held_out_fields`: file names of the MiDeSeC fields to validate on (default: `midesec_validation_names`); the
    field cross-validation (`training.validation.field_cv`) passes one fold's fields, and an empty set trains on all
    35."""
    fields = real_data.load_midesec_fields(root)
    all_names = [f.path.name for f in fields]
    validation_names = midesec_validation_names(all_names) if held_out_fields is None else set(held_out_fields)
    if not validation_names <= set(all_names):
        raise ValueError(f"held-out fields not among the MiDeSeC fields: {sorted(validation_names - set(all_names))}")
    parts = _real_crop_positives(root)
    _add_midesec_fields(parts, fields, validation_names, grid_step_px, min_distance_um)
    _add_mitosis_free_tiles(parts, root, grid_step_px, train_fraction)
    _add_unlabeled_fields(parts, root, grid_step_px)
    return TrainingData(
        source=f"real offline data {root}",
        images=parts.images,
        positives_train=np.concatenate(parts.positives_train),
        positive_train_groups=np.concatenate(parts.train_groups).astype(str),
        positives_val=np.concatenate(parts.positives_val),
        positive_val_groups=parts.val_groups,
        negatives_train=parts.negatives_train,
        negatives_val=parts.negatives_val,
        unlabeled=parts.unlabeled,
        validation_regions=parts.regions,
        training_pixels=parts.training_pixels,
        grid_step_px=grid_step_px,
        notes={"midesec_validation_fields": sorted(validation_names)},
    )


@dataclass
class _RealParts:
    """What `from_real` gathers, source by source, before it becomes `TrainingData`."""

    positives_train: list[np.ndarray]
    train_groups: list[np.ndarray]
    positives_val: list[np.ndarray]
    val_groups: list[str]
    training_pixels: int
    images: list[SiteImage] = field(default_factory=list)
    negatives_train: NegativeSites = field(default_factory=lambda: NegativeSites.empty())
    negatives_val: NegativeSites = field(default_factory=lambda: NegativeSites.empty())
    regions: list[ValidationRegion] = field(default_factory=list)
    unlabeled: list[int] = field(default_factory=list)

    def add_image(self, path: Path, spacing_mm: float) -> tuple[int, np.ndarray]:
        """Read an image, keep it among the site images; its index and pixels."""
        rgb = real_data.read_image(path)
        self.images.append(SiteImage(path.name, *rgb.shape[:2], spacing_mm, rgb=rgb))
        return len(self.images) - 1, rgb


def _real_crop_positives(root: Path) -> _RealParts:
    """The mitosis crops, split by `validation_fold` of their group; the training crops' pixels counted."""
    patches = [p for p in real_data.load_patches(root) if p.label == 1]
    is_val = np.array([validation_fold(p.group) for p in patches])
    crops = np.empty((len(patches), SOURCE_PX, SOURCE_PX, 3), dtype=np.uint8)
    for index, record in enumerate(tqdm(patches, desc="positive patches", unit="patch")):
        crops[index] = real_data.read_patch(record)
    datasets = np.array([p.dataset for p in patches])
    return _RealParts(
        positives_train=[crops[~is_val]],
        train_groups=[datasets[~is_val]],
        positives_val=[crops[is_val]],
        val_groups=list(datasets[is_val]),
        training_pixels=int((~is_val).sum()) * SOURCE_PX**2,
    )


def _add_midesec_fields(
    parts: _RealParts, fields: list, validation_names: set[str], grid_step_px: int, min_distance_um: float
) -> None:
    """Each annotated MiDeSeC field: its mitoses as positives, its other sites as negatives, training or held out."""
    for annotated in tqdm(fields, desc="MiDeSeC fields", unit="field"):
        index, rgb = parts.add_image(annotated.path, annotated.spacing_mm)
        mitoses_rc = np.round(annotated.mitoses_xy_px[:, ::-1]).astype(np.int64)
        min_distance_px = px_from_um(min_distance_um, (annotated.spacing_mm,) * 2)
        nuclei = nucleus_centres(rgb, annotated.spacing_mm)
        sites = _site_sets(index, rgb, nuclei, grid_step_px, MIDESEC, mitoses_rc, min_distance_px)
        field_crops = [parts.images[index].crop(int(r), int(c)) for r, c in mitoses_rc]
        field_positives = np.asarray(field_crops, np.uint8).reshape(-1, SOURCE_PX, SOURCE_PX, 3)
        if annotated.path.name in validation_names:
            parts.negatives_val = parts.negatives_val.concatenate(sites)
            parts.positives_val.append(field_positives)
            parts.val_groups += [MIDESEC] * len(field_crops)
            parts.regions.append(ValidationRegion(index, (0, rgb.shape[1]), mitoses_rc, True, "MiDeSeC fields"))
        else:
            parts.negatives_train = parts.negatives_train.concatenate(sites)
            parts.positives_train.append(field_positives)
            parts.train_groups.append(np.full(len(field_crops), MIDESEC))
            parts.training_pixels += rgb.shape[0] * rgb.shape[1]


def _add_mitosis_free_tiles(parts: _RealParts, root: Path, grid_step_px: int, train_fraction: float) -> None:
    """Each mitosis-free tile: its left `train_fraction` trains, the rest validates; look-alikes are imposters."""
    for tile in tqdm(real_data.load_mitosis_free_tiles(root), desc="mitosis-free tiles", unit="tile"):
        index, rgb = parts.add_image(tile.path, tile.spacing_mm)
        split_x = int(tile.width_px * train_fraction)
        nuclei = nucleus_centres(rgb, tile.spacing_mm)
        lookalikes = np.round(tile.lookalikes_px[:, ::-1]).astype(np.int64)
        no_mitoses = np.zeros((0, 2), np.int64)
        for part, x_range in (("train", (0, split_x)), ("val", (split_x, tile.width_px))):
            sites = _site_sets(index, rgb, nuclei, grid_step_px, "CMC tiles", no_mitoses, 0.0, x_range)
            inside = lookalikes[(lookalikes[:, 1] >= x_range[0]) & (lookalikes[:, 1] < x_range[1])]
            sites = sites.concatenate(NegativeSites.build(index, inside, "imposter", "CMC tiles"))
            if part == "train":
                parts.negatives_train = parts.negatives_train.concatenate(sites)
                parts.training_pixels += rgb.shape[0] * split_x
            else:
                parts.negatives_val = parts.negatives_val.concatenate(sites)
                parts.regions.append(ValidationRegion(index, x_range, no_mitoses, True, "mitosis-free tiles"))


def _add_unlabeled_fields(parts: _RealParts, root: Path, grid_step_px: int) -> None:
    """MITOS 2012 fields: the validation fold's are regions without mitoses; the others train as negatives, being
    human breast tissue like most positives (without it every human-breast-looking window would be positive in
    training). Their few unannotated mitoses are removed before mining (`TrainingData.unlabeled`, pipeline)."""
    no_mitoses = np.zeros((0, 2), np.int64)
    for unlabeled_field in real_data.load_unlabeled_fields(root):
        index, rgb = parts.add_image(unlabeled_field.path, unlabeled_field.spacing_mm)
        if validation_fold(unlabeled_field.path.name):
            parts.regions.append(ValidationRegion(index, (0, rgb.shape[1]), no_mitoses, False, "MITOS 2012 fields"))
            continue
        parts.unlabeled.append(index)
        nuclei = nucleus_centres(rgb, unlabeled_field.spacing_mm)
        sites = _site_sets(index, rgb, nuclei, grid_step_px, "MITOS 2012", no_mitoses, 0.0)
        parts.negatives_train = parts.negatives_train.concatenate(sites)
        parts.training_pixels += rgb.shape[0] * rgb.shape[1]


def load_training_data(
    data: Path,
    grid_step_px: int,
    min_distance_um: float,
    validation_fraction: float = VALIDATION_FRACTION,
    seed: int = 0,
) -> TrainingData:
    """`from_real` when `data` holds the real offline folder (patches.csv), else `from_midog`."""
    data = Path(data)
    if not data.is_dir():
        raise FileNotFoundError(f"data folder {data} not found")
    if (data / "patches.csv").is_file():
        training_data = from_real(data, grid_step_px, min_distance_um)
    else:
        training_data = from_midog(data, grid_step_px, min_distance_um, validation_fraction, seed)
    if len(training_data.positives_train) == 0 or len(training_data.negatives_train) == 0:
        raise ValueError(f"{data}: no training positives or negatives ({training_data.summary()})")
    logger.info(training_data.summary())
    return training_data


__all__ = [
    "SOURCE_PX",
    "NegativeSites",
    "SiteImage",
    "TrainingData",
    "negative_sampler",
    "positive_sampler",
    "ValidationRegion",
    "load_training_data",
    "validation_fold",
]
