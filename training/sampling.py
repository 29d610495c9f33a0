"""Training samples from the real data shipped offline: positive patches and negative windows from whole fields.

Sources (see ../shared/data/real/README.md):
- positives: 5,696 128 px crops centred on real mitotic figures (MIDOG 2021, TUPAC16, MIDOG++);
- negatives: the two mitosis-free canine tiles (with their look-alike boxes) and the 15 unlabeled MITOS 2012 fields.
Negative centres are drawn from three pools: dark-blob centres (nuclei and other dark look-alikes: the confusers that
matter), random tissue positions and random positions anywhere (background must score low too).

Memory: positives are held as one uint8 array (5,696 x 128 x 128 x 3 = 280 MB) and negative images decoded once
(2 x 117 MB + 15 x 13 MB = 430 MB); everything else is cut on demand. This bounded cache is what the 'cpu-small'
run needs; `training/midog_dataset.py` reads MIDOG-scale datasets lazily by window instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage
from skimage.feature import peak_local_max
from tqdm import tqdm

from model.spacing import DEFAULT_SPACING_MM
from training.real_data import MITOS2012_SPACING_MM

SOURCE_PX = 128  # source crop side: room for +/-12 px shift and -10% zoom around a 78 px window
REAL_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def _validation_fold(key: str, fraction: float = 0.2) -> bool:
    """Stable pseudo-random assignment of a group key (slide or file) to validation."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def load_positives(data_dir: Path = REAL_DATA_DIR) -> tuple[np.ndarray, pd.DataFrame]:
    """All positive crops (N, 128, 128, 3) uint8 and their table with a `validation` column (grouped by slide)."""
    table = pd.read_csv(data_dir / "patches.csv")
    table = table[table["label"] == 1].reset_index(drop=True)
    groups = np.where(table["slide"].isna(), table["path"], table["dataset"] + "/" + table["slide"].astype(str))
    table["validation"] = [_validation_fold(str(g)) for g in groups]
    crops = np.empty((len(table), SOURCE_PX, SOURCE_PX, 3), dtype=np.uint8)
    for index, path in enumerate(tqdm(table["path"], desc="positive patches", unit="patch")):
        with Image.open(data_dir / path) as image:
            crops[index] = np.asarray(image.convert("RGB"))
    return crops, table


@dataclass
class NegativeImage:
    name: str
    rgb: np.ndarray  # (H, W, 3) uint8
    dark_centres: np.ndarray  # (N, 2) int (row, col) of dark blobs
    tissue_centres: np.ndarray  # (M, 2) int (row, col) on tissue
    lookalike_centres: np.ndarray  # (K, 2) int (row, col) annotated look-alikes
    x_range: tuple[int, int]  # columns this split may use (tiles are split left / right)
    spacing_mm: float
    may_hold_mitoses: bool  # unlabeled fields hold unannotated mitoses; the tiles are certified mitosis-free


def darkness(rgb: np.ndarray) -> np.ndarray:
    """Smoothed darkness (255 - grey) at half resolution: peaks are nuclei-like blobs."""
    grey = rgb[::2, ::2].astype(np.float32).mean(axis=2)
    return ndimage.gaussian_filter(255.0 - grey, sigma=3.0)


def _candidate_centres(rgb: np.ndarray, generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    dark = darkness(rgb)
    peaks = peak_local_max(dark, min_distance=6, threshold_abs=90.0, exclude_border=4) * 2
    tissue = np.argwhere(dark[::8, ::8] > 40.0) * 16
    tissue = tissue + generator.integers(0, 16, size=tissue.shape)
    return peaks, tissue


def load_negative_images(
    data_dir: Path = REAL_DATA_DIR, validation: bool = False, seed: int = 0
) -> list[NegativeImage]:
    """Mitosis-free tiles (left 80% train / right 20% validation) and unlabeled fields (grouped by file)."""
    generator = np.random.default_rng(seed)
    images = []
    tiles = sorted((data_dir / "tiles" / "cmc-no-mitosis").glob("*.jpg"))
    fields = sorted((data_dir / "unlabeled" / "mitos2012").glob("*.jpg"))
    for path in tqdm(tiles + fields, desc="negative images", unit="image"):
        is_tile = path in tiles
        if not is_tile and _validation_fold(path.name) != validation:
            continue
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
        height, width = rgb.shape[:2]
        x_range = (0, width)
        if is_tile:
            split_x = int(width * 0.8)
            x_range = (split_x, width) if validation else (0, split_x)
        dark, tissue = _candidate_centres(rgb, generator)
        lookalikes = np.zeros((0, 2), dtype=np.int64)
        boxes = path.with_suffix(".txt")
        if boxes.is_file():
            rows = np.loadtxt(boxes, ndmin=2)
            lookalikes = np.stack([rows[:, 2] * height, rows[:, 1] * width], axis=1).astype(np.int64)

        def inside(centres: np.ndarray, x_range: tuple[int, int] = x_range) -> np.ndarray:
            keep = (centres[:, 1] >= x_range[0]) & (centres[:, 1] < x_range[1])
            return centres[keep]

        images.append(
            NegativeImage(
                path.name,
                rgb,
                inside(dark),
                inside(tissue),
                inside(lookalikes),
                x_range,
                spacing_mm=DEFAULT_SPACING_MM if is_tile else MITOS2012_SPACING_MM,
                may_hold_mitoses=not is_tile,
            )
        )
    return images


def crop_around(rgb: np.ndarray, row: int, col: int, size_px: int = SOURCE_PX) -> np.ndarray:
    """size_px crop centred on (row, col); reflection-padded where it leaves the image."""
    half = size_px // 2
    top, left = row - half, col - half
    height, width = rgb.shape[:2]
    if top >= 0 and left >= 0 and top + size_px <= height and left + size_px <= width:
        return rgb[top : top + size_px, left : left + size_px]
    rows = np.clip(np.arange(top, top + size_px), 0, height - 1)
    cols = np.clip(np.arange(left, left + size_px), 0, width - 1)
    return rgb[np.ix_(rows, cols)]


@dataclass(frozen=True)
class NegativeMix:
    """Share of each negative pool in a batch's negatives (look-alikes get the rest)."""

    dark: float = 0.55
    tissue: float = 0.30
    anywhere: float = 0.10


def sample_negatives(
    images: list[NegativeImage], count: int, generator: np.random.Generator, mix: NegativeMix = NegativeMix()
) -> np.ndarray:
    """(count, 128, 128, 3) negative crops drawn from the pools of randomly chosen images."""
    crops = np.empty((count, SOURCE_PX, SOURCE_PX, 3), dtype=np.uint8)
    pools = generator.choice(
        4, size=count, p=[mix.dark, mix.tissue, mix.anywhere, 1 - mix.dark - mix.tissue - mix.anywhere]
    )
    weights = np.array([img.rgb.shape[0] * (img.x_range[1] - img.x_range[0]) for img in images], dtype=np.float64)
    for index, pool in enumerate(pools):
        image = images[generator.choice(len(images), p=weights / weights.sum())]
        centres = (image.dark_centres, image.tissue_centres, None, image.lookalike_centres)[pool]
        if centres is None or len(centres) == 0:
            row = int(generator.integers(0, image.rgb.shape[0]))
            col = int(generator.integers(*image.x_range))
        else:
            row, col = centres[generator.integers(0, len(centres))]
        # keep the crop inside the image: edge padding would be a texture positives never show
        half = SOURCE_PX // 2
        row = int(np.clip(row, half, image.rgb.shape[0] - half))
        col = int(np.clip(col, half, image.rgb.shape[1] - half))
        crops[index] = crop_around(image.rgb, int(row), int(col))
    return crops


@dataclass(frozen=True)
class HardNegatives:
    """Centres of mined hard negatives (see `training.mine`): image name and pixel (row, col) per entry."""

    image: np.ndarray
    row_px: np.ndarray
    col_px: np.ndarray

    @classmethod
    def load(cls, path: Path) -> HardNegatives:
        data = np.load(path)
        return cls(data["image"], data["row_px"], data["col_px"])


def sample_hard_negatives(
    images: list[NegativeImage], hard: HardNegatives, count: int, generator: np.random.Generator
) -> np.ndarray:
    """(count, 128, 128, 3) crops centred on randomly drawn hard-negative centres."""
    by_name = {image.name: image for image in images}
    crops = np.empty((count, SOURCE_PX, SOURCE_PX, 3), dtype=np.uint8)
    half = SOURCE_PX // 2
    for index, pick in enumerate(generator.integers(0, len(hard.image), size=count)):
        image = by_name[str(hard.image[pick])]
        row = int(np.clip(hard.row_px[pick], half, image.rgb.shape[0] - half))
        col = int(np.clip(hard.col_px[pick], half, image.rgb.shape[1] - half))
        crops[index] = crop_around(image.rgb, row, col)
    return crops
