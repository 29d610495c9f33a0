"""The verifier's training candidates: what the shipped detector proposes on real images, labelled where sound.

Every image goes through `Detector.candidates` exactly as `process.py` runs it (screen, cascade, agreement), and every
point at or above the bundle's candidate floor is kept with A's, B's and the ensemble probability. Labels:

* MiDeSeC fields (every mitosis annotated): the challenge's greedy matching within 7.5 um, one candidate per mitosis;
  every other candidate is a real negative.
* Mitosis crops (128 px, centred on a mitotic figure): the candidate matched to the centre is a positive. The other
  candidates of a crop are dropped: a crop's neighbours are not known to be non-mitotic.
* Mitosis-free canine tiles: every candidate is a negative.
* MITOS 2012 fields (unlabeled; they hold unannotated mitoses): the mined stage (Akram et al. 2018;
  `training.unlabeled_mining`) keeps the agreed candidates both nets score >= `MINED_THRESHOLD` under all 8 dihedral
  views, on tissue, as positives; the other candidates are dropped (an unlabeled point is not known to be a negative).

Each set is cached as one `.npz` under the run folder (`collect` skips a set already there), so a rerun only adds
what is missing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model.bundle import POLICY_NAMES
from model.candidates import EnsembleDetections
from model.matching import MATCH_RADIUS_UM, greedy_match
from model.spacing import DEFAULT_SPACING_MM
from training.data import real_data
from training.data.sources import validation_fold

logger = logging.getLogger("training.verifier_data")

SETS = ("fields", "crops", "tiles", "mined")
MINED_THRESHOLD = 0.95
"""The mined stage's cut (`training.validation.field_cv.MiningSettings.threshold`): the lowest probability over both
nets and the 8 views."""


@dataclass(frozen=True)
class CandidateSet:
    """Candidates of many images, one row each (`image` indexes `names`)."""

    names: np.ndarray  # (I,) str: image file names
    groups: np.ndarray  # (I,) str: the field name, the crop's dataset, or the tile
    held_out: np.ndarray  # (I,) bool: the dense nets never trained on this image (fields: the 10; crops: their split)
    image: np.ndarray  # (N,) int
    xy_px: np.ndarray  # (N, 2)
    probability: np.ndarray  # (N,) ensemble (min of A and B)
    probability_a: np.ndarray  # (N,)
    probability_b: np.ndarray  # (N,)
    agreed: np.ndarray  # (N,) bool
    neighbourhood: np.ndarray  # (N, 2) A's and B's maps over the 3 x 3 cells around the point
    label: np.ndarray  # (N,) int8: 1 mitosis, 0 not

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".partial.npz")
        np.savez(temporary, **{k: getattr(self, k) for k in self.__dataclass_fields__})
        temporary.replace(path)

    @classmethod
    def load(cls, path: Path) -> CandidateSet:
        with np.load(path) as data:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    def points(self, rows: np.ndarray) -> EnsembleDetections:
        """Some candidates as the detector's merged points (what `model.verifier.candidate_features` reads)."""
        return EnsembleDetections(
            xy_px=self.xy_px[rows],
            probability=self.probability[rows],
            agreed=self.agreed[rows],
            probability_a=self.probability_a[rows],
            probability_b=self.probability_b[rows],
            neighbourhood=self.neighbourhood[rows],
        )


def _points(detector, rgb: np.ndarray):
    merged = detector.candidates(rgb, (DEFAULT_SPACING_MM, DEFAULT_SPACING_MM))[2]
    return merged.subset(merged.probability >= detector.bundle.candidate_floor)


def matched_labels(xy_px: np.ndarray, mitoses_xy_px: np.ndarray, spacing_mm: float = DEFAULT_SPACING_MM) -> np.ndarray:
    """1 for each candidate the challenge's greedy matching pairs with an annotated mitosis, else 0."""
    label = np.zeros(len(xy_px), dtype=np.int8)
    radius_px = MATCH_RADIUS_UM / (spacing_mm * 1000.0)
    for _, prediction in greedy_match(np.asarray(mitoses_xy_px).reshape(-1, 2), xy_px, radius_px):
        label[prediction] = 1
    return label


def _assemble(names, groups, held_out, per_image: list[tuple]) -> CandidateSet:
    image, xy, p, pa, pb, agreed, context, label = [], [], [], [], [], [], [], []
    for index, (points, labels) in enumerate(per_image):
        image.append(np.full(len(labels), index))
        xy.append(points.xy_px.reshape(-1, 2))
        p.append(points.probability)
        pa.append(points.probability_a)
        pb.append(points.probability_b)
        agreed.append(points.agreed)
        context.append(points.neighbourhood.reshape(-1, 2))
        label.append(labels)

    def cat(parts: list) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros(0)

    return CandidateSet(
        np.asarray(names, dtype=str),
        np.asarray(groups, dtype=str),
        np.asarray(held_out, dtype=bool),
        cat(image).astype(np.int64),
        cat(xy).reshape(-1, 2).astype(np.float64),
        cat(p).astype(np.float64),
        cat(pa).astype(np.float64),
        cat(pb).astype(np.float64),
        cat(agreed).astype(bool),
        cat(context).reshape(-1, 2).astype(np.float64),
        cat(label).astype(np.int8),
    )


def field_candidates(detector, root: Path, never_trained: set[str]) -> CandidateSet:
    fields = real_data.load_midesec_fields(root)
    per_image = []
    for field in tqdm(fields, desc="verifier data: MiDeSeC fields", unit="field"):
        points = _points(detector, real_data.read_image(field.path))
        per_image.append((points, matched_labels(points.xy_px, field.mitoses_xy_px)))
    names = [f.path.name for f in fields]
    return _assemble(names, names, [n in never_trained for n in names], per_image)


def crop_candidates(detector, root: Path, limit: int | None = None) -> CandidateSet:
    """The candidate matched to each crop's centre (label 1); crops whose centre has no candidate add nothing."""
    records = real_data.load_patches(root)
    records = [r for r in records if r.label == 1][:limit]
    per_image = []
    for record in tqdm(records, desc="verifier data: mitosis crops", unit="crop", mininterval=5):
        rgb = real_data.read_patch(record)
        points = _points(detector, rgb)
        centre = np.array([[(rgb.shape[1] - 1) / 2, (rgb.shape[0] - 1) / 2]])
        keep = matched_labels(points.xy_px, centre).astype(bool)
        per_image.append((points.subset(keep), np.ones(int(keep.sum()), dtype=np.int8)))
    names = [str(r.path.relative_to(root)) for r in records]
    return _assemble(names, [r.dataset for r in records], [validation_fold(r.group) for r in records], per_image)


def tile_candidates(detector, root: Path) -> CandidateSet:
    tiles = real_data.load_mitosis_free_tiles(root)
    per_image = []
    for tile in tqdm(tiles, desc="verifier data: mitosis-free tiles", unit="tile"):
        points = _points(detector, real_data.read_image(tile.path))
        per_image.append((points, np.zeros(len(points.probability), dtype=np.int8)))
    names = [t.path.name for t in tiles]
    return _assemble(names, names, [False] * len(names), per_image)


def mined_candidates(detector, root: Path) -> CandidateSet:
    """The mitoses the mined stage (Akram et al. 2018) finds on the unlabeled MITOS 2012 fields, as positive
    candidates (module docstring)."""
    import torch

    from model.tissue import tissue_mask
    from training.augment import centre_windows
    from training.data.sources import SOURCE_PX
    from training.unlabeled_mining import view_agreement

    fields = real_data.load_unlabeled_fields(root)
    per_image = []
    half = SOURCE_PX // 2
    for field in tqdm(fields, desc="verifier data: MITOS 2012 fields (mined)", unit="field"):
        rgb = real_data.read_image(field.path)
        merged = detector.candidates(rgb, (field.spacing_mm, field.spacing_mm))[2]
        points = merged.subset(merged.agreed & (merged.probability >= MINED_THRESHOLD))
        rc = np.round(points.xy_px[:, ::-1]).astype(np.int64).reshape(-1, 2)
        keep = tissue_mask(rgb[rc[:, 0], rc[:, 1]][None])[0] if len(rc) else np.zeros(0, dtype=bool)
        if keep.any():
            padded = np.pad(rgb, ((half, half), (half, half), (0, 0)), mode="reflect")
            crops = np.stack([padded[r : r + SOURCE_PX, c : c + SOURCE_PX] for r, c in rc[keep]])
            networks = dict(zip(POLICY_NAMES, detector.networks, strict=True))
            lowest = view_agreement(networks, centre_windows(torch.from_numpy(crops)))
            keep[np.flatnonzero(keep)] = lowest >= MINED_THRESHOLD
        per_image.append((points.subset(keep), np.ones(int(keep.sum()), dtype=np.int8)))
    names = [f.path.name for f in fields]
    return _assemble(names, names, [False] * len(names), per_image)


def collect(detector, root: Path, folder: Path, never_trained: set[str], crop_limit: int | None = None) -> dict:
    """Every set, computed once and cached in `folder` (<set>.npz)."""
    makers = {
        "fields": lambda: field_candidates(detector, root, never_trained),
        "crops": lambda: crop_candidates(detector, root, crop_limit),
        "tiles": lambda: tile_candidates(detector, root),
        "mined": lambda: mined_candidates(detector, root),
    }
    sets = {}
    for name, make in makers.items():
        path = folder / f"{name}.npz"
        if not path.is_file():
            make().save(path)
        sets[name] = CandidateSet.load(path)
        logger.info("%s: %d candidates on %d images", name, len(sets[name].label), len(sets[name].names))
    return sets
