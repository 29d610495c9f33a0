"""A distilled student for model A (issue 32, optional item 5): can a plain CNN with a fraction of A's operations
stand in for it, out of fold, within 0.01 F1 and AP?

    python -m training.student --data ../shared/data/real --out runs/student [--steps 1800]

Why: on tissue model A scores every window and is the one full map left (docs/performance.md, "the ceiling of a
cell-level screen"); only cheaper windows can go below it. The student has A's geometry (78 px windows every 8 px,
valid convolutions: `model.geometry.P4_GRID`), so it drops into the cascade in A's place.

1. **Teacher maps** (cached, resumable): A's dense probability map of each training image, by the shipped detector:
   the 15 MITOS 2012 fields at the networks' spacing, the tissue rows of the two mitosis-free canine tiles and the
   real mitosis crops of `patches.csv` (128 px, mirrored like every image).
2. **Distillation**: random 33 x 33-cell windows of those maps, binary cross-entropy against A's probability,
   cells where A is above the candidate floor weighted 10x (the candidates are what the cascade reads), Adam with
   a cosine decay, fixed seed, `--steps` steps.
3. **Out of fold**: the 35 MiDeSeC fields, which no step above reads: the cascade with A (the shipped bundle) and with
   the student in A's place, B and the naming rule unchanged (the dense nets' rule: the verifier was fitted to A's
   numbers), F1 and AP as the challenge computes them (`evaluation.metrics`), and the seconds of each cascade.

Writes OUT/student.safetensors, OUT/report.json. The student is kept (bundled) only if both differences are within
0.01; the result is reported either way (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from evaluation.metrics import Counts, average_precision, detection_counts
from model import Detector, cascade, spacing
from model.candidates import name_mitotic_figures
from model.command_line import command_parser
from model.dense import probability_map, window_scorer
from model.geometry import BORDER_PAD_PX, OUTPUT_STRIDE_PX, RECEPTIVE_FIELD_PX
from model.progress import progress_bar
from model.resample import to_model_spacing
from model.tissue import glass_mask
from training.data import real_data

STUDENT_LAYERS: tuple[tuple[int, int, int], ...] = (
    (8, 2, 16),
    (3, 1, 24),
    (3, 1, 24),
    (2, 2, 32),
    (3, 1, 32),
    (3, 1, 32),
    (2, 2, 64),
    (3, 1, 64),
    (3, 1, 64),
    (2, 1, 64),
)
"""(kernel, stride, channels): receptive field 78 px, stride 8 (A's grid), about 0.75 MFLOP per window against A's
3.1 (counted per output cell of a full map)."""
CROP_CELLS = 33
FLOOR_WEIGHT = 10.0
PATCHES_USED = 1500


class StudentNet(nn.Module):
    """(N, 3, H, W) float in [0, 1] -> (N, 2, h, w) logits, A's output format (class 1: mitosis)."""

    def __init__(self, layers: tuple[tuple[int, int, int], ...] = STUDENT_LAYERS):
        super().__init__()
        modules: list[nn.Module] = []
        channels_in = 3
        for kernel, stride, channels in layers:
            modules += [nn.Conv2d(channels_in, channels, kernel, stride), nn.BatchNorm2d(channels), nn.ReLU(True)]
            channels_in = channels
        modules.append(nn.Conv2d(channels_in, 2, 1))
        self.layers = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def training_images(data: Path) -> list[np.ndarray]:
    """The images the student learns from, at the networks' spacing; none of the MiDeSeC fields."""
    images = []
    for field in real_data.load_unlabeled_fields(data):
        rgb = real_data.read_image(field.path)
        images.append(to_model_spacing(rgb, (field.spacing_mm, field.spacing_mm)).image_rgb)
    for tile in real_data.load_mitosis_free_tiles(data):
        rgb = real_data.read_image(tile.path)
        rows = np.flatnonzero((~glass_mask(rgb)).mean(axis=1) > 0.2)
        if len(rows):
            images.append(rgb[max(0, rows[0] - 64) : rows[-1] + 64])
    records = real_data.load_patches(data)
    chosen = np.random.default_rng(0).choice(len(records), size=min(PATCHES_USED, len(records)), replace=False)
    images += [real_data.read_patch(records[i]) for i in sorted(chosen)]
    return images


def teacher_maps(detector: Detector, images: list[np.ndarray], cache: Path) -> list[np.ndarray]:
    """A's probability map of every image (cached in `cache`: a rerun reads it back)."""
    if cache.is_file():
        with np.load(cache) as stored:
            return [stored[f"map_{i}"] for i in range(len(images))]
    scorer = detector.scorer(detector.networks[0])
    maps = [probability_map(rgb, scorer, detector.device) for rgb in images]
    np.savez(cache, **{f"map_{i}": m for i, m in enumerate(maps)})
    return maps


def padded(rgb: np.ndarray) -> np.ndarray:
    return np.pad(rgb, ((BORDER_PAD_PX, BORDER_PAD_PX), (BORDER_PAD_PX, BORDER_PAD_PX), (0, 0)), mode="reflect")


def sample_batch(
    rng: np.random.Generator, images: list[np.ndarray], maps: list[np.ndarray], weights: np.ndarray, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`size` crops of up to CROP_CELLS cells (the same shape within the batch) and A's map over them."""
    chosen = rng.choice(len(images), size=size, p=weights)
    cells = min(CROP_CELLS, *(min(maps[i].shape) for i in chosen))
    inputs, targets = [], []
    for index in chosen:
        row = int(rng.integers(0, maps[index].shape[0] - cells + 1))
        col = int(rng.integers(0, maps[index].shape[1] - cells + 1))
        side_px = RECEPTIVE_FIELD_PX + (cells - 1) * OUTPUT_STRIDE_PX
        y0, x0 = row * OUTPUT_STRIDE_PX, col * OUTPUT_STRIDE_PX
        inputs.append(images[index][y0 : y0 + side_px, x0 : x0 + side_px])
        targets.append(maps[index][row : row + cells, col : col + cells])
    batch = torch.from_numpy(np.stack(inputs)).permute(0, 3, 1, 2).float().div(255)
    return batch.contiguous(memory_format=torch.channels_last), torch.from_numpy(np.stack(targets))


def distil(
    images: list[np.ndarray], maps: list[np.ndarray], steps: int, floor: float, batch_crops: int = 12
) -> StudentNet:
    """Train the student against A's maps for `steps` Adam steps of `batch_crops` crops (fixed seed)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    student = StudentNet().to(memory_format=torch.channels_last)
    optimiser = torch.optim.Adam(student.parameters(), lr=2e-3)
    padded_images = [padded(rgb) for rgb in images]
    small = np.array([min(m.shape) < CROP_CELLS for m in maps])  # crops of the patches: batches of their own
    groups = [np.flatnonzero(small), np.flatnonzero(~small)]
    groups = [g for g in groups if len(g)]
    cells = [np.array([maps[i].size for i in g], dtype=np.float64) for g in groups]
    group_share = np.array([c.sum() for c in cells]) / sum(c.sum() for c in cells)
    bar = progress_bar(range(1, steps + 1), stage="distillation", unit="step")
    for step in bar:
        g = int(rng.choice(len(groups), p=group_share))
        chosen = [padded_images[i] for i in groups[g]], [maps[i] for i in groups[g]]
        inputs, targets = sample_batch(rng, *chosen, cells[g] / cells[g].sum(), batch_crops)
        logits = student(inputs)
        logit = logits[:, 1] - logits[:, 0]
        weight = 1.0 + (FLOOR_WEIGHT - 1.0) * (targets > floor).float()
        loss = nn.functional.binary_cross_entropy_with_logits(logit, targets, weight=weight)
        for group in optimiser.param_groups:  # cosine decay over the steps
            group["lr"] = 2e-3 * 0.5 * (1 + np.cos(np.pi * (step - 1) / steps))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return student.eval()


def save_student(student: StudentNet, path: Path) -> None:
    """The student's weights as safetensors (channels-last weights are packed first: safetensors stores dense
    tensors only)."""
    from safetensors.torch import save_file

    save_file({name: value.contiguous() for name, value in student.state_dict().items()}, str(path))


def load_student(path: Path) -> StudentNet:
    """What `save_student` wrote, in eval mode (no pickled code is run)."""
    from safetensors.torch import load_file

    student = StudentNet()
    student.load_state_dict(load_file(str(path)), strict=True)
    return student.eval()


def evaluate(detector: Detector, student: StudentNet, data: Path) -> dict:
    """F1 (dense nets' naming rule) and AP on the 35 MiDeSeC fields, with A and with the student in A's place."""
    bundle, student_scorer = detector.bundle, window_scorer(student, detector.device, None)
    results = {}
    for label in ("A", "student"):
        counts, truths, points, scores, seconds = Counts(), [], [], [], 0.0
        for field in real_data.load_midesec_fields(data):
            rgb = real_data.read_image(field.path)
            spacing_mm = (field.spacing_mm, field.spacing_mm)
            map_b_of = detector._map_of("B", detector.networks[1], rgb, False)
            if label == "A":
                map_a_of = detector._map_of("A", detector.networks[0], rgb, False)
            else:

                def map_a_of(cells, rgb=rgb):
                    return probability_map(rgb, student_scorer, detector.device), None

            started = time.perf_counter()
            merged = cascade.cascade_points(bundle, spacing_mm, map_a_of, map_b_of, None)[2]
            seconds += time.perf_counter() - started
            merged = merged.subset(merged.probability >= bundle.candidate_floor)
            named = name_mitotic_figures(merged, bundle.threshold, rgb)
            xy_mm = spacing.mm_from_px(merged.xy_px, spacing_mm)
            truth_mm = spacing.mm_from_px(field.mitoses_xy_px, spacing_mm)
            counts = counts + detection_counts(truth_mm, xy_mm[named])
            truths.append(truth_mm)
            points.append(xy_mm)
            scores.append(merged.probability)
        ap = float(average_precision(truths, points, scores).ap)
        results[label] = {"f1": counts.f1 or 0.0, "ap": ap, "tp": counts.tp, "fp": counts.fp, "fn": counts.fn}
        results[label]["seconds"] = seconds
    return results


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("training.student", __doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the real data folder (../shared/data/real)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the student and its report")
    parser.add_argument("--steps", type=int, default=1800, help="Adam steps of 12 crops (2 CPU cores: about 40 min)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    detector = Detector(use_screen=False, verifier=False, atypical=False, precision="fp32")
    images = training_images(args.data)
    maps = teacher_maps(detector, images, args.out / "teacher_maps.npz")
    print(f"{len(images)} images, {sum(m.size for m in maps):,} teacher cells", flush=True)
    student = distil(images, maps, args.steps, detector.bundle.candidate_floor)
    save_student(student, args.out / "student.safetensors")
    report = {"steps": args.steps, "layers": STUDENT_LAYERS, "midesec": evaluate(detector, student, args.data)}
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report["midesec"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
