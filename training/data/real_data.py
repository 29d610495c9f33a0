"""The real H&E data available offline (``data/real``, see its README) as lazily loaded record lists.

Why: positives are plentiful there (5,696 real mitotic-figure crops from MIDOG 2021, MIDOG++ and TUPAC16), real
negatives are scarce (two mitosis-free tiles with annotated look-alikes, 15 unlabeled MITOS 2012 fields). Training
code needs all three as plain records with their origin (``dataset``, ``source``, ``slide``) so that validation can
be stratified and "which dataset" confounds checked; pixels are decoded only when a record is read.

Everything takes the data root as a parameter; the default is ``../shared/data/real`` relative to the repository.

Example::

    from training.data.real_data import load_patches, read_patch
    patches = load_patches()
    crop = read_patch(patches[0])  # 128 x 128 x 3 uint8, mitotic figure at the centre
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from model.spacing import DEFAULT_SPACING_MM
from model.tissue import tissue_mask

__all__ = [
    "DEFAULT_ROOT",
    "MITOS2012_SPACING_MM",
    "PatchRecord",
    "AnnotatedField",
    "TileRecord",
    "UnlabeledField",
    "load_midesec_fields",
    "load_mitosis_free_tiles",
    "load_patches",
    "load_unlabeled_fields",
    "read_image",
    "read_patch",
    "tissue_mask",
]

DEFAULT_ROOT: Path = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"
"""``../shared/data/real`` relative to the repository root."""
MITOS2012_SPACING_MM: float = 0.0002456
"""MITOS 2012 high-power fields (Aperio XT): 0.2456 um/px."""
_TILE_FOLDER = Path("tiles") / "cmc-no-mitosis"
_MIDESEC_FOLDER = Path("fields") / "midesec"
_MIDESEC_ANNOTATIONS = "midesec.json"
MIDOGPP_BLOCK = 64
"""MIDOG++ crops name no slide; their numbers run in the source's order, so blocks of this many consecutive numbers
are kept on one side of a split (crops of one image mostly stay together; a best effort, not a guarantee)."""
_UNLABELED_FOLDER = Path("unlabeled") / "mitos2012"
_LOOKALIKE_CLASS = 1


@dataclass(frozen=True)
class PatchRecord:
    """One crop centred on a mitotic figure. ``x_px`` / ``y_px`` locate it in its source slide when known."""

    path: Path
    label: int
    source: str
    dataset: str
    slide: str | None
    x_px: int | None
    y_px: int | None
    subclass: str
    size_px: int

    @property
    def stratum(self) -> str:
        """What validation should be stratified on: the originating dataset and the mitosis subclass."""
        return f"{self.dataset}/{self.subclass}"

    @property
    def group(self) -> str:
        """Crops of one slide belong together (keep them on one side of a split). Without a slide name: a block of
        `MIDOGPP_BLOCK` consecutive crop numbers when the name is a number, else the crop alone."""
        if self.slide:
            return f"{self.dataset}/{self.slide}"
        if self.path.stem.isdigit():
            return f"{self.dataset}/block{int(self.path.stem) // MIDOGPP_BLOCK}"
        return f"{self.dataset}/{self.path.name}"


@dataclass(frozen=True)
class TileRecord:
    """A mitosis-free JPEG tile (canine mammary carcinoma, tissue in its lower part) and its look-alike centres."""

    path: Path
    width_px: int
    height_px: int
    lookalikes_px: np.ndarray  # (N, 2) float (x, y) pixel centres of annotated look-alikes (hard negatives)
    spacing_mm: float = DEFAULT_SPACING_MM


@dataclass(frozen=True)
class AnnotatedField:
    """A completely annotated field (MiDeSeC): every mitotic figure is listed, everything else is a negative."""

    path: Path
    width_px: int
    height_px: int
    mitoses_xy_px: np.ndarray  # (N, 2) float (x, y) pixel centres of every mitotic figure
    spacing_mm: float = DEFAULT_SPACING_MM


@dataclass(frozen=True)
class UnlabeledField:
    """A MITOS 2012 high-power field: no labels, contains some unannotated mitotic figures."""

    path: Path
    width_px: int
    height_px: int
    spacing_mm: float = MITOS2012_SPACING_MM


def _root(root: str | Path | None) -> Path:
    root = Path(root) if root is not None else DEFAULT_ROOT
    if not root.is_dir():
        raise FileNotFoundError(f"real data folder {root} not found (expected data/real of the shared data)")
    return root


def _optional_int(text: str) -> int | None:
    return int(float(text)) if text.strip() else None


def load_patches(root: str | Path | None = None, check_files: bool = True) -> list[PatchRecord]:
    """Records of ``patches.csv`` (path,label,source,dataset,slide,x,y,subclass,size), in file order.

    Raises FileNotFoundError listing every missing patch file when ``check_files`` (cheap: no decoding).
    """
    root = _root(root)
    records = []
    with open(root / "patches.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            records.append(
                PatchRecord(
                    path=root / row["path"],
                    label=int(row["label"]),
                    source=row["source"],
                    dataset=row["dataset"],
                    slide=row["slide"] or None,
                    x_px=_optional_int(row["x"]),
                    y_px=_optional_int(row["y"]),
                    subclass=row["subclass"],
                    size_px=int(row["size"]),
                )
            )
    if check_files:
        missing = [str(record.path) for record in records if not record.path.is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} patch file(s) missing: " + ", ".join(missing[:20]))
    return records


def read_patch(record: PatchRecord) -> np.ndarray:
    """The crop as ``size_px x size_px x 3`` uint8 RGB (lossless WebP: identical to the original pixels)."""
    return read_image(record.path)


def read_image(path: str | Path) -> np.ndarray:
    """Any of these images (WebP / JPEG) as H x W x 3 uint8 RGB."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:  # reads the header only
        return image.size


def load_mitosis_free_tiles(root: str | Path | None = None) -> list[TileRecord]:
    """The mitosis-free tiles with their look-alikes: YOLO lines ``cls xc yc w h`` (normalised) -> pixel centres."""
    root = _root(root)
    records = []
    for path in sorted((root / _TILE_FOLDER).glob("*.jpg")):
        width_px, height_px = _image_size(path)
        centres = []
        label_path = path.with_suffix(".txt")
        if label_path.is_file():
            for line_number, line in enumerate(label_path.read_text().splitlines(), 1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) != 5:
                    raise ValueError(f"{label_path}:{line_number}: expected 'cls xc yc w h', got {line!r}")
                if int(fields[0]) == _LOOKALIKE_CLASS:
                    centres.append((float(fields[1]) * width_px, float(fields[2]) * height_px))
        records.append(TileRecord(path, width_px, height_px, np.asarray(centres, np.float64).reshape(-1, 2)))
    return records


def load_midesec_fields(root: str | Path | None = None) -> list[AnnotatedField]:
    """The MiDeSeC fields (1024 x 1024 px, 0.25 um/px) with the centres of their mitotic figures, sorted by name.

    `midesec.json` has the MIDOG 2021 layout: boxes [x1, y1, x2, y2] in pixels, category 1 = mitotic figure.
    """
    root = _root(root)
    folder = root / _MIDESEC_FOLDER
    payload = json.loads((folder / _MIDESEC_ANNOTATIONS).read_text())
    centres: dict[int, list[tuple[float, float]]] = {image["id"]: [] for image in payload["images"]}
    for annotation in payload["annotations"]:
        if annotation["category_id"] == 1:
            x1, y1, x2, y2 = annotation["bbox"]
            centres[annotation["image_id"]].append(((x1 + x2) / 2, (y1 + y2) / 2))
    records = []
    for image in sorted(payload["images"], key=lambda item: item["file_name"]):
        path = folder / image["file_name"]
        if not path.is_file():
            raise FileNotFoundError(f"{path} listed in {_MIDESEC_ANNOTATIONS} but missing")
        xy = np.asarray(centres[image["id"]], np.float64).reshape(-1, 2)
        records.append(AnnotatedField(path, int(image["width"]), int(image["height"]), xy))
    return records


def load_unlabeled_fields(root: str | Path | None = None) -> list[UnlabeledField]:
    """The MITOS 2012 high-power fields (2084 x 2084 px at 0.2456 um/px), sorted by name."""
    root = _root(root)
    return [UnlabeledField(path, *_image_size(path)) for path in sorted((root / _UNLABELED_FOLDER).glob("*.jpg"))]
