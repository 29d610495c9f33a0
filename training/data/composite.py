"""Composite dataset: real mitotic-figure crops blended into real mitosis-free backgrounds, in the MIDOG layout.

Why: real positives (5,696 crops) and real negatives (two mitosis-free tiles, 15 unlabeled fields) come from
different sources, so a classifier trained on them directly can learn "which dataset" instead of "mitosis". Pasting
the positives into the negatives' tissue puts both classes in one image with one background. The paste must leave
no seam or halo, or the detector learns the seam: only a soft-masked central disk of each 128 px crop is used, its
colour is matched to the local background in optical density (Reinhard-style mean / std matching of the ring around
the cell, per OD channel), and it is blended with a feathered (raised-cosine) alpha in OD space, where stains add
(`training.stain.optical_density`, the one definition).

Backgrounds: windows of the mitosis-free tiles' tissue (their annotated look-alikes inside the window become
category-2 imposters) and of the unlabeled MITOS 2012 fields (pastes are kept away from dark candidates there, since
those fields hold unannotated mitoses). Every image is tagged 0.25 um/px; the fields are really 0.2456 um/px (2%
smaller), which is not resampled.

Held-out variant (``held_out_only=True``, with ``patch_filter=is_held_out_positive``): backgrounds only from the tiles'
held-out columns (x >= 0.8 width, as ``training.data.sources.from_real`` splits them) and never from the fields, so
every detection away from a pasted figure is a true false positive; ``benchmarks.same_domain_validation`` scores the
detector there. ``provenance_path`` writes which crop went where and which background window each image is.

Example::

    python -m training.data.composite --out /tmp/composite --images 8 --seed 0 --preview docs/composite_examples.png
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from model.command_line import command_parser
from training.data.dataset_making import midog_image_entry, spaced_positions, write_midog_json
from training.data.midog_dataset import BOX_SIZE_PX, IMPOSTER, MITOTIC_FIGURE
from training.data.real_data import (
    DEFAULT_ROOT,
    PatchRecord,
    load_mitosis_free_tiles,
    load_patches,
    load_unlabeled_fields,
    read_image,
    read_patch,
    tissue_mask,
)
from training.data.sources import TILE_TRAIN_FRACTION, validation_fold
from training.data.synthetic import ANNOTATION_FILE, write_tiff
from training.stain import optical_density, rgb_from_optical_density

__all__ = [
    "TILE_TRAIN_FRACTION",
    "BlendGeometry",
    "blend_patch",
    "generate_composite",
    "get_args_parser",
    "is_held_out_positive",
    "main",
    "write_examples",
]

logger = logging.getLogger(__name__)

# Background origin written as MIDOG++-style tumor_type (so the split stratifies on it).
_TUMOUR_TYPES = {"tile": "composite on canine mammary carcinoma tile", "field": "composite on MITOS 2012 field"}


def is_held_out_positive(record: PatchRecord) -> bool:
    """A mitotic-figure crop of the training pipeline's held-out slides (``training.data.sources.from_real``)."""
    return record.label == 1 and validation_fold(record.group)


@dataclass(frozen=True)
class BlendGeometry:
    """Radii in pixels from the crop centre: fully pasted inside ``inner_px``, fully background beyond
    ``outer_px``; colour statistics are taken on the ring ``ring_px`` (just outside the cell, inside the crop)."""

    inner_px: float = 18.0
    outer_px: float = 34.0
    ring_px: tuple[float, float] = (26.0, 44.0)


def _radius(size_px: int) -> np.ndarray:
    offsets = np.arange(size_px, dtype=np.float32) - size_px // 2
    return np.hypot(offsets[:, None], offsets[None, :])


def blend_patch(
    background: np.ndarray, patch: np.ndarray, x_px: int, y_px: int, geometry: BlendGeometry = BlendGeometry()
) -> np.ndarray:
    """Return a copy of ``background`` (H x W x 3 uint8) with the crop's central disk pasted, centred at (x, y).

    The crop's OD is shifted and scaled per channel so that its ring statistics equal those of the background's ring
    at the target position, then alpha-blended with a raised-cosine ramp between ``inner_px`` and ``outer_px``.
    The target must leave half a crop of margin to every border.
    """
    size = patch.shape[0]
    half = size // 2
    height, width = background.shape[:2]
    if not (half <= x_px < width - half and half <= y_px < height - half):
        raise ValueError(f"paste position ({x_px}, {y_px}) needs {half} px margin in a {width}x{height} image")
    window = (slice(y_px - half, y_px - half + size), slice(x_px - half, x_px - half + size))
    radius = _radius(size)
    ring = (radius >= geometry.ring_px[0]) & (radius < geometry.ring_px[1])
    od_patch, od_background = optical_density(patch), optical_density(background[window])
    mean_patch, std_patch = od_patch[ring].mean(0), od_patch[ring].std(0) + 1e-3
    mean_background, std_background = od_background[ring].mean(0), od_background[ring].std(0) + 1e-3
    matched = (od_patch - mean_patch) / std_patch * std_background + mean_background
    ramp = np.clip((geometry.outer_px - radius) / (geometry.outer_px - geometry.inner_px), 0.0, 1.0)
    alpha = (0.5 - 0.5 * np.cos(np.pi * ramp))[..., None]
    out = background.copy()
    out[window] = rgb_from_optical_density(alpha * matched + (1.0 - alpha) * od_background)
    return out


def _dark_candidates(rgb: np.ndarray) -> np.ndarray:
    """Boolean mask of dark hematoxylin blobs (possible unannotated mitoses), dilated by a box size."""
    gray = rgb.astype(np.float32).mean(axis=-1)
    dark = ndimage.uniform_filter(gray, 5) < np.percentile(gray, 0.5)
    return ndimage.binary_dilation(dark, iterations=BOX_SIZE_PX)


def _pick_positions(
    rng: np.random.Generator, allowed: np.ndarray, count: int, margin_px: int, min_distance_px: float
) -> list[tuple[int, int]]:
    """Up to ``count`` (x, y) positions where ``allowed``, ``margin_px`` from the border, spaced apart."""
    height, width = allowed.shape
    inner = np.zeros_like(allowed)
    inner[margin_px : height - margin_px, margin_px : width - margin_px] = True
    ys, xs = np.nonzero(allowed & inner)
    if len(xs) == 0:
        return []
    order = rng.permutation(len(xs))[: count * 50]
    return spaced_positions(((int(xs[i]), int(ys[i])) for i in order), count, min_distance_px)


def _background_window(
    rng: np.random.Generator, source: np.ndarray, size_px: int, min_x_px: int = 0, tries: int = 12
) -> tuple[int, int]:
    """Top-left (x, y) of the window with the most tissue among a few random ones (left edge >= ``min_x_px``)."""
    height, width = source.shape[:2]
    best, best_fraction = (min_x_px, 0), -1.0
    for _ in range(tries):
        x0, y0 = int(rng.integers(min_x_px, width - size_px + 1)), int(rng.integers(0, height - size_px + 1))
        fraction = float(tissue_mask(source[y0 : y0 + size_px : 8, x0 : x0 + size_px : 8]).mean())
        if fraction > best_fraction:
            best, best_fraction = (x0, y0), fraction
    return best


def generate_composite(
    out_dir: str | Path,
    n_images: int,
    seed: int,
    size_px: int = 1024,
    mitoses_per_image: int = 6,
    root: str | Path | None = None,
    progress: bool = True,
    *,
    patch_filter: Callable[[PatchRecord], bool] | None = None,
    held_out_only: bool = False,
    provenance_path: str | Path | None = None,
) -> Path:
    """Write ``n_images`` composite images (``size_px`` squared) and a MIDOG-style annotation JSON.

    Backgrounds alternate between mitosis-free tile windows and unlabeled-field windows; crops are drawn from all
    patch datasets. Returns the annotation file path.

    ``patch_filter``: only crops it accepts are pasted. ``held_out_only``: backgrounds only from the tiles' held-out
    columns (x >= ``TILE_TRAIN_FRACTION`` width), never from the fields. ``provenance_path``: also write a JSON with,
    per image, its background window and each pasted crop (in the order of the image's mitosis annotations).
    """
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_root = Path(root) if root is not None else DEFAULT_ROOT
    patches, tiles, fields = _composite_sources(root, patch_filter, held_out_only)
    images, cells, provenance = [], [], []
    cache: dict[Path, np.ndarray] = {}
    for image_id in tqdm(range(1, n_images + 1), desc="composite images", disable=not progress):
        kind, record = _source_for(image_id, tiles, fields)
        if record.path not in cache:
            cache.clear()  # one big decoded background at a time
            cache[record.path] = read_image(record.path)
        source = cache[record.path]
        min_x = int(record.width_px * TILE_TRAIN_FRACTION) if held_out_only else 0
        if source.shape[1] - size_px < min_x:
            raise ValueError(f"{record.path.name}: columns x >= {min_x} are narrower than {size_px} px")
        x0, y0 = _window_origin(rng, kind, record, source, size_px, min_x, held_out_only)
        canvas = source[y0 : y0 + size_px, x0 : x0 + size_px].copy()
        allowed, image_annotations = _imposters_and_free_tissue(canvas, kind, record, x0, y0)
        canvas, pasted = _paste_mitoses(rng, canvas, allowed, patches, mitoses_per_image, data_root)
        image_annotations += [(entry["x_px"], entry["y_px"], MITOTIC_FIGURE) for entry in pasted]
        file_name = f"{image_id:03d}.tiff"
        background = {"kind": kind, "file": record.path.name, "x0_px": x0, "y0_px": y0, "size_px": size_px}
        background |= {"source_width_px": int(source.shape[1]), "source_height_px": int(source.shape[0])}
        provenance.append({"file_name": file_name, "background": background, "mitoses": pasted})
        write_tiff(out_dir / file_name, canvas)
        images.append(midog_image_entry(image_id, file_name, size_px, size_px, _TUMOUR_TYPES[kind]))
        cells.extend((image_id, x, y, label) for x, y, label in image_annotations)
    info = {
        "description": "Composite MIDOG 2022-format set: real mitotic-figure crops in real backgrounds "
        "(training.data.composite)",
        "version": "1.0",
        "year": 2022,
        "seed": seed,
    }
    licence = {"id": 1, "name": "see data/real/README.md (sources and licences of the real data)", "url": ""}
    path = write_midog_json(out_dir / ANNOTATION_FILE, info, licence, images, cells)
    if provenance_path is not None:
        settings = {"seed": seed, "n_images": n_images, "size_px": size_px, "mitoses_per_image": mitoses_per_image}
        settings |= {"held_out_only": held_out_only, "tile_train_fraction": TILE_TRAIN_FRACTION}
        sidecar = settings | {"patch_pool": len(patches), "images": provenance}
        Path(provenance_path).write_text(json.dumps(sidecar, indent=1) + "\n")
    return path


def _composite_sources(
    root: str | Path | None, patch_filter: Callable[[PatchRecord], bool] | None, held_out_only: bool
) -> tuple[list[PatchRecord], list, list]:
    """(mitosis crops, mitosis-free tiles, unlabeled fields) a composite set draws from."""
    patches = load_patches(root)
    if patch_filter is not None:
        patches = [patch for patch in patches if patch_filter(patch)]
        if not patches:
            raise ValueError("patch_filter accepts none of the patches")
    tiles, fields = load_mitosis_free_tiles(root), load_unlabeled_fields(root)
    if held_out_only:
        fields = []
        if not tiles:
            raise ValueError("held_out_only needs the mitosis-free tiles")
    return patches, tiles, fields


def _window_origin(
    rng: np.random.Generator,
    kind: str,
    record: object,
    source: np.ndarray,
    size_px: int,
    min_x: int,
    held_out_only: bool,
) -> tuple[int, int]:
    """Top-left (x0, y0) of the background window: on a tile near a look-alike (tile tissue is in the lower part,
    and imposters then come along), else a window with enough tissue."""
    lookalikes = record.lookalikes_px if kind == "tile" else np.zeros((0, 2))
    if held_out_only:
        lookalikes = lookalikes[lookalikes[:, 0] >= min_x]
    if kind == "tile" and len(lookalikes):
        x, y = lookalikes[int(rng.integers(0, len(lookalikes)))]
        x0 = int(
            np.clip(x - size_px / 2 + rng.integers(-size_px // 4, size_px // 4 + 1), min_x, source.shape[1] - size_px)
        )
        y0 = int(np.clip(y - size_px / 2 + rng.integers(-size_px // 4, size_px // 4 + 1), 0, source.shape[0] - size_px))
        return x0, y0
    if held_out_only:  # the held-out strip's tissue is a small part of it: look harder
        return _background_window(rng, source, size_px, min_x, tries=48)
    return _background_window(rng, source, size_px)


def _imposters_and_free_tissue(
    canvas: np.ndarray, kind: str, record: object, x0: int, y0: int
) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Where a mitosis may be pasted (tissue, away from the edge, from the imposters and, on fields, from dark
    nuclei that could be unannotated mitoses), and the tile's look-alikes inside the window as imposters."""
    size_px = canvas.shape[0]
    half_box = BOX_SIZE_PX // 2
    allowed = ndimage.binary_erosion(tissue_mask(canvas), iterations=20)
    image_annotations: list[tuple[int, int, int]] = []
    if kind == "tile":
        for x, y in record.lookalikes_px:
            if half_box <= x - x0 < size_px - half_box and half_box <= y - y0 < size_px - half_box:
                image_annotations.append((round(float(x) - x0), round(float(y) - y0), IMPOSTER))
    else:
        allowed &= ~_dark_candidates(canvas)
    for x, y, _ in image_annotations:
        allowed[max(0, y - 80) : y + 80, max(0, x - 80) : x + 80] = False
    return allowed, image_annotations


def _paste_mitoses(
    rng: np.random.Generator,
    canvas: np.ndarray,
    allowed: np.ndarray,
    patches: list[PatchRecord],
    mitoses_per_image: int,
    data_root: Path,
) -> tuple[np.ndarray, list[dict]]:
    """The canvas with mitosis crops blended in at spaced allowed positions, and each paste's provenance."""
    pasted = []
    for x, y in _pick_positions(rng, allowed, mitoses_per_image, 64, 100.0):
        patch: PatchRecord = patches[int(rng.integers(0, len(patches)))]
        canvas = blend_patch(canvas, read_patch(patch), x, y)
        pasted.append(
            {
                "x_px": x,
                "y_px": y,
                "patch": patch.path.relative_to(data_root).as_posix(),
                "dataset": patch.dataset,
                "source": patch.source,
                "group": patch.group,
                "subclass": patch.subclass,
            }
        )
    return canvas, pasted


def _source_for(image_id: int, tiles: list, fields: list) -> tuple[str, object]:
    """Odd ids use a mitosis-free tile, even ids an unlabeled field (cycling through each list)."""
    if image_id % 2 == 1 and tiles:
        return "tile", tiles[(image_id // 2) % len(tiles)]
    if fields:
        return "field", fields[(image_id // 2 - 1) % len(fields)]
    return "tile", tiles[(image_id // 2) % len(tiles)]


def write_examples(out_png: str | Path, n_examples: int = 4, seed: int = 0, root: str | Path | None = None) -> None:
    """Side-by-side crops: real crop as cut | background before | composite, one row per example (160 px each)."""
    rng = np.random.default_rng(seed)
    patches = load_patches(root)
    backgrounds = [read_image(tile.path) for tile in load_mitosis_free_tiles(root)[:1]]
    backgrounds += [read_image(field.path) for field in load_unlabeled_fields(root)[:1]]
    rows = []
    for k in range(n_examples):
        source = backgrounds[k % len(backgrounds)]
        x0, y0 = _background_window(rng, source, 256)
        canvas = source[y0 : y0 + 256, x0 : x0 + 256]
        allowed = ndimage.binary_erosion(tissue_mask(canvas), iterations=10)
        x, y = (_pick_positions(rng, allowed, 1, 80, 0.0) or [(128, 128)])[0]
        patch = read_patch(patches[int(rng.integers(0, len(patches)))])
        blended = blend_patch(canvas, patch, x, y)
        crop = (slice(y - 64, y + 64), slice(x - 64, x + 64))
        rows.append(np.concatenate([patch, canvas[crop], blended[crop]], axis=1))
    montage = np.concatenate(rows, axis=0)
    Image.fromarray(montage).resize((montage.shape[1] * 5 // 4, montage.shape[0] * 5 // 4)).quantize(
        256, dither=Image.Dither.NONE
    ).save(out_png, optimize=True)


DESCRIPTION = "Real mitotic-figure crops blended into real mitosis-free backgrounds, written in the MIDOG 2022 layout."
"""What `--help` says first."""


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = command_parser("training.data.composite", DESCRIPTION, add_help)
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--images", type=int, required=True, help="number of images (ids 001..N)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels (default: 1024)")
    parser.add_argument("--mitoses", type=int, default=6, help="pasted mitotic figures per image (default: 6)")
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="real data folder (default: ../shared/data/real relative to the repository)",
    )
    parser.add_argument(
        "--preview", type=Path, default=None, help="also write side-by-side example crops to this PNG (default: none)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = generate_composite(args.out, args.images, args.seed, args.size, args.mitoses, args.data_root)
    logger.info("wrote %s", path)
    if args.preview is not None:
        write_examples(args.preview, root=args.data_root)
        logger.info("wrote %s", args.preview)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
