"""How much can scoring fewer windows save on tissue? The ceiling of cell-level gating, measured.

    python -m benchmarks.gating_ceiling [--data ../shared/data/real] [--region tissue|glass] [--json OUT]

Issue 32 asked for a cell-level screen that sends model A only to the 8 px cells where it can reach the candidate
floor, and for the cheaper of the two orders (A first or B first). Before training such a screen this benchmark
times what a *perfect* one would leave to do, on the same image and CPU, with the detector's own dense code:

* **both full maps**: A and B score every window (the exact path; 64-cell tiles);
* **A full, B in two steps**: today's cascade (`model.cascade`): B on the partner squares of A's candidates, then the
  peak margins of its possible partners (`model.cascade.peak_margin_cells`);
* **perfect cell-level screen for A**: A scores only the cells where its own map is above the floor (what a screen
  with no miss and no false pass would mark; the cells left out are below the floor, so A's candidates are exact),
  in fitted tiles of 16 cells;
* **B full, A in two steps** (the other order): A on the partner squares of B's cells above the floor, then the
  peak margins of its possible candidates.

Part maps cost more per window than full maps (each tile reads the 70 px receptive-field margin around its cells),
so the question is not how many windows are left but how many seconds. Every map is scored for real; the full maps
also give the masks the gated variants need (a screen's own cost is left out: this is a ceiling).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.process_speed import DEFAULT_SOURCE, cpu_model
from benchmarks.tissue_region import tissue_mosaic
from model import Detector, cascade
from model.candidates import local_maxima, min_distance_cells
from model.command_line import command_parser
from model.dense import covered_cells, probability_map
from model.spacing import DEFAULT_SPACING_MM, px_from_um
from training.data.real_data import read_image

GATED_TILE_CELLS = 16
"""Fitted part tiles of 16 cells (batched by 8): within noise of 12 and 24 for B's squares on the tissue mosaic."""


def timed(score: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    values = score()
    return values, time.perf_counter() - started


def measure(image_rgb: np.ndarray, detector: Detector) -> dict:
    """Seconds and shares of windows of each variant in the module docstring, on one image."""
    bundle, spacing_mm = detector.bundle, (DEFAULT_SPACING_MM, DEFAULT_SPACING_MM)
    floor = bundle.candidate_floor
    min_distance_px = px_from_um(bundle.candidate_min_distance_um, spacing_mm)
    md_cells = min_distance_cells(min_distance_px)
    radius_px = px_from_um(bundle.agreement_radius_um, spacing_mm)
    net_a, net_b = detector.networks

    def full(net) -> tuple[np.ndarray, float]:
        return timed(lambda: probability_map(image_rgb, detector.scorer(net), detector.device, detector.tile_cells))

    def part(net, cells: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
        """The map on `cells` in fitted tiles, its seconds and the cells those tiles computed."""
        values, seconds = timed(
            lambda: probability_map(
                image_rgb,
                detector.scorer(net),
                detector.device,
                GATED_TILE_CELLS,
                cells=cells,
                batch_tiles=8,
                fitted=True,
            )
        )
        return values, seconds, covered_cells(cells, GATED_TILE_CELLS, fitted=True)

    def two_steps(net, squares: np.ndarray, partners_of) -> tuple[float, float]:
        """The second model on `squares`, then the peak margins of the possible partners in `partners_of(values)`
        (as `model.cascade.cascade_points` does for B): seconds and share of windows."""
        values, seconds, computed = part(net, squares)
        margin = cascade.peak_margin_cells(values, computed, partners_of(values), md_cells, floor)
        share = float(computed.mean())
        if margin.any():
            _, seconds_more, computed_more = part(net, margin)
            seconds, share = seconds + seconds_more, share + float(computed_more.mean())
        return seconds, share

    map_a, full_a_s = full(net_a)
    map_b, full_b_s = full(net_b)
    cells_a = local_maxima(map_a, min_distance_px, floor).cells

    def b_partners(b_values: np.ndarray) -> np.ndarray:  # the squares of the A candidates B can confirm
        keep = cascade.b_reaches_floor(b_values, cells_a, radius_px, floor)
        return cascade.cells_for_model_b(cells_a[keep], map_a.shape, radius_px, 0)

    b_s, b_share = two_steps(net_b, cascade.cells_for_model_b(cells_a, map_a.shape, radius_px, 0), b_partners)
    _, perfect_a_s, perfect_a_covered = part(net_a, map_a > floor)
    perfect_a_share = float(perfect_a_covered.mean())
    a_squares = cascade.cells_near(map_b > floor, cascade.partner_cells(radius_px))
    a_second_s, a_second_share = two_steps(net_a, a_squares, lambda _: a_squares)
    return {
        "image_px": list(image_rgb.shape[:2]),
        "share_above_floor": {"A": float((map_a > floor).mean()), "B": float((map_b > floor).mean())},
        "variants": {
            "both full maps": {"A_s": full_a_s, "B_s": full_b_s, "A_share": 1.0, "B_share": 1.0},
            "A full, B in two steps": {
                "A_s": full_a_s,
                "B_s": b_s,
                "A_share": 1.0,
                "B_share": b_share,
            },
            "perfect cell-level screen for A, B in two steps": {
                "A_s": perfect_a_s,
                "B_s": b_s,
                "A_share": perfect_a_share,
                "B_share": b_share,
            },
            "B full, A in two steps": {"A_s": a_second_s, "B_s": full_b_s, "A_share": a_second_share, "B_share": 1.0},
        },
    }


def report(result: dict, cpu: str) -> str:
    rows = [
        f"CPU: {cpu}; image {result['image_px'][1]}x{result['image_px'][0]} px; cells above the floor: "
        f"A {result['share_above_floor']['A']:.1%}, B {result['share_above_floor']['B']:.1%}",
        "| variant | A: windows, s | B: windows, s | A + B | against both full maps |",
        "|---|---|---|---|---|",
    ]
    both = result["variants"]["both full maps"]
    baseline_s = both["A_s"] + both["B_s"]
    for name, v in result["variants"].items():
        total_s = v["A_s"] + v["B_s"]
        rows.append(
            f"| {name} | {v['A_share']:.0%}, {v['A_s']:.1f} | {v['B_share']:.0%}, {v['B_s']:.1f} | {total_s:.1f} s "
            f"| {baseline_s / total_s:.2f}x |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("benchmarks.gating_ceiling", __doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/real"), help="the real data folder")
    parser.add_argument("--region", choices=("tissue", "glass"), default="tissue", help="the benchmark image")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args(argv)
    image_rgb = tissue_mosaic(args.data) if args.region == "tissue" else read_image(DEFAULT_SOURCE)
    detector = Detector(use_screen=False, verifier=False, atypical=False)
    result = measure(np.ascontiguousarray(image_rgb), detector)
    cpu = cpu_model()
    print(report(result, cpu))
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu, **result}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
