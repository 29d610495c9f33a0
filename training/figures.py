"""Every figure of training and validation: training curves, augmentation examples (Table 1 policies), the
hard-negative search (paper Figure 2), the enrichment montage (Figure 3) and stain unmixing panels, the threshold
curves, the field overlays of a measured bundle, the verifier's precision-recall curves and the sheet of mined
mitoses.

Why one module: the recipe and the validation compute numbers; drawing them is a separate job, with one set of
conventions (matplotlib's object API on the Agg canvas, no pyplot state; PNGs without a version stamp where a
figure is regenerated and compared). Figures are regenerated from files that training writes (metrics CSVs, the HNM
search JSON, mined.json) and from the real data, so they stay reproducible from the command line::

    python -m training.figures augmentation --data ../shared/data/real --out docs/
    python -m training.figures curves --metrics runs/a/metrics.csv runs/b/metrics.csv --out curves.png
    python -m training.figures hnm --search hnm_search.json --out fig2.png
    python -m training.figures mined --mined runs/field-cv/fold_0/mined.json --data ../shared/data/real --out m.jpg
    python -m training.figures stain --image FIELD.jpg --out stain_unmixing.png
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle
from matplotlib.ticker import NullLocator

from model.bundle import POLICY_NAMES
from model.command_line import command_parser
from model.geometry import RECEPTIVE_FIELD_PX
from training.augment import POLICIES, Policy, augment_batch, centre_windows
from training.stain import check_rgb, macenko_stain_matrix, residual_candidates, residual_density, unmix

__all__ = [
    "AUGMENTATION_CELL_PX",
    "CURVES_SIZE_PX",
    "DPI",
    "HNM_SIZE_PX",
    "PrecisionRecallCurve",
    "PrecisionRecallPanel",
    "augmentation_grid_size_px",
    "describe_policy",
    "draw_field",
    "pick_example_patches",
    "plot_augmentation_grid",
    "plot_hnm_search",
    "plot_mined_positives",
    "plot_precision_recall",
    "plot_threshold_curves",
    "plot_training_curves",
    "write_montage",
    "write_unmixing_figure",
]

logger = logging.getLogger(__name__)

DPI: int = 100
"""Resolution of every figure; sizes below are in pixels at this resolution."""
CURVES_SIZE_PX: tuple[int, int] = (1200, 450)
"""(width, height) of the training-curves figure."""
HNM_SIZE_PX: tuple[int, int] = (800, 560)
"""(width, height) of the hard-negative-mining search figure (paper Figure 2)."""
AUGMENTATION_CELL_PX: int = 2 * RECEPTIVE_FIELD_PX + 8
"""One 78 px window shown at exactly 2x (nearest neighbour) plus an 8 px gap."""
_GRID_LEFT_PX = 28  # room for a rotated row label
_GRID_TOP_PX = 76  # title (two lines) and column headers
_GRID_BOTTOM_PX = 6
_COLOURS = {"hard": "tab:red", "random": "tab:blue"}
_OTHER_COLOURS = ["tab:green", "tab:purple", "tab:brown", "tab:olive"]


def _figure(width_px: int, height_px: int) -> Figure:
    """A figure of exactly width_px x height_px on an Agg canvas (half a pixel extra: Agg truncates the size)."""
    figure = Figure(figsize=((width_px + 0.5) / DPI, (height_px + 0.5) / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, out_png: Path) -> None:
    """Write the PNG without a version stamp, so regenerated figures only differ when their pixels do."""
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=DPI, metadata={"Software": None})


# ---------------------------------------------------------------- training curves


def _run_labels(paths: Sequence[Path]) -> list[str]:
    """File stems, or folder names when the stems collide (every run writes metrics.csv)."""
    stems = [path.stem for path in paths]
    if len(set(stems)) == len(stems):
        return stems
    names = [path.resolve().parent.name for path in paths]
    return names if len(set(names)) == len(names) else [str(path) for path in paths]


def plot_training_curves(metrics_csv: list[Path] | Path, out_png: Path, labels: list[str] | None = None) -> None:
    """Loss (train solid, val dashed) and validation AP vs iteration, one colour per run, best val loss starred."""
    paths = [Path(metrics_csv)] if isinstance(metrics_csv, (str, Path)) else [Path(path) for path in metrics_csv]
    if not paths:
        raise ValueError("no metrics CSV given")
    labels = list(labels) if labels is not None else _run_labels(paths)
    if len(labels) != len(paths):
        raise ValueError(f"{len(labels)} label(s) for {len(paths)} metrics file(s)")

    figure = _figure(*CURVES_SIZE_PX)
    loss_axes, ap_axes = figure.subplots(1, 2)
    for index, (path, label) in enumerate(zip(paths, labels, strict=True)):
        table = pd.read_csv(path)
        missing = {"iteration", "train_loss", "val_loss", "val_ap"} - set(table.columns)
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
        table = table.sort_values("iteration")
        colour = f"C{index % 10}"
        marker = "o" if len(table) < 30 else None  # single points or a short run stay visible
        loss_axes.plot(
            table.iteration, table.train_loss, color=colour, ls="-", marker=marker, ms=3, label=f"{label} train"
        )
        loss_axes.plot(
            table.iteration, table.val_loss, color=colour, ls="--", marker=marker, ms=3, label=f"{label} val"
        )
        ap_axes.plot(table.iteration, table.val_ap, color=colour, marker=marker, ms=3, label=label)
        valid = table.dropna(subset=["val_loss"])
        if len(valid):
            best = valid.loc[valid.val_loss.idxmin()]
            loss_axes.plot(best.iteration, best.val_loss, marker="*", ms=14, color=colour, mec="black", ls="none")
            ap_axes.plot(best.iteration, best.val_ap, marker="*", ms=14, color=colour, mec="black", ls="none")
            ap_axes.annotate(
                f"{best.val_ap:.3f}",
                (best.iteration, best.val_ap),
                textcoords="offset points",
                xytext=(6, 6),
                fontsize=8,
                color=colour,
            )
    loss_axes.set(xlabel="iteration", ylabel="loss", title="loss (solid: train, dashed: validation)")
    ap_axes.set(xlabel="iteration", ylabel="validation AP", title="validation AP (star: lowest validation loss)")
    for axes in (loss_axes, ap_axes):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.tight_layout()
    _save(figure, out_png)


# ---------------------------------------------------------------- augmentation examples


def _range(values: tuple[float, float], unit: str = "") -> str:
    """'-10..+20%' style text for a parameter range."""
    low, high = values
    if low == -high:
        return f"±{high:g}{unit}"
    return f"{low:g}..{high:g}{unit}"


def describe_policy(policy: Policy) -> str:
    """The transforms of a policy with their probabilities and ranges, as in the paper's Table 1."""
    parts = []
    if policy.transpose_p > 0:
        parts.append(f"transpose p={policy.transpose_p:g}")
    if policy.elastic_p > 0:
        parts.append(f"elastic p={policy.elastic_p:g} (σ={policy.elastic_amplitude_px:g} px)")
    if policy.shift_p > 0:
        parts.append(f"shift p={policy.shift_p:g} {_range((-policy.shift_px, policy.shift_px), ' px')}")
    if policy.zoom_p > 0:
        zoom = (policy.zoom_range[0] * 100, policy.zoom_range[1] * 100)
        parts.append(f"zoom p={policy.zoom_p:g} {_range(zoom, '%')}")
    if policy.hue_p > 0:
        parts.append(f"hue p={policy.hue_p:g} {_range(policy.hue_range_deg, '°')}")
    if policy.colour_shift_p > 0:
        parts.append(f"colour shift p={policy.colour_shift_p:g} {_range(policy.colour_shift_range)}")
    if policy.contrast_p > 0:
        parts.append(f"contrast p={policy.contrast_p:g} ×{_range(policy.contrast_range)}")
    if policy.gamma_p > 0:
        parts.append(f"gamma p={policy.gamma_p:g} {_range(policy.gamma_range)}")
    return ", ".join(parts) if parts else "no transforms"


def augmentation_grid_size_px(n_crops: int, n_variants: int) -> tuple[int, int]:
    """(width, height) of the augmentation grid, so callers and tests know it without drawing."""
    return (
        _GRID_LEFT_PX + (1 + n_variants) * AUGMENTATION_CELL_PX,
        _GRID_TOP_PX + n_crops * AUGMENTATION_CELL_PX + _GRID_BOTTOM_PX,
    )


def plot_augmentation_grid(
    crops: np.ndarray,
    policy_name: str,
    out_png: Path,
    n_variants: int = 6,
    seed: int = 0,
    *,
    row_labels: list[str] | None = None,
) -> None:
    """Rows = crops: the original centre 78 px window, then n_variants augmentations (seeded torch.Generator)."""
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[-1] != 3 or crops.shape[1] != crops.shape[2] or crops.dtype != np.uint8:
        raise ValueError(f"crops must be (N, S, S, 3) uint8, got {crops.shape} {crops.dtype}")
    if crops.shape[1] < RECEPTIVE_FIELD_PX:
        raise ValueError(f"crops must be at least {RECEPTIVE_FIELD_PX} px, got {crops.shape[1]}")
    if policy_name not in POLICIES:
        raise ValueError(f"unknown policy {policy_name!r}, expected one of {sorted(POLICIES)}")
    if n_variants < 1:
        raise ValueError("n_variants must be at least 1")
    count = crops.shape[0]
    if row_labels is not None and len(row_labels) != count:
        raise ValueError(f"{len(row_labels)} row label(s) for {count} crop(s)")

    source = torch.from_numpy(np.ascontiguousarray(crops))
    originals = centre_windows(source)  # (N, 3, 78, 78) in [0, 1]
    generator = torch.Generator().manual_seed(seed)
    augmented = augment_batch(source.repeat_interleave(n_variants, dim=0), POLICIES[policy_name], generator)
    augmented = augmented.view(count, n_variants, 3, RECEPTIVE_FIELD_PX, RECEPTIVE_FIELD_PX)

    width_px, height_px = augmentation_grid_size_px(count, n_variants)
    figure = _figure(width_px, height_px)
    image_px = 2 * RECEPTIVE_FIELD_PX
    gap_px = AUGMENTATION_CELL_PX - image_px
    for row in range(count):
        top_px = _GRID_TOP_PX + row * AUGMENTATION_CELL_PX + gap_px // 2
        for column in range(1 + n_variants):
            window = originals[row] if column == 0 else augmented[row, column - 1]
            left_px = _GRID_LEFT_PX + column * AUGMENTATION_CELL_PX + gap_px // 2
            axes = figure.add_axes(
                (left_px / width_px, 1 - (top_px + image_px) / height_px, image_px / width_px, image_px / height_px)
            )
            axes.imshow(window.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            axes.set_xticks([])
            axes.set_yticks([])
            for spine in axes.spines.values():
                spine.set_edgecolor("black" if column == 0 else "0.6")
                spine.set_linewidth(1.5 if column == 0 else 0.5)
            if row == 0:
                axes.set_title("original (centre)" if column == 0 else f"{policy_name} #{column}", fontsize=9, pad=3)
            if column == 0 and row_labels is not None:
                axes.set_ylabel(row_labels[row], fontsize=8, labelpad=3)
    figure.suptitle(
        f"Augmentation policy {policy_name} (78 px windows, seed {seed})\n{describe_policy(POLICIES[policy_name])}",
        fontsize=9,
        y=1 - 4 / height_px,
        va="top",
    )
    _save(figure, out_png)


def pick_example_patches(root: str | Path | None = None, count: int = 5, seed: int = 0) -> list:
    """A fixed set of real mitotic figures, one per (dataset, subclass) stratum in turn, so the grid spans sources."""
    from training.data.real_data import load_patches

    records = [record for record in load_patches(root, check_files=False) if record.label == 1]
    strata: dict[tuple[bool, str], list] = {}
    for record in sorted(records, key=lambda record: str(record.path)):
        strata.setdefault((record.subclass != "normal", record.dataset), []).append(record)
    order = sorted(strata)  # normal figures of every dataset first, then atypical ones
    rng = np.random.default_rng(seed)
    picked = []
    while len(picked) < count and any(strata[key] for key in order):
        for key in order:
            if len(picked) < count and strata[key]:
                picked.append(strata[key].pop(int(rng.integers(len(strata[key])))))
    return picked


# ---------------------------------------------------------------- hard-negative mining search (paper Figure 2)


def _mean_std(entry: dict) -> tuple[float, float, list[float]]:
    """AP mean, std over seeds (0 with one seed or none given) and the per-seed values of a search entry."""
    values = [float(value) for value in entry.get("ap", []) if value is not None]
    mean = entry.get("ap_mean")
    mean = float(mean) if mean is not None else (float(np.mean(values)) if values else float("nan"))
    std = entry.get("ap_std")
    std = float(std) if std is not None else (float(np.std(values)) if len(values) > 1 else 0.0)
    return mean, (0.0 if not np.isfinite(std) else std), values


def _percent(fraction: float) -> str:
    """Pixel fraction as a short percentage: 12%, 1.2%, 0.012%."""
    return f"{100 * fraction:.2g}%"


def plot_hnm_search(search_json: Path | dict, out_png: Path) -> None:
    """Validation AP vs hard-negative subset size K, hard vs random selection against all negatives (Figure 2)."""
    search = search_json if isinstance(search_json, dict) else json.loads(Path(search_json).read_text())
    points = search.get("points") or []
    if not points:
        raise ValueError("search has no points")
    metric = search.get("metric", "validation AP")

    figure = _figure(*HNM_SIZE_PX)
    axes = figure.subplots()
    selections = list(dict.fromkeys(point["selection"] for point in points))
    selections.sort(key=lambda name: (name not in _COLOURS, list(_COLOURS).index(name) if name in _COLOURS else 0))
    spread = 0.035 * (len(selections) - 1)  # offsets in log10(K): bars of one K side by side
    offsets = np.linspace(-spread, spread, len(selections)) if len(selections) > 1 else [0.0]
    other_colours = iter(_OTHER_COLOURS * 4)
    for selection, offset in zip(selections, offsets, strict=True):
        colour = _COLOURS.get(selection) or next(other_colours)
        chosen = sorted((point for point in points if point["selection"] == selection), key=lambda p: p["k"])
        ks = np.array([float(point["k"]) for point in chosen])
        stats = [_mean_std(point) for point in chosen]
        x = ks * 10.0**offset
        seeds = max(len(values) for _, _, values in stats)
        axes.errorbar(
            x,
            [mean for mean, _, _ in stats],
            yerr=[std for _, std, _ in stats],
            fmt="o-",
            color=colour,
            ms=6,
            lw=1,
            capsize=3,
            label=f"{selection} negatives" + (f" ({seeds} seed{'s' if seeds > 1 else ''})" if seeds else ""),
        )
        for xi, (_, _, values) in zip(x, stats, strict=True):
            if len(values) > 1:
                axes.plot([xi] * len(values), values, ".", color=colour, alpha=0.35, ms=4)

    everything = search.get("all_negatives")
    if everything:
        mean, std, _ = _mean_std(everything)
        total = search.get("n_training_negatives")
        label = f"all {total:,} negatives" if total else "all negatives"
        axes.axhline(mean, color="black", ls="--", lw=1.2, label=label)
        if std > 0:
            axes.axhspan(mean - std, mean + std, color="black", alpha=0.1, lw=0)
    k_selected = search.get("k_selected")
    if k_selected:
        axes.axvline(float(k_selected), color="0.3", ls=":", lw=1.5, label=f"selected K = {int(k_selected):,}")

    axes.set_xscale("log")
    axes.set(xlabel="hard-negative subset size K", ylabel=metric)
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8, loc="best")

    fractions: dict[float, list[float]] = {}
    for point in points:
        if point.get("pixel_fraction") is not None:
            fractions.setdefault(float(point["k"]), []).append(float(point["pixel_fraction"]))
    if fractions:  # top axis: share of the training pixels the K selected negatives cover
        top = axes.secondary_xaxis("top")
        ticks = sorted(fractions)
        top.set_xticks(ticks, [_percent(float(np.mean(fractions[k]))) for k in ticks], fontsize=8)
        top.xaxis.set_minor_locator(NullLocator())
        pixels = search.get("training_pixels")
        top.set_xlabel("share of training pixels" + (f" (of {pixels:.3g} px)" if pixels else ""), fontsize=9)
    figure.tight_layout()
    _save(figure, out_png)


# ---------------------------------------------------------------- enrichment (paper Figure 3) and stain unmixing


def write_montage(
    crops: np.ndarray,
    out_png: Path,
    columns: int = 8,
    title: str | None = None,
    captions: Sequence[str] | None = None,
) -> None:
    """Grid of uint8 RGB crops (N, h, w, 3) as a PNG, the paper's Figure 3; 0 crops give a 'no patches' figure."""
    crops = np.asarray(crops)
    count = 0 if crops.size == 0 else len(crops)
    if count and (crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8):
        raise ValueError(f"crops must be uint8 of shape (N, h, w, 3), got {crops.dtype} {crops.shape}")
    if captions is not None and len(captions) != count:
        raise ValueError(f"{len(captions)} captions for {count} crops")
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    if count == 0:
        figure = Figure(figsize=(4, 2))
        figure.text(0.5, 0.5, "no patches selected", ha="center", va="center", fontsize=14)
    else:
        columns = min(columns, count)
        rows = -(-count // columns)
        figure = Figure(figsize=(1.6 * columns, 1.6 * rows + (0.2 * rows if captions else 0)))
        axes = figure.subplots(rows, columns, squeeze=False)
        for index, ax in enumerate(axes.flat):
            ax.set_axis_off()
            if index < count:
                ax.imshow(crops[index])
                if captions:
                    ax.set_title(captions[index], fontsize=7)
        figure.tight_layout(pad=0.3)
    if title:
        figure.suptitle(title, fontsize=11)
        if count:
            figure.tight_layout(pad=0.3, rect=(0, 0, 1, 0.95))
    figure.savefig(out_png, dpi=100)


def write_unmixing_figure(
    rgb: np.ndarray, out_png: Path, stain_matrix: np.ndarray | None = None, max_circles: int = 10
) -> None:
    """RGB | H | E | residual density panels, top residual candidates circled: shows what the enrichment picks."""
    from training.data.real_data import tissue_mask

    rgb = check_rgb(rgb)
    if stain_matrix is None:
        stain_matrix = macenko_stain_matrix(rgb, tissue=tissue_mask(rgb))
    concentrations = unmix(rgb, stain_matrix)
    density = residual_density(rgb, stain_matrix)
    border = min(64, min(rgb.shape[:2]) // 8)
    candidates = residual_candidates(rgb, stain_matrix, max_candidates=max_circles, border_px=border)
    panels = [
        ("RGB", rgb, None),
        ("hematoxylin concentration", np.clip(concentrations[..., 0], 0, None), "Blues"),
        ("eosin concentration", np.clip(concentrations[..., 1], 0, None), "RdPu"),
        ("residual optical density", density, "magma"),
    ]
    figure = Figure(figsize=(20, 5.6))
    axes = figure.subplots(1, 4)
    vectors = "  ".join(
        f"{name} [{', '.join(f'{value:.2f}' for value in row)}]" for name, row in zip("HER", stain_matrix, strict=True)
    )
    for ax, (name, image, cmap) in zip(axes, panels, strict=True):
        if cmap is None:
            ax.imshow(image)
        else:
            shown = ax.imshow(image, cmap=cmap, vmin=0, vmax=float(np.percentile(image, 99.5)) or 1.0)
            figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
        if name.startswith(("RGB", "residual")):
            for rank, (row, col) in enumerate(candidates, 1):
                ax.add_patch(Circle((col, row), 30, fill=False, edgecolor="cyan", linewidth=1.5))
                ax.text(col + 32, row - 32, str(rank), color="cyan", fontsize=8, fontweight="bold")
        ax.set_title(name, fontsize=11)
        ax.set_axis_off()
    figure.suptitle(f"Macenko unmixing (OD unit vectors: {vectors}); circles: top residual maxima", fontsize=10)
    figure.tight_layout(rect=(0, 0, 1, 0.95))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=80)


# ---------------------------------------------------------------- threshold tuning


def plot_threshold_curves(result: dict, out_png: Path) -> None:
    """F1 against threshold for A, B and the ensemble, with the chosen thresholds."""
    figure = Figure(figsize=(6.5, 4))  # no pyplot: no global backend switch, no figure registry
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    for name, (thresholds, f1) in result["curves"].items():
        line = axis.plot(thresholds, f1, label=f"{name}: F1 {result['variants'][name]['f1']:.3f}")[0]
        axis.axvline(result["variants"][name]["threshold"], color=line.get_color(), linestyle="--", linewidth=0.8)
    if result["method"].startswith("expected"):
        axis.set_xscale("logit")  # the decision happens between 0.9 and 0.9999
    axis.set_xlabel("probability threshold")
    axis.set_ylabel("validation F1" + (" (expected)" if result["method"].startswith("expected") else ""))
    axis.set_ylim(0, 1)
    axis.legend(loc="lower left")
    axis.set_title(result["method"][:80], fontsize=8)
    figure.tight_layout()
    figure.savefig(out_png, dpi=100)


# ---------------------------------------------------------------- a bundle on the held-out fields


def draw_field(
    rgb: np.ndarray, named_xy: np.ndarray, mitoses_xy: np.ndarray, missed: np.ndarray, radius_px: float, path: Path
) -> None:
    """Green ring (matching radius): named "mitotic figure"; blue dot: annotated mitosis; red ring: missed."""
    from PIL import Image, ImageDraw

    picture = Image.fromarray(rgb)
    draw = ImageDraw.Draw(picture)
    for x, y in named_xy:
        draw.ellipse((x - radius_px, y - radius_px, x + radius_px, y + radius_px), outline=(0, 220, 0), width=3)
    for (x, y), is_missed in zip(mitoses_xy, missed, strict=True):
        draw.ellipse((x - 4, y - 4, x + 4, y + 4), fill=(0, 80, 255))
        if is_missed:
            draw.ellipse(
                (x - radius_px - 6, y - radius_px - 6, x + radius_px + 6, y + radius_px + 6),
                outline=(255, 0, 0),
                width=3,
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)


# ---------------------------------------------------------------- the verifier


@dataclass(frozen=True)
class PrecisionRecallCurve:
    """One curve of a precision-recall panel, labelled, with its matplotlib line style."""

    label: str
    recall: np.ndarray
    precision: np.ndarray
    style: str


@dataclass(frozen=True)
class PrecisionRecallPanel:
    """One panel of the verifier's figure: its curves and the operating point of the verifier's rule."""

    title: str
    curves: list[PrecisionRecallCurve]
    rule_recall: float
    rule_precision: float
    rule_f1: float


def plot_precision_recall(panels: Sequence[PrecisionRecallPanel], path: Path) -> None:
    """Precision-recall panels side by side (`training.verifier.precision_recall_panels`: out of fold, with and
    without the verifier), each with the verifier rule's point."""
    figure = Figure(figsize=(5.5 * len(panels), 4.6))  # object API on the Agg canvas: no pyplot state (test_layout)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for axis, panel in zip(axes, panels, strict=True):
        for curve in panel.curves:
            axis.plot(curve.recall, curve.precision, curve.style, label=curve.label)
        axis.plot(
            panel.rule_recall, panel.rule_precision, "o", color="k", label=f"verifier's rule, F1 {panel.rule_f1:.3f}"
        )
        axis.set(title=panel.title, xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
        axis.grid(alpha=0.3)
        axis.legend(loc="lower left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


# ---------------------------------------------------------------- atypical mitoses (MIDOG 2025 track 2)


def plot_atypical_validation(report: dict, out_png: Path) -> None:
    """ROC curves of every held-out part (`training.atypical`: each source left out, and the slide-grouped folds)
    with balanced accuracy and AUROC, and a confusion matrix for each."""
    parts = [*report["leave_one_source_out"], report["slide_grouped_folds"]]
    figure = _figure(380 * (len(parts) + 1), 380)
    axes = figure.subplots(1, len(parts) + 1, squeeze=False)[0]
    roc = axes[0]
    for part in parts:
        label = f"{part['held_out']}: BA {part['balanced_accuracy']:.3f}, AUROC {part['auroc']:.3f}"
        roc.plot(part["roc"]["fpr"], part["roc"]["tpr"], label=label)
    roc.plot([0, 1], [0, 1], ":", color="grey")
    roc.set(title="held out: ROC", xlabel="false positive rate (normal called atypical)", ylabel="true positive rate")
    roc.legend(loc="lower right", fontsize=6)
    for axis, part in zip(axes[1:], parts, strict=True):
        _confusion_panel(axis, np.asarray(part["confusion"]), part["held_out"])
    figure.tight_layout()
    _save(figure, out_png)


def _confusion_panel(axis, confusion: np.ndarray, title: str) -> None:
    """Counts, rows = truth (normal, atypical), columns = decision, shaded by the share of each true class."""
    shares = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, column), count in np.ndenumerate(confusion):
        axis.text(column, row, f"{count}\n{shares[row, column]:.0%}", ha="center", va="center", fontsize=8)
    axis.set_xticks([0, 1], ["normal", "atypical"], fontsize=7)
    axis.set_yticks([0, 1], ["normal", "atypical"], fontsize=7)
    axis.set(title=title, xlabel="decision", ylabel="truth")


# ---------------------------------------------------------------- the mined stage (Akram et al. 2018)


def plot_mined_positives(mined_json: Path, data_root: Path, out_image: Path, columns: int = 10) -> int:
    """A contact sheet of the mitoses the mined stage (Akram et al. 2018) found (`training.validation.field_cv` ->
    fold_<k>/mined.json), strongest first, each 24 um wide with its lowest probability over the 16 views: what would
    join training as positives. Returns how many were drawn."""
    from PIL import Image, ImageDraw

    from training.data import real_data

    mined = sorted(json.loads(Path(mined_json).read_text()), key=lambda m: -m["probability"])
    paths = {f.path.name: f.path for f in real_data.load_unlabeled_fields(data_root)}
    images: dict[str, np.ndarray] = {}
    side, cell = 96, 130
    rows = max(1, -(-len(mined) // columns))
    sheet = Image.new("RGB", (columns * cell, rows * cell), "white")
    for slot, m in enumerate(mined):
        name = m["image_name"]
        if name not in images:
            images[name] = np.pad(real_data.read_image(paths[name]), ((side, side), (side, side), (0, 0)), "reflect")
        top, left = m["row_px"] + side // 2, m["col_px"] + side // 2
        crop = Image.fromarray(images[name][top : top + side, left : left + side]).resize((cell - 2, cell - 2))
        ImageDraw.Draw(crop).text((3, 2), f"{m['probability']:.2f}", fill=(255, 255, 0))
        sheet.paste(crop, ((slot % columns) * cell, (slot // columns) * cell))
    out_image.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_image, quality=85)
    return len(mined)


# ---------------------------------------------------------------- command line


def plot_stain_unmixing(image: Path, out_png: Path, crop_px: int = 768) -> None:
    """The unmixing figure of one image, cropped to `crop_px` around its strongest residual maximum (0: the whole
    image); the stain matrix is always estimated on the whole image."""
    from training.data.real_data import read_image, tissue_mask

    rgb = read_image(image)
    stain_matrix = macenko_stain_matrix(rgb, tissue=tissue_mask(rgb))
    height, width = rgb.shape[:2]
    if 0 < crop_px < min(height, width):
        peaks = residual_candidates(rgb, stain_matrix, max_candidates=1)
        row, col = peaks[0] if len(peaks) else (height // 2, width // 2)
        top = int(np.clip(row - crop_px // 2, 0, height - crop_px))
        left = int(np.clip(col - crop_px // 2, 0, width - crop_px))
        rgb = rgb[top : top + crop_px, left : left + crop_px]
    write_unmixing_figure(rgb, out_png, stain_matrix=stain_matrix)


DESCRIPTION = (
    "Report figures: augmentation examples, training curves, hard-negative-mining search (paper "
    "Figure 2), mined mitoses, stain unmixing."
)
"""What `--help` says first."""


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = command_parser("training.figures", DESCRIPTION, add_help)
    commands = parser.add_subparsers(dest="command", required=True)
    augmentation = commands.add_parser("augmentation", help="augmentation_policy_{A,B}.png from real mitoses")
    augmentation.add_argument(
        "--data",
        type=Path,
        default=None,
        help="real data folder (default: ../shared/data/real relative to the repository)",
    )
    augmentation.add_argument("--out", type=Path, required=True, help="output folder")
    augmentation.add_argument("--policies", nargs="+", default=list(POLICY_NAMES), choices=sorted(POLICIES))
    augmentation.add_argument("--patches", type=int, default=5, help="number of real patches (rows, default: 5)")
    augmentation.add_argument("--variants", type=int, default=6, help="augmented versions per patch (default: 6)")
    augmentation.add_argument("--seed", type=int, default=0, help="augmentation seed (default: 0)")
    curves = commands.add_parser("curves", help="training curves from metrics CSVs")
    curves.add_argument("--metrics", type=Path, nargs="+", required=True, help="metrics CSV(s), one per run")
    curves.add_argument("--labels", nargs="+", default=None, help="legend labels (default: from the file names)")
    curves.add_argument("--out", type=Path, required=True, help="output PNG")
    mined = commands.add_parser(
        "mined", help="contact sheet of the mitoses mined from unlabeled images (Akram et al. 2018)"
    )
    mined.add_argument(
        "--mined", type=Path, required=True, help="fold_<k>/mined.json of a training.validation.field_cv run"
    )
    mined.add_argument("--data", type=Path, required=True, help="the real offline folder")
    mined.add_argument("--out", type=Path, required=True, help="output picture (.jpg or .png)")
    hnm = commands.add_parser("hnm", help="hard-negative-mining search figure (paper Figure 2)")
    hnm.add_argument("--search", type=Path, required=True, help="search results JSON")
    hnm.add_argument("--out", type=Path, required=True, help="output PNG")
    unmixing = commands.add_parser("stain", help="Macenko H / E / residual panels of one image")
    unmixing.add_argument("--image", type=Path, required=True, help="RGB image (JPEG / PNG / WebP / TIFF)")
    unmixing.add_argument("--out", type=Path, required=True, help="output PNG")
    unmixing.add_argument(
        "--crop",
        type=int,
        default=768,
        help="square crop size in px around the strongest residual "
        "maximum (0: whole image); the stain matrix is always estimated on the whole image",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "augmentation":
        from training.data.real_data import read_patch

        records = pick_example_patches(args.data, args.patches)
        crops = np.stack([read_patch(record) for record in records])
        labels = [f"{record.dataset} {record.subclass}" for record in records]
        for record in records:
            logger.info("patch %s (%s, slide %s)", record.path.name, record.stratum, record.slide)
        for policy in args.policies:
            out_png = args.out / f"augmentation_policy_{policy}.png"
            plot_augmentation_grid(crops, policy, out_png, args.variants, args.seed, row_labels=labels)
            logger.info("wrote %s", out_png)
    elif args.command == "curves":
        plot_training_curves(args.metrics, args.out, args.labels)
        logger.info("wrote %s", args.out)
    elif args.command == "mined":
        print(f"{plot_mined_positives(args.mined, args.data, args.out)} mined mitoses -> {args.out}")
    elif args.command == "hnm":
        plot_hnm_search(args.search, args.out)
        logger.info("wrote %s", args.out)
    elif args.command == "stain":
        plot_stain_unmixing(args.image, args.out, args.crop)
        logger.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
