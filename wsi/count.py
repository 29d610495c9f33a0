"""Whole-slide mitotic count: every mitotic figure, the densest hotspot and its mitotic score, per slide.

    python -m wsi.count SLIDE [SLIDE ...] --out DIR [--hotspot-mm2 2] [--workers N | --scheduler ADDRESS]

Per slide, in DIR/<slide stem>/: `mitoses.geojson` (QuPath: File > Import objects; level-0 pixel coordinates),
`summary.json` (counts, tissue area, density, the hotspot and its score), `heatmap.png`, `candidates.geojson` with
--candidates; in DIR: `summary.csv` (a row per slide) and `report.html`. Tiles are detected with the project's
detector (`model.Detector`, as `process.py`), only where there is tissue, and kept in DIR/<stem>/tiles/: an
interrupted run continues where it stopped when started again with the same settings. A slide that cannot be
counted is one `error:` line; the others go on, and the exit code is 1 at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from app.preflight import UsageError, check_device, check_output_folder
from model import spacing
from model.atomic_files import write_json_atomically
from model.bundle import BUNDLE_FILE, DEFAULT_BUNDLE_DIR, BundleError, read_bundle
from model.progress import progress_bar
from wsi import hotspot, report
from wsi.detect import DetectorSettings, TileResult, detect_tile
from wsi.slide import Slide, SlideError, open_slide
from wsi.tiles import CORE_PX, Tile, plan_tiles
from wsi.tissue import thumbnail_tissue, tissue_area_mm2

logger = logging.getLogger("wsi.count")
THUMBNAIL_PX = 2048


@dataclass(frozen=True)
class Settings:
    """Everything that changes a slide's tile results: a cache made with other settings is not reused."""

    bundle_sha256: str
    precision: str
    mpp_um: float | None
    core_px: int
    verifier: bool = True

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class SlidePlan:
    """A slide opened and planned: its tiles, tissue and where its results go."""

    path: Path
    folder: Path
    slide: Slide
    mpp_arg: float | None  # --mpp, which workers need to open the slide the same way
    thumbnail_rgb: np.ndarray
    px_per_thumbnail_px: float  # level-0 pixels per thumbnail pixel
    tissue: np.ndarray
    tissue_mm2: float
    tiles: list[Tile]

    def cached(self, tile: Tile) -> Path:
        return self.folder / "tiles" / f"{tile.key}.npz"


def plan_slide(path: Path, out_dir: Path, mpp_um: float | None, settings: Settings) -> SlidePlan:
    """Open the slide, find its tissue, plan its tiles, and prepare its folder (a cache with other settings goes)."""
    slide = open_slide(path, mpp_um)
    thumbnail_rgb, px_per_thumbnail_px = slide.thumbnail(THUMBNAIL_PX)
    um_per_thumbnail_px = px_per_thumbnail_px * float(np.mean(slide.mpp_um))
    tissue = thumbnail_tissue(thumbnail_rgb, um_per_thumbnail_px)
    level_um = float(np.mean(slide.level_spacing_mm)) * 1000
    tiles = plan_tiles(slide.level_size_px, level_um, tissue, settings.core_px)
    folder = out_dir / path.stem
    tiles_dir = folder / "tiles"
    stamp = tiles_dir / "settings.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("fingerprint") != settings.fingerprint():
        for old in tiles_dir.glob("*.npz"):
            old.unlink()
    tiles_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomically({"fingerprint": settings.fingerprint(), **asdict(settings)}, stamp)
    um2 = tissue_area_mm2(tissue, um_per_thumbnail_px)
    return SlidePlan(path, folder, slide, mpp_um, thumbnail_rgb, px_per_thumbnail_px, tissue, um2, tiles)


Runner = Callable[[list[tuple[SlidePlan, Tile]]], Iterable[tuple[SlidePlan, TileResult]]]


def local_runner(settings: DetectorSettings) -> Runner:
    """Tiles one after another in this process."""

    def run(jobs: list[tuple[SlidePlan, Tile]]) -> Iterable[tuple[SlidePlan, TileResult]]:
        for plan, tile in jobs:
            yield plan, detect_tile(str(plan.path), plan.mpp_arg, tile, settings)

    return run


def dask_runner(client, settings: DetectorSettings) -> Runner:
    """Tiles of every slide spread over a Dask cluster; results as they complete (the cache keeps them)."""

    def run(jobs: list[tuple[SlidePlan, Tile]]) -> Iterable[tuple[SlidePlan, TileResult]]:
        from distributed import as_completed

        futures = {
            client.submit(detect_tile, str(plan.path), plan.mpp_arg, tile, settings, pure=False): plan
            for plan, tile in jobs
        }
        for future in as_completed(futures):
            yield futures[future], future.result()

    return run


def detect_slides(plans: list[SlidePlan], runner: Runner) -> None:
    """Every tile not yet cached, through `runner`, cached as it completes (progress per slide)."""
    pending = [(plan, tile) for plan in plans for tile in plan.tiles if not plan.cached(tile).is_file()]
    bars = {plan.path: progress_bar(total=len(plan.tiles), stage=plan.path.name, unit="tile") for plan in plans}
    for plan in plans:
        bars[plan.path].update(len(plan.tiles) - sum(1 for p, _ in pending if p is plan))
    try:
        for plan, result in runner(pending):
            result.save(plan.folder / "tiles" / f"{result.key}.npz")
            bars[plan.path].update(1)
    finally:
        for bar in bars.values():
            bar.close()


def summarise(plan: SlidePlan, hotspot_mm2: float, candidates: bool) -> dict:
    """Merge a slide's tiles, find the hotspot and score, write the slide's outputs; returns its summary."""
    results = [TileResult.load(plan.cached(tile), tile.key) for tile in plan.tiles]
    xy_level_px = np.concatenate([r.xy_px for r in results]) if results else np.zeros((0, 2))
    probability = np.concatenate([r.probability for r in results]) if results else np.zeros(0)
    named = np.concatenate([r.is_mitosis for r in results]).astype(bool) if results else np.zeros(0, bool)
    slide = plan.slide
    xy_px = xy_level_px * slide.level_downsample  # level-0 pixels
    mpp_mm = np.asarray(slide.mpp_um) / 1000
    xy_mm = spacing.mm_from_px(xy_px, mpp_mm)

    def on_tissue(centres_mm: np.ndarray) -> np.ndarray:
        cols = np.clip(
            (centres_mm[:, 0] / mpp_mm[0] / plan.px_per_thumbnail_px).astype(int), 0, plan.tissue.shape[1] - 1
        )
        rows = np.clip(
            (centres_mm[:, 1] / mpp_mm[1] / plan.px_per_thumbnail_px).astype(int), 0, plan.tissue.shape[0] - 1
        )
        return plan.tissue[rows, cols]

    best = hotspot.densest_circle(xy_mm[named], hotspot_mm2, on_tissue)
    veterinary = hotspot.densest_circle(xy_mm[named], hotspot.VETERINARY_HOTSPOT_MM2, on_tissue)
    count = int(named.sum())
    summary = {
        "slide": plan.path.name,
        "mpp_um": list(slide.mpp_um),
        "level_read": slide.level,
        "tissue_mm2": round(plan.tissue_mm2, 4),
        "mitotic_figures": count,
        "density_per_mm2": round(count / plan.tissue_mm2, 4) if plan.tissue_mm2 > 0 else None,
        "tiles": len(plan.tiles),
        "detect_seconds": round(sum(r.seconds for r in results), 1),  # worker time, summed over the tiles
        "hotspot": None
        if best is None
        else {
            "center_px": [round(best.center_mm[0] / mpp_mm[0], 1), round(best.center_mm[1] / mpp_mm[1], 1)],
            "center_mm": [round(v, 5) for v in best.center_mm],
            "area_mm2": best.area_mm2,
            "count": best.count,
        },
        "mitotic_score": hotspot.nottingham_mitotic_score(best.count if best else 0, hotspot_mm2),
        "veterinary_2_37_mm2": None
        if veterinary is None
        else {"count": veterinary.count, "center_mm": [round(v, 5) for v in veterinary.center_mm]},
        "heatmap": f"{plan.path.stem}/heatmap.png",
    }
    # the hotspot's density over the tissue it can cover (a 2 mm2 circle on 0.5 mm2 of tissue holds 0.5 mm2)
    hotspot_density = 0.0 if best is None else best.count / min(best.area_mm2, max(plan.tissue_mm2, 1e-9))
    if best is not None and best.count >= 10 and hotspot_density > hotspot.MAX_ANNOTATED_DENSITY_PER_MM2:
        summary["warning"] = (
            f"{hotspot_density:.0f} mitotic figures per mm2 of tissue in the hotspot: denser than any region the "
            f"MIDOG datasets annotate ({hotspot.MAX_ANNOTATED_DENSITY_PER_MM2:g} per mm2); most are likely ordinary "
            "nuclei named by a detector outside its domain: check the overlay before using the count"
        )
        logger.warning("%s: %s", plan.path.name, summary["warning"])
    report.write_geojson(plan.folder / "mitoses.geojson", xy_px[named], probability[named])
    if candidates:
        report.write_geojson(plan.folder / "candidates.geojson", xy_px[~named], probability[~named], "Candidate")
    report.draw_heatmap(
        plan.folder / "heatmap.png",
        plan.thumbnail_rgb,
        plan.px_per_thumbnail_px,
        xy_px[named],
        None if best is None else tuple(summary["hotspot"]["center_px"]),
        None if best is None else best.radius_mm / float(mpp_mm.mean()),
        plan.tissue,
        legend=f"{count} mitotic figures, {summary['density_per_mm2'] or 0:.2f} per mm2 of tissue; hotspot "
        f"{best.count if best else 0} in {hotspot_mm2:g} mm2, mitotic score {summary['mitotic_score']}",
    )
    report.write_summary(plan.folder / "summary.json", summary)
    return summary


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, add_help=add_help, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "slides", nargs="+", type=Path, help="whole-slide images (SVS, NDPI, MRXS, SCN, tiled TIFF, ...)"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the results (one subfolder per slide)")
    parser.add_argument("--mpp", type=float, default=None, help="level-0 pixel size in um, for slides that lack it")
    parser.add_argument(
        "--hotspot-mm2", type=float, default=hotspot.DEFAULT_HOTSPOT_MM2, help="hotspot area in mm2 (default: 2)"
    )
    parser.add_argument(
        "--hpf",
        type=float,
        default=None,
        metavar="DIAMETER_MM",
        help="hotspot of 10 high-power fields of this field diameter instead of --hotspot-mm2",
    )
    parser.add_argument("--candidates", action="store_true", help="also write candidates.geojson (below threshold)")
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE_DIR, help="model bundle (default: shipped)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--no-verifier", action="store_true", help="skip the bundle's verifier (model/verifier.py)")
    parser.add_argument("--workers", type=int, default=0, help="run tiles on a local Dask cluster of N processes")
    parser.add_argument("--scheduler", default=None, help="run tiles on an existing Dask cluster (tcp://host:8786)")
    parser.add_argument("--tile-px", type=int, default=CORE_PX, help=argparse.SUPPRESS)  # tests: seams on small slides
    return parser


def check_arguments(args: argparse.Namespace) -> float:
    """Refuse what would fail late; returns the hotspot area in mm2."""
    if args.workers < 0 or (args.workers and args.scheduler):
        raise UsageError("--workers N (a local cluster) or --scheduler ADDRESS (an existing one), not both")
    if args.mpp is not None and not (math.isfinite(args.mpp) and args.mpp > 0):
        raise UsageError(f"--mpp {args.mpp}: a pixel size in um, e.g. 0.25 or 0.5")
    area_mm2 = hotspot.hpf_area_mm2(args.hpf) if args.hpf is not None else args.hotspot_mm2
    if not (math.isfinite(area_mm2) and 0 < area_mm2 <= 100):
        raise UsageError(f"hotspot area {area_mm2:g} mm2: give a positive area of at most 100 mm2")
    stems: dict[str, Path] = {}
    for path in args.slides:
        if path.stem.casefold() in stems:
            raise UsageError(f"{stems[path.stem.casefold()]} and {path} would share {args.out / path.stem}: rename one")
        stems[path.stem.casefold()] = path
    check_output_folder(args.out, "--out")
    check_device(args.device, args.precision)
    return area_mm2


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = get_args_parser().parse_intermixed_args(argv)  # slides may come after options too
    failures: dict[str, str] = {}
    try:
        area_mm2 = check_arguments(args)
        bundle_sha256 = hashlib.sha256((args.bundle / BUNDLE_FILE).read_bytes()).hexdigest()
        read_bundle(args.bundle)
        settings = Settings(bundle_sha256, args.precision, args.mpp, args.tile_px, not args.no_verifier)
        plans = []
        for path in args.slides:
            try:
                plan = plan_slide(path, args.out, args.mpp, settings)
            except SlideError as error:
                failures[path.name] = str(error)
                print(f"error: {path}: {error}", file=sys.stderr)
                continue
            plans.append(plan)
            logger.info(
                "%s: %.1f mm2 of tissue, %d tiles at %s",
                path.name,
                plan.tissue_mm2,
                len(plan.tiles),
                spacing.describe_um(plan.slide.level_spacing_mm),
            )
        # a local cluster shares this machine's cores between its workers (torch would give each worker all of them)
        threads = max(1, (os.cpu_count() or 1) // args.workers) if args.workers else 0
        detector_settings = DetectorSettings(
            str(args.bundle.absolute()), args.device, args.precision, threads, not args.no_verifier
        )
        if args.workers or args.scheduler:
            from distributed import Client, LocalCluster

            cluster = None
            if args.workers:
                cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=None)
            with Client(cluster or args.scheduler) as client:
                detect_slides(plans, dask_runner(client, detector_settings))
            if cluster is not None:
                cluster.close()
        else:
            detect_slides(plans, local_runner(detector_settings))
        summaries = []
        for plan in plans:
            summary = summarise(plan, area_mm2, args.candidates)
            summaries.append(summary)
            logger.info(
                "%s: %d mitotic figures, hotspot %s in %g mm2 (score %s)",
                plan.path.name,
                summary["mitotic_figures"],
                summary["hotspot"]["count"] if summary["hotspot"] else 0,
                area_mm2,
                summary["mitotic_score"],
            )
        summaries += [{"slide": name, "error": message} for name, message in failures.items()]
        report.write_summary_csv(args.out / "summary.csv", summaries)
        report.write_report_html(args.out / "report.html", summaries)
    except (BundleError, UsageError, SlideError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; the tiles done are kept: run the same command again to continue", file=sys.stderr)
        return 128 + signal.SIGINT
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
