"""Whole-slide counting speed per cm2 of tissue, this tree against an older revision, with the counts compared.

    python -m benchmarks.wsi_speed [--data ../shared/data/real] [--compare REV] [--json OUT]

The slide is the tissue region of `benchmarks.process_speed` (the 35 real MiDeSeC fields as one 7168x5120 image, 87%
tissue) written as a tiled TIFF at 0.25 um/px. `python -m wsi.count SLIDE --out DIR` runs in a subprocess for each
tree (the older one checked out with `git worktree`, as `process_speed --compare` does), one process, the CPU's
threads; each run's `summary.json` gives the detection seconds (worker time over the tiles), the tissue area and the
counts. Minutes per cm2 of tissue = detection minutes / tissue cm2. The counts must be equal: both trees' cascades
answer as the exact path does (`benchmarks.path_agreement`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.process_speed import cpu_model, run_measured, thread_env, worktree  # noqa: E402
from benchmarks.tissue_region import tissue_mosaic, write_midog_like_tiff  # noqa: E402
from model.command_line import command_parser  # noqa: E402

SUMMARY_KEYS = ("tissue_mm2", "detect_seconds", "mitotic_figures", "tiles")


def count_slide(repo: Path, slide: Path, out: Path, threads: int) -> dict:
    """`python -m wsi.count` of `repo` on `slide`: its summary's numbers, wall seconds and peak memory."""
    run = run_measured([sys.executable, "-m", "wsi.count", str(slide), "--out", str(out)], thread_env(threads), repo)
    if run.returncode != 0:
        raise SystemExit(f"wsi.count of {repo} failed with exit code {run.returncode}:\n{run.stderr_tail}")
    summary = json.loads((out / slide.stem / "summary.json").read_text())
    result = {key: summary.get(key) for key in SUMMARY_KEYS}
    result["minutes_per_cm2"] = summary["detect_seconds"] / 60 / (summary["tissue_mm2"] / 100)
    return {**result, "wall_s": run.wall_s, "peak_rss_gib": run.peak_rss_bytes / 1024**3}


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("benchmarks.wsi_speed", __doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/real", help="the real data folder")
    parser.add_argument("--compare", default=None, help="an older git revision to run on the same slide")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="threads of each run")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="wsi-speed-") as folder:
        slide = Path(folder) / "midesec_fields.tiff"
        write_midog_like_tiff(tissue_mosaic(args.data), slide)
        results["working tree"] = count_slide(REPO, slide, Path(folder) / "new", args.threads)
        if args.compare:
            with worktree(args.compare) as (old_repo, short):
                results[short] = count_slide(old_repo, slide, Path(folder) / "old", args.threads)
    print(f"CPU: {cpu_model()}; threads {args.threads}; slide: the 35 MiDeSeC fields, 7168x5120 px at 0.25 um/px")
    print("| code | tissue mm2 | detection s | min per cm2 of tissue | mitotic figures | wall s | peak RSS GiB |")
    print("|---|---|---|---|---|---|---|")
    for label, row in results.items():
        print(
            f"| {label} | {row['tissue_mm2']:.3f} | {row['detect_seconds']:.1f} | {row['minutes_per_cm2']:.1f} | "
            f"{row['mitotic_figures']} | {row['wall_s']:.1f} | {row['peak_rss_gib']:.2f} |"
        )
    if len(results) == 2:
        new, old = results.values()
        print(
            f"ratio old/new per cm2: {old['minutes_per_cm2'] / new['minutes_per_cm2']:.2f}x; counts equal: "
            f"{new['mitotic_figures'] == old['mitotic_figures']}"
        )
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_model(), "threads": args.threads, **results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
