"""The screen stage: distil the two-model ensemble into the fast first stage (`model.screen`) and choose its threshold.

    python -m training.screen --bundle model/weights --data ../shared/data/real --out runs/screen [--config NAME]

1. Pages: the training part of every image cut into pages of at most 1024 px (MiDeSeC training fields, the training
   columns of the mitosis-free tiles, the training MITOS 2012 fields; a MIDOG split's training images), at most
   `max_pages` of them drawn at random, plus `positive_crops` of the labelled training mitoses (128 px crops).
2. Teacher: both P4 models scored everywhere on each page (the exact dense path, mirrored like `process.py`); the
   screen's target for each of its cells is the ensemble probability (the lower of A and B) of the P4 cells it owns
   (`model.screen.screen_targets`), divided by the bundle's candidate floor and clipped to 1: the screen learns the
   one decision it makes, "could there be a candidate here", with the graded values below the floor as soft labels.
   A labelled mitosis sets its own cell's target to 1.
3. Training: crops of `crop_cells` screen cells from the pages and the whole positive crops, random 90-degree
   rotations / flips and policy B's colour jitter, binary cross-entropy, AdamW, cosine decay. Fixed seed.
4. Threshold: on the validation regions (the held-out MiDeSeC fields, mitosis-free tile columns, MITOS 2012 fields;
   a split's validation images) the cascade is replayed from the teacher's full maps for a ladder of thresholds
   (`cascade_points`, the same code as `Detector`): the highest threshold that keeps at least `survival` of the
   exact path's points and every point it names "mitotic figure" is chosen.
5. The screen is added to the bundle (`screen.safetensors`, its sha256 and threshold) with a report
   (`screen_report.json` and bundle.json's "screen_validation"): survival, named survival, share of P4 windows
   scored.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional as F
from tqdm import tqdm

from model import Detector
from model.atomic_files import write_json_atomically
from model.bundle import DEFAULT_BUNDLE_DIR, POLICY_NAMES, SCREEN_FILE, read_bundle, write_screen
from model.candidates import EnsembleDetections, ensemble_probability, name_mitotic_figures
from model.cascade import PART_FITTED_TILES, PART_TILE_CELLS, cascade_points
from model.command_line import command_parser
from model.dense import MirroredImage, covered_cells, probability_map
from model.geometry import OUTPUT_STRIDE_PX, map_shape, pixel_from_map_index
from model.screen import SCREEN_GRID, ScreenNet, p4_cells_passing, screen_map, screen_map_shape, screen_targets
from model.spacing import DEFAULT_SPACING_MM
from training.augment import POLICIES, colour_jitter
from training.config import ScreenSettings, load_config
from training.data.sources import SOURCE_PX, TrainingData

logger = logging.getLogger("training.screen")
COLOUR_POLICY = POLICIES[POLICY_NAMES[1]]
"""The screen's crops are recoloured as policy B recolours the dense models' training windows."""
PAGE_PX = 1024
THRESHOLD_LADDER = np.concatenate([[0.0], np.geomspace(1e-4, 0.9, 60)])
"""Thresholds tried, from "everything passes" up: fine at the low end, where the survival rate changes fastest."""


@dataclass
class Page:
    """A piece of a training image, the screen's target on it, and the teacher's full maps (threshold replay)."""

    rgb: np.ndarray
    target: np.ndarray
    name: str


def teacher_maps(detector: Detector, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both P4 models' full maps (the exact dense path)."""
    return tuple(  # type: ignore[return-value]
        probability_map(rgb, detector.scorer(net), detector.device, detector.tile_cells) for net in detector.networks
    )


def page_target(detector: Detector, rgb: np.ndarray, mitoses_xy_px: np.ndarray | None = None) -> np.ndarray:
    """The screen's target on an image: the ensemble over the cells each screen cell owns, over the candidate floor,
    clipped to 1; 1 at the cells owning a labelled mitosis."""
    map_a, map_b = teacher_maps(detector, rgb)
    ensemble = ensemble_probability(map_a, map_b)
    if mitoses_xy_px is not None and len(mitoses_xy_px):
        origin_px = pixel_from_map_index(np.zeros(2))
        cells = np.rint((np.asarray(mitoses_xy_px)[:, ::-1] - origin_px) / OUTPUT_STRIDE_PX).astype(int)
        cells = np.clip(cells, 0, np.array(ensemble.shape) - 1)
        ensemble[cells[:, 0], cells[:, 1]] = 1.0
    target = screen_targets(ensemble, screen_map_shape(*rgb.shape[:2]))
    return np.clip(target / detector.bundle.candidate_floor, 0.0, 1.0).astype(np.float32)


def training_ranges(data: TrainingData) -> list[tuple[int, tuple[int, int]]]:
    """(image index, x range) of every image part no validation region covers."""
    held_out: dict[int, list[tuple[int, int]]] = {}
    for region in data.validation_regions:
        held_out.setdefault(region.image, []).append(region.x_range)
    ranges = []
    for index, image in enumerate(data.images):
        x0 = 0
        for start, stop in sorted(held_out.get(index, [])) + [(image.width_px, image.width_px)]:
            if start - x0 >= SCREEN_GRID.receptive_field_px:
                ranges.append((index, (x0, start)))
            x0 = max(x0, stop)
    return ranges


def pages_of(data: TrainingData, max_pages: int, rng: np.random.Generator) -> list[tuple[int, int, int, int, int]]:
    """(image, x0, y0, width, height) of at most `max_pages` pages of the training ranges, drawn at random."""
    pages = []
    for index, (x_start, x_stop) in training_ranges(data):
        height_px = data.images[index].height_px
        for y0 in range(0, height_px, PAGE_PX):
            for x0 in range(x_start, x_stop, PAGE_PX):
                width, height = min(PAGE_PX, x_stop - x0), min(PAGE_PX, height_px - y0)
                if min(width, height) >= SCREEN_GRID.receptive_field_px:
                    pages.append((index, x0, y0, width, height))
    if len(pages) > max_pages:
        pages = [pages[i] for i in sorted(rng.choice(len(pages), max_pages, replace=False))]
    return pages


def build_pages(detector: Detector, data: TrainingData, settings: ScreenSettings, rng: np.random.Generator):
    """Teacher targets for the training pages and the positive crops."""
    pages, positives = [], []
    for index, x0, y0, width, height in tqdm(pages_of(data, settings.max_pages, rng), desc="teacher: pages"):
        image = data.images[index]
        rgb = np.ascontiguousarray(image.read((x0, x0 + width))[y0 : y0 + height])
        pages.append(Page(rgb, page_target(detector, rgb), f"{image.name}@{x0},{y0}"))
    chosen = rng.choice(len(data.positives_train), min(settings.positive_crops, len(data.positives_train)), False)
    centre = np.array([[SOURCE_PX / 2 - 0.5, SOURCE_PX / 2 - 0.5]])
    for index in tqdm(sorted(chosen), desc="teacher: mitoses"):
        rgb = data.positives_train[index]
        positives.append(Page(rgb, page_target(detector, rgb, centre), f"positive {index}"))
    return pages, positives


def random_crops(pages: Sequence[Page], count: int, crop_cells: int, rng: np.random.Generator):
    """`count` crops of `crop_cells` screen cells (whole pages when smaller) and their targets, as tensors."""
    crop_px = SCREEN_GRID.receptive_field_px + (crop_cells - 1) * SCREEN_GRID.stride_px
    weights = np.array([p.target.size for p in pages], dtype=np.float64)
    images, targets = [], []
    for page_index in rng.choice(len(pages), count, p=weights / weights.sum()):
        page = pages[page_index]
        mirrored = MirroredImage(page.rgb)
        rows, cols = page.target.shape
        cells = min(crop_cells, rows, cols)
        row0, col0 = rng.integers(0, rows - cells + 1), rng.integers(0, cols - cells + 1)
        size_px = SCREEN_GRID.receptive_field_px + (cells - 1) * SCREEN_GRID.stride_px
        y0, x0 = row0 * SCREEN_GRID.stride_px, col0 * SCREEN_GRID.stride_px
        crop = mirrored[y0 : y0 + size_px, x0 : x0 + size_px]
        target = page.target[row0 : row0 + cells, col0 : col0 + cells]
        if cells < crop_cells:  # pad to the batch shape; the padding is masked out of the loss
            crop = np.pad(crop, ((0, crop_px - size_px), (0, crop_px - size_px), (0, 0)), mode="reflect")
            target = np.pad(target, ((0, crop_cells - cells), (0, crop_cells - cells)), constant_values=-1.0)
        turns, flip = int(rng.integers(4)), bool(rng.integers(2))
        crop, target = np.rot90(crop, turns), np.rot90(target, turns)
        if flip:
            crop, target = crop[:, ::-1], target[:, ::-1]
        images.append(np.ascontiguousarray(crop))
        targets.append(np.ascontiguousarray(target))
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(targets))


def train_screen(
    pages: Sequence[Page], positives: Sequence[Page], settings: ScreenSettings, device: torch.device, seed: int = 0
) -> tuple[ScreenNet, list[float]]:
    """Distillation (module docstring, step 3); returns the network in eval mode and the loss per iteration."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    network = ScreenNet().to(device).train()
    optimizer = torch.optim.AdamW(network.parameters(), lr=settings.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.iterations)
    losses = []
    for _ in tqdm(range(settings.iterations), desc="screen", unit="it"):
        batches = [random_crops(pages, settings.batch_size, settings.crop_cells, rng)]
        if positives:
            batches.append(random_crops(positives, max(1, settings.batch_size // 4), settings.crop_cells, rng))
        loss = torch.zeros((), device=device)
        for crops, targets in batches:
            rgb = colour_jitter(crops.permute(0, 3, 1, 2).float() / 255.0, COLOUR_POLICY, generator)
            logits = network(rgb.to(device).contiguous(memory_format=torch.channels_last))[:, 0]
            targets = targets.to(device)
            valid = targets >= 0
            loss = loss + F.binary_cross_entropy_with_logits(logits[valid], targets[valid])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    return network.eval(), losses


def _same_points(exact: EnsembleDetections, fast: EnsembleDetections, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """For each exact point at or above the floor: is it among the fast path's points (same place, same score)?"""
    keep = exact.probability >= floor
    fast_keep = fast.probability >= floor
    found = {
        (round(x, 3), round(y, 3), round(p, 6))
        for (x, y), p in zip(fast.xy_px[fast_keep], fast.probability[fast_keep], strict=True)
    }
    present = np.array(
        [
            (round(x, 3), round(y, 3), round(p, 6)) in found
            for (x, y), p in zip(exact.xy_px[keep], exact.probability[keep], strict=True)
        ],
        dtype=bool,
    )
    return present, exact.agreed[keep]


def replay(detector: Detector, rgb: np.ndarray, screen_probability: np.ndarray, thresholds: np.ndarray) -> list[dict]:
    """Survival of the exact path's points for each screen threshold, from the teacher's full maps (no rescoring):
    a partly scored map is the full map on the covered cells and 0 elsewhere, exactly as `Detector` computes it."""
    spacing_mm = (DEFAULT_SPACING_MM, DEFAULT_SPACING_MM)
    full = teacher_maps(detector, rgb)
    shape = map_shape(*rgb.shape[:2])

    def from_full(index: int):
        def map_of(cells: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
            if cells is None:
                return full[index], None
            role = POLICY_NAMES[index]
            covered = covered_cells(cells, PART_TILE_CELLS[role], PART_FITTED_TILES[role])
            return np.where(covered, full[index], 0.0).astype(np.float32), covered

        return map_of

    bundle = detector.bundle
    exact = cascade_points(bundle, spacing_mm, from_full(0), from_full(1), None)[2]
    named = name_mitotic_figures(exact, bundle.threshold, rgb)
    rows = []
    for threshold in thresholds:
        passing = p4_cells_passing(screen_probability >= threshold, shape)
        _, _, fast = cascade_points(bundle, spacing_mm, from_full(0), from_full(1), passing)
        present, _ = _same_points(exact, fast, bundle.candidate_floor)
        named_present, _ = _same_points(
            EnsembleDetections(exact.xy_px[named], exact.probability[named], exact.agreed[named]), fast, 0.0
        )
        rows.append(
            {
                "points": int(len(present)),
                "surviving": int(present.sum()),
                "named": int(named.sum()),
                "named_surviving": int(named_present.sum()),
                "cells_passing": float(passing.mean()),
            }
        )
    return rows


def choose_threshold(detector: Detector, screen: ScreenNet, data: TrainingData, survival: float) -> tuple[float, dict]:
    """The highest threshold of the ladder that keeps `survival` of all validation points and every named one."""
    totals = np.zeros((len(THRESHOLD_LADDER), 5))
    for region in tqdm(data.validation_regions, desc="screen threshold", unit="region"):
        rgb = np.ascontiguousarray(data.images[region.image].read(region.x_range))
        rows = replay(
            detector, rgb, screen_map(rgb, screen, detector.device, detector.autocast_dtype), THRESHOLD_LADDER
        )
        totals += [[r["points"], r["surviving"], r["named"], r["named_surviving"], r["cells_passing"]] for r in rows]
    points, surviving, named, named_surviving, passing = totals.T
    passing = passing / len(data.validation_regions)
    rate = np.where(points > 0, surviving / np.maximum(points, 1), 1.0)
    ok = (rate >= survival) & (named_surviving == named)
    best = int(np.flatnonzero(ok).max())
    curve = [
        {"threshold": float(t), "survival": float(r), "named_surviving": int(n), "cells_passing": float(c)}
        for t, r, n, c in zip(THRESHOLD_LADDER, rate, named_surviving, passing, strict=True)
    ]
    report = {
        "threshold": float(THRESHOLD_LADDER[best]),
        "survival": float(rate[best]),
        "points": int(points[best]),
        "named": int(named[best]),
        "named_surviving": int(named_surviving[best]),
        "validation_cells_passing": float(passing[best]),
        "required_survival": survival,
        "regions": len(data.validation_regions),
        "curve": curve,
    }
    return float(THRESHOLD_LADDER[best]), report


SCREEN_WEIGHTS = SCREEN_FILE
SCREEN_REPORT = "screen_report.json"


def rechoose_threshold(bundle_dir: Path, data: TrainingData, settings: ScreenSettings, out: Path) -> None:
    """Step 4 again for the trained screen in `out` (after a change to how the cascade or the screen map is
    computed); the training part of the report is kept."""
    report = json.loads((out / SCREEN_REPORT).read_text())
    network = ScreenNet()
    network.load_state_dict(load_file(str(out / SCREEN_WEIGHTS)))
    detector = Detector(bundle_dir, use_screen=False)
    _, chosen = choose_threshold(detector, network.eval().to(detector.device), data, settings.survival)
    write_json_atomically(report | chosen, out / SCREEN_REPORT)


def run_screen_stage(bundle_dir: Path, data: TrainingData, settings: ScreenSettings, out: Path, seed: int = 0) -> dict:
    """Steps 1-5 of the module docstring; returns the report. Resumable: when `out` already holds a finished
    screen (weights + report), it is only attached to the bundle again (the pipeline rewrites the bundle)."""
    out.mkdir(parents=True, exist_ok=True)
    if not (out / SCREEN_REPORT).is_file():
        started = time.time()
        if settings.threads:
            torch.set_num_threads(settings.threads)
        detector = Detector(bundle_dir, use_screen=False)
        rng = np.random.default_rng(seed)
        pages, positives = build_pages(detector, data, settings, rng)
        network, losses = train_screen(pages, positives, settings, detector.device, seed)
        _, report = choose_threshold(detector, network, data, settings.survival)
        report |= {
            "pages": len(pages),
            "positive_crops": len(positives),
            "settings": asdict(settings),
            "final_loss": float(np.mean(losses[-50:])) if losses else None,
            "seconds": round(time.time() - started),
        }
        np.save(out / "losses.npy", np.asarray(losses, dtype=np.float32))
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}, str(out / SCREEN_WEIGHTS)
        )
        write_json_atomically(report, out / SCREEN_REPORT)
    report = json.loads((out / SCREEN_REPORT).read_text())
    bundle = read_bundle(bundle_dir)
    bundle.extra["screen_validation"] = {k: v for k, v in report.items() if k != "curve"}
    write_screen(bundle, load_file(str(out / SCREEN_WEIGHTS)), report["threshold"], bundle_dir)
    logger.info(
        "screen: threshold %.4g keeps %.2f%% of %d validation points and %d of %d named; P4 A scores %.1f%% of cells",
        report["threshold"],
        100 * report["survival"],
        report["points"],
        report["named_surviving"],
        report["named"],
        100 * report["validation_cells_passing"],
    )
    return report


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = command_parser("training.screen", __doc__, add_help, argparse.RawTextHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE_DIR, help="bundle to add the screen to")
    parser.add_argument("--data", type=Path, required=True, help="the training data the bundle was made with")
    parser.add_argument("--out", type=Path, required=True, help="folder for the report and loss curve")
    parser.add_argument("--config", default="gpu-short", help="config whose [data] and [screen] settings apply")
    parser.add_argument(
        "--rechoose-threshold", action="store_true", help="keep the screen trained in --out, choose its threshold again"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = get_args_parser().parse_args(argv)
    config = load_config(args.config)
    data = config.data.load(args.data)
    if args.rechoose_threshold:
        rechoose_threshold(args.bundle, data, config.screen, args.out)
    report = run_screen_stage(args.bundle, data, config.screen, args.out)
    print(json.dumps({k: v for k, v in report.items() if k != "curve"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
