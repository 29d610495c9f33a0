"""Whole-slide mitotic count: every mitotic figure, the densest hotspot and its mitotic score, per slide.

    python -m wsi.count SLIDE [SLIDE ...] --out DIR [--hotspot-mm2 2] [--workers N | --scheduler ADDRESS]

Per slide, in DIR/<slide stem>/: `mitoses.geojson` (QuPath: File > Import objects; level-0 pixel coordinates),
`summary.json` (counts, tissue area, density, the hotspot and its score, the atypical figures and their share where
the bundle has the atypical classifier), `heatmap.png`, `candidates.geojson` with --candidates; in DIR:
`summary.csv` (a row per slide) and `report.html`. Tiles are detected with the project's detector
(`model.Detector`, as `process.py`), only where there is tissue, and kept in DIR/<stem>/tiles/: an
interrupted run continues where it stopped when started again with the same settings (a damaged cache entry is
detected again). A slide that cannot be counted (not a slide, no usable pixel size, a tile OpenSlide cannot read,
results that cannot be written) is one `error:` line and a row with its error; the others go on, and the exit code
is 1 at the end (0 when every slide was counted; 130 after Ctrl-C, the tiles done kept). A count denser than any
annotated region is flagged and its mitotic score withheld.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
import os
import signal
import sys
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from app.preflight import UsageError, check_device, check_output_folder
from model import spacing
from model.atomic_files import write_json_atomically
from model.bundle import BUNDLE_FILE, DEFAULT_BUNDLE_DIR, BundleError, read_bundle
from model.command_line import command_parser
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
    atypical_sha256: str | None = None  # the bundle's atypical classifier; None: it has none (no P(atypical) cached)

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
    atypical: bool = False  # whether its tiles carry P(atypical) (the bundle has the classifier)

    def cached(self, tile: Tile) -> Path:
        return self.folder / "tiles" / f"{tile.key}.npz"


class OutputError(Exception):
    """A result could not be written (a full disk, a folder made read-only); the message is one line."""


def write_or_explain(path: Path, write: Callable[[Path], None]) -> None:
    """`write(path)`, its OSError as an OutputError naming the file (the writers are atomic: an older file stays)."""
    try:
        write(path)
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from None


def _cache_fingerprint(stamp: Path) -> str | None:
    """The fingerprint a tile cache was made with; None when its `settings.json` is missing or damaged."""
    try:
        fingerprint = json.loads(stamp.read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):  # missing, truncated, not JSON, not an object
        return None
    return fingerprint if isinstance(fingerprint, str) else None


def prepare_cache(tiles_dir: Path, settings: Settings, name: str) -> None:
    """Keep a slide's cached tiles only when they were made with `settings`. Tiles made with other settings, or
    whose `settings.json` is damaged or missing (nothing says how they were made), are detected again; a damaged
    `settings.json` is written again, with one log line."""
    stamp = tiles_dir / "settings.json"
    old = sorted(tiles_dir.glob("*.npz"))
    found = _cache_fingerprint(stamp)
    if found is None and (old or stamp.exists()):
        logger.warning(
            "%s: %s is damaged or missing: redone, and its %d cached tiles detected again", name, stamp, len(old)
        )
    elif found is not None and found != settings.fingerprint() and old:
        logger.info("%s: the tile cache was made with other settings: its %d tiles are detected again", name, len(old))
    if found != settings.fingerprint():
        for path in old:
            path.unlink()
    tiles_dir.mkdir(parents=True, exist_ok=True)
    stamp_data = {"fingerprint": settings.fingerprint(), **asdict(settings)}
    write_or_explain(stamp, lambda path: write_json_atomically(stamp_data, path))


def plan_slide(path: Path, out_dir: Path, mpp_um: float | None, settings: Settings) -> SlidePlan:
    """Open the slide, find its tissue, plan its tiles, and prepare its folder (`prepare_cache`)."""
    slide = open_slide(path, mpp_um)
    thumbnail_rgb, px_per_thumbnail_px = slide.thumbnail(THUMBNAIL_PX)
    um_per_thumbnail_px = px_per_thumbnail_px * float(np.mean(slide.mpp_um))
    tissue = thumbnail_tissue(thumbnail_rgb, um_per_thumbnail_px)
    level_um = float(np.mean(slide.level_spacing_mm)) * 1000
    tiles = plan_tiles(slide.level_size_px, level_um, tissue, settings.core_px)
    folder = out_dir / path.stem
    prepare_cache(folder / "tiles", settings, path.name)
    um2 = tissue_area_mm2(tissue, um_per_thumbnail_px)
    atypical = settings.atypical_sha256 is not None
    return SlidePlan(path, folder, slide, mpp_um, thumbnail_rgb, px_per_thumbnail_px, tissue, um2, tiles, atypical)


def is_cached(plan: SlidePlan, tile: Tile) -> bool:
    """Whether the tile's result is in the cache and reads back whole; a damaged entry (empty, truncated, not an
    .npz of the right arrays, with P(atypical) where the plan has none or without it where the plan has it) is
    removed with one log line, so that the tile is detected again."""
    path = plan.cached(tile)
    if not path.is_file():
        return False
    try:
        if (TileResult.load(path, tile.key).atypical_probability is not None) != plan.atypical:
            raise ValueError("P(atypical) " + ("missing" if plan.atypical else "without a classifier"))
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        logger.warning("%s: cached tile %s is damaged (%s): detecting it again", plan.path.name, path, error)
        path.unlink(missing_ok=True)
        return False
    return True


Outcome = TileResult | SlideError
"""A tile's result, or why it could not be read."""
Runner = Callable[[list[tuple[SlidePlan, Tile]]], Iterable[tuple[SlidePlan, Tile, Outcome]]]


def local_runner(settings: DetectorSettings) -> Runner:
    """Tiles one after another in this process; after a tile that cannot be read, the rest of its slide is
    skipped (the slide has failed: its tiles done so far stay cached)."""

    def run(jobs: list[tuple[SlidePlan, Tile]]) -> Iterable[tuple[SlidePlan, Tile, Outcome]]:
        failed: set[Path] = set()
        for plan, tile in jobs:
            if plan.path in failed:
                continue
            try:
                yield plan, tile, detect_tile(str(plan.path), plan.mpp_arg, tile, settings)
            except SlideError as error:
                failed.add(plan.path)
                yield plan, tile, error

    return run


def dask_runner(client, settings: DetectorSettings) -> Runner:
    """Tiles of every slide spread over a Dask cluster; results as they complete (the cache keeps them)."""

    def run(jobs: list[tuple[SlidePlan, Tile]]) -> Iterable[tuple[SlidePlan, Tile, Outcome]]:
        from distributed import as_completed

        futures = {
            client.submit(detect_tile, str(plan.path), plan.mpp_arg, tile, settings, pure=False): (plan, tile)
            for plan, tile in jobs
        }
        for future in as_completed(futures):
            plan, tile = futures[future]
            try:
                yield plan, tile, future.result()
            except SlideError as error:
                yield plan, tile, error

    return run


def detect_slides(plans: list[SlidePlan], runner: Runner) -> dict[Path, str]:
    """Every tile not yet cached, through `runner`, cached as it completes (progress per slide). Returns the slides
    with a tile that could not be read, and why (the first such tile): they cannot be counted."""
    pending = [(plan, tile) for plan in plans for tile in plan.tiles if not is_cached(plan, tile)]
    bars = {plan.path: progress_bar(total=len(plan.tiles), stage=plan.path.name, unit="tile") for plan in plans}
    for plan in plans:
        bars[plan.path].update(len(plan.tiles) - sum(1 for p, _ in pending if p is plan))
    failed: dict[Path, str] = {}
    try:
        for plan, tile, outcome in runner(pending):
            if isinstance(outcome, SlideError):
                failed.setdefault(plan.path, f"tile {tile.key}: {outcome} (the tiles read are kept)")
                continue
            write_or_explain(plan.cached(tile), outcome.save)  # a full disk here stops the run: one line
            bars[plan.path].update(1)
    finally:
        for bar in bars.values():
            bar.close()
    return failed


@dataclass
class SlidePoints:
    """A slide's merged tile results: level-0 pixels and mm, probability, and which are named mitotic figures."""

    xy_px: np.ndarray
    xy_mm: np.ndarray
    probability: np.ndarray
    named: np.ndarray
    detect_seconds: float
    atypical_probability: np.ndarray | None = None  # P(atypical) of the named figures (NaN elsewhere); None: unknown
    is_atypical: np.ndarray | None = None  # named figures the classifier calls atypical; None: unknown


def merge_tiles(plan: SlidePlan) -> SlidePoints:
    """Every cached tile of the slide, merged into level-0 coordinates (P(atypical) where the plan has it)."""
    results = [TileResult.load(plan.cached(tile), tile.key) for tile in plan.tiles]

    def joined(field: str, empty: np.ndarray) -> np.ndarray:
        return np.concatenate([getattr(r, field) for r in results]) if results else empty

    named = joined("is_mitosis", np.zeros(0, bool)).astype(bool)
    xy_px = joined("xy_px", np.zeros((0, 2))) * plan.slide.level_downsample
    xy_mm = spacing.mm_from_px(xy_px, np.asarray(plan.slide.mpp_um) / 1000)
    points = SlidePoints(xy_px, xy_mm, joined("probability", np.zeros(0)), named, sum(r.seconds for r in results))
    if plan.atypical:
        points.atypical_probability = joined("atypical_probability", np.zeros(0))
        points.is_atypical = joined("is_atypical", np.zeros(0, bool)).astype(bool)
    return points


def tissue_test(plan: SlidePlan) -> Callable[[np.ndarray], np.ndarray]:
    """Which centres (N, 2 in mm) lie on the slide's tissue mask: the hotspot is centred on tissue."""
    mpp_mm = np.asarray(plan.slide.mpp_um) / 1000
    height, width = plan.tissue.shape

    def on_tissue(centres_mm: np.ndarray) -> np.ndarray:
        cols = np.clip((centres_mm[:, 0] / mpp_mm[0] / plan.px_per_thumbnail_px).astype(int), 0, width - 1)
        rows = np.clip((centres_mm[:, 1] / mpp_mm[1] / plan.px_per_thumbnail_px).astype(int), 0, height - 1)
        return plan.tissue[rows, cols]

    return on_tissue


NO_ATYPICAL_CLASSIFIER = (
    'the bundle has no atypical classifier (no "atypical" entry in its bundle.json): which figures are atypical is '
    "unknown, not none"
)
"""Why a slide's atypical counts and shares are null."""


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def atypical_counts(points: SlidePoints, best: hotspot.Hotspot | None) -> tuple[dict, dict]:
    """The summary's atypical keys for the slide and for its hotspot (the named figures inside the hotspot's
    circle): `atypical_figures` and `atypical_share` (atypical / named; null without named figures). Without the
    bundle's classifier both are null and the slide's `atypical_unavailable` says why: a 0 would read as "no
    atypical mitoses" in a report."""
    if points.is_atypical is None:
        unknown = {"atypical_figures": None, "atypical_share": None}
        return unknown | {"atypical_unavailable": NO_ATYPICAL_CLASSIFIER}, unknown if best is not None else {}
    atypical = points.is_atypical[points.named]
    count = int(atypical.sum())
    slide = {"atypical_figures": count, "atypical_share": _share(count, len(atypical))}
    if best is None:
        return slide, {}
    inside = int(atypical[best.holds(points.xy_mm[points.named])].sum())
    return slide, {"atypical_figures": inside, "atypical_share": _share(inside, best.count)}


def slide_summary(plan: SlidePlan, points: SlidePoints, hotspot_mm2: float) -> tuple[dict, hotspot.Hotspot | None]:
    """The slide's summary (`report.write_summary_csv` lists its keys) and its hotspot, before `judge`."""
    on_tissue = tissue_test(plan)
    best = hotspot.densest_circle(points.xy_mm[points.named], hotspot_mm2, on_tissue)
    veterinary = hotspot.densest_circle(points.xy_mm[points.named], hotspot.VETERINARY_HOTSPOT_MM2, on_tissue)
    mpp_mm = np.asarray(plan.slide.mpp_um) / 1000
    count = int(points.named.sum())
    atypical, hotspot_atypical = atypical_counts(points, best)
    summary = {
        "slide": plan.path.name,
        "mpp_um": list(plan.slide.mpp_um),
        "level_read": plan.slide.level,
        "tissue_mm2": round(plan.tissue_mm2, 4),
        "mitotic_figures": count,
        "density_per_mm2": round(count / plan.tissue_mm2, 4) if plan.tissue_mm2 > 0 else None,
        **atypical,
        "tiles": len(plan.tiles),
        "detect_seconds": round(points.detect_seconds, 1),  # worker time, summed over the tiles
        "hotspot": None
        if best is None
        else {
            "center_px": [round(best.center_mm[0] / mpp_mm[0], 1), round(best.center_mm[1] / mpp_mm[1], 1)],
            "center_mm": [round(v, 5) for v in best.center_mm],
            "area_mm2": best.area_mm2,
            "count": best.count,
            **hotspot_atypical,
        },
        "mitotic_score": hotspot.nottingham_mitotic_score(best.count if best else 0, hotspot_mm2),
        "veterinary_2_37_mm2": None
        if veterinary is None
        else {"count": veterinary.count, "center_mm": [round(v, 5) for v in veterinary.center_mm]},
        "heatmap": f"{plan.path.stem}/heatmap.png",
    }
    return summary, best


def judge(summary: dict, best: hotspot.Hotspot | None, hotspot_mm2: float, tissue_mm2: float) -> None:
    """Add what a reader must know before using the numbers. A hotspot denser than any annotated region is a
    `warning`, and its `mitotic_score` is withheld (null, with `mitotic_score_withheld` saying why): a grade from
    ordinary nuclei named as mitoses would be copied into a report. A hotspot larger than all the tissue is a
    `note`: its count is the whole slide's, and the score compares it with an area the slide does not have."""
    name = summary["slide"]
    # the hotspot's density over the tissue it can cover (a 2 mm2 circle on 0.5 mm2 of tissue holds 0.5 mm2)
    density = 0.0 if best is None else best.count / min(best.area_mm2, max(tissue_mm2, 1e-9))
    if best is not None and best.count >= 10 and density > hotspot.MAX_ANNOTATED_DENSITY_PER_MM2:
        summary["warning"] = (
            f"{density:.0f} mitotic figures per mm2 of tissue in the hotspot: denser than any region the "
            f"MIDOG datasets annotate ({hotspot.MAX_ANNOTATED_DENSITY_PER_MM2:g} per mm2); most are likely ordinary "
            "nuclei named by a detector outside its domain: check the overlay before using the count"
        )
        summary["mitotic_score"] = None
        summary["mitotic_score_withheld"] = (
            f"withheld: the hotspot ({density:.0f} per mm2) is denser than any annotated region, see the warning"
        )
        logger.warning("%s: %s; mitotic score withheld", name, summary["warning"])
    if hotspot_mm2 > tissue_mm2:
        summary["note"] = (
            f"the {hotspot_mm2:g} mm2 hotspot is larger than the slide's {tissue_mm2:.2f} mm2 of tissue: its count is "
            f"the whole tissue's, and the mitotic score, for {hotspot_mm2:g} mm2, is likely too low"
        )
        logger.info("%s: note: %s", name, summary["note"])


def heatmap_legend(summary: dict, hotspot_mm2: float) -> str:
    """The heatmap's title: the counts and the score, or the warning when the score is withheld."""
    hotspot_count = summary["hotspot"]["count"] if summary["hotspot"] else 0
    score = summary["mitotic_score"] if summary["mitotic_score"] is not None else "withheld"
    atypical = summary.get("atypical_figures")
    legend = (
        f"{summary['mitotic_figures']} mitotic figures"
        + ("" if atypical is None else f" ({atypical} atypical)")
        + f", {summary['density_per_mm2'] or 0:.2f} per mm2 of tissue; "
        f"hotspot {hotspot_count} in {hotspot_mm2:g} mm2, mitotic score {score}"
    )
    return legend + (f"\nWARNING: {summary['warning']}" if summary.get("warning") else "")


def write_slide_outputs(
    plan: SlidePlan,
    points: SlidePoints,
    summary: dict,
    best: hotspot.Hotspot | None,
    hotspot_mm2: float,
    candidates: bool,
) -> None:
    """The slide's files, the counts first (`mitoses.geojson`, `summary.json`), the picture last: a failed write
    (a full disk) raises OutputError and leaves what was written before it, whole."""
    named = points.named
    xy_px, probability = points.xy_px, points.probability
    atypical = {}
    if points.is_atypical is not None:  # each figure "Mitotic figure (atypical)" or "Mitotic figure", with its P
        atypical = {"atypical_probability": points.atypical_probability, "is_atypical": points.is_atypical}
        atypical = {key: values[named] for key, values in atypical.items()}
    write_or_explain(
        plan.folder / "mitoses.geojson",
        lambda p: report.write_geojson(p, xy_px[named], probability[named], **atypical),
    )
    if candidates:
        write_or_explain(
            plan.folder / "candidates.geojson",
            lambda p: report.write_geojson(p, xy_px[~named], probability[~named], "Candidate"),
        )
    write_or_explain(plan.folder / "summary.json", lambda p: report.write_summary(p, summary))
    um_per_px = float(np.mean(plan.slide.mpp_um))
    write_or_explain(
        plan.folder / "heatmap.png",
        lambda p: report.draw_heatmap(
            p,
            plan.thumbnail_rgb,
            plan.px_per_thumbnail_px,
            xy_px[named],
            None if best is None else tuple(summary["hotspot"]["center_px"]),
            None if best is None else best.radius_mm * 1000 / um_per_px,
            plan.tissue,
            legend=heatmap_legend(summary, hotspot_mm2),
        ),
    )


def summarise(plan: SlidePlan, hotspot_mm2: float, candidates: bool) -> dict:
    """Merge a slide's tiles, find the hotspot and score, write the slide's outputs; returns its summary. A write
    that fails (OSError) adds the summary's `error` and leaves the files written before it."""
    points = merge_tiles(plan)
    summary, best = slide_summary(plan, points, hotspot_mm2)
    judge(summary, best, hotspot_mm2, plan.tissue_mm2)
    try:
        write_slide_outputs(plan, points, summary, best, hotspot_mm2, candidates)
    except OutputError as error:
        summary["error"] = str(error)
    return summary


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """The command line of `python -m wsi.count` (its module docstring is the description)."""
    parser = command_parser("wsi.count", __doc__, add_help, argparse.RawTextHelpFormatter)
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
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="autocast precision, as process.py's (default: auto = fp16 on CUDA, bf16 on CPUs that support it)",
    )
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


def plan_slides(args: argparse.Namespace, settings: Settings, failures: dict[Path, str]) -> list[SlidePlan]:
    """A plan per slide that opens; a slide that does not is one `error:` line and an entry in `failures`."""
    plans = []
    for path in args.slides:
        try:
            plan = plan_slide(path, args.out, args.mpp, settings)
        except SlideError as error:
            failures[path] = str(error)
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
    return plans


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while the block runs, in this process and in the processes it starts (an ignored signal stays
    ignored across exec, and Python then installs no KeyboardInterrupt handler). A local cluster's workers are
    started so: Ctrl-C reaches the whole process group, and only this process should answer it (one line, exit
    130), not every worker with a traceback. Outside the main thread, where signals cannot be set, nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def detect_on_dask(args: argparse.Namespace, plans: list[SlidePlan], settings: DetectorSettings) -> dict[Path, str]:
    """`detect_slides` on a local cluster of `--workers` processes, or on the cluster at `--scheduler`."""
    from distributed import Client, LocalCluster

    with contextlib.ExitStack() as stack:
        distributed_log = logging.getLogger("distributed")  # its INFO lines would drown the command's own
        stack.callback(distributed_log.setLevel, distributed_log.level)
        distributed_log.setLevel(logging.WARNING)
        address = args.scheduler
        if args.workers:
            with sigint_ignored():  # workers log errors only: on Ctrl-C, not a warning per cancelled tile
                address = LocalCluster(
                    n_workers=args.workers, threads_per_worker=1, dashboard_address=None, silence_logs=logging.ERROR
                )
            stack.enter_context(address)
        client = stack.enter_context(Client(address))
        return detect_slides(plans, dask_runner(client, settings))


def detect(args: argparse.Namespace, plans: list[SlidePlan]) -> dict[Path, str]:
    """Every slide's tiles, here or on Dask; returns the slides with a tile that could not be read."""
    # a local cluster shares this machine's cores between its workers (torch would give each worker all of them)
    threads = max(1, (os.cpu_count() or 1) // args.workers) if args.workers else 0
    settings = DetectorSettings(str(args.bundle.absolute()), args.device, args.precision, threads, not args.no_verifier)
    if args.workers or args.scheduler:
        return detect_on_dask(args, plans, settings)
    return detect_slides(plans, local_runner(settings))


def count_slides(plans: list[SlidePlan], area_mm2: float, candidates: bool, failures: dict[Path, str]) -> dict:
    """Each counted slide's summary and outputs, by path; a slide whose outputs cannot be written is one `error:`
    line and an entry in `failures` (its summary keeps its counts and the error)."""
    summaries = {}
    for plan in plans:
        summary = summaries[plan.path] = summarise(plan, area_mm2, candidates)
        if summary.get("error"):
            failures[plan.path] = summary["error"]
            print(f"error: {plan.path}: {summary['error']}", file=sys.stderr)
            continue
        score = summary["mitotic_score"]
        logger.info(
            "%s: %d mitotic figures, hotspot %s in %g mm2 (score %s)",
            plan.path.name,
            summary["mitotic_figures"],
            summary["hotspot"]["count"] if summary["hotspot"] else 0,
            area_mm2,
            "withheld" if score is None else score,
        )
    return summaries


def run(args: argparse.Namespace) -> int:
    """The whole command, after parsing: 0 when every slide was counted, 1 when any failed (each one line)."""
    area_mm2 = check_arguments(args)
    bundle = read_bundle(args.bundle)  # a missing or damaged bundle is one line (BundleError) before it is hashed
    bundle_sha256 = hashlib.sha256((args.bundle / BUNDLE_FILE).read_bytes()).hexdigest()
    atypical_sha256 = bundle.atypical.sha256 if bundle.atypical is not None else None
    settings = Settings(bundle_sha256, args.precision, args.mpp, args.tile_px, not args.no_verifier, atypical_sha256)
    failures: dict[Path, str] = {}
    plans = plan_slides(args, settings, failures)
    unread = detect(args, plans)
    for path, message in unread.items():
        failures[path] = message
        print(f"error: {path}: {message}", file=sys.stderr)
    counted = [plan for plan in plans if plan.path not in unread]
    summaries = count_slides(counted, area_mm2, args.candidates, failures)
    rows = [summaries.get(path) or {"slide": path.name, "error": failures[path]} for path in args.slides]
    write_or_explain(args.out / "summary.csv", lambda p: report.write_summary_csv(p, rows))
    write_or_explain(args.out / "report.html", lambda p: report.write_report_html(p, rows))
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    """`python -m wsi.count`: every error is one `error:` line, Ctrl-C too (exit 130; the tiles done are kept)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = get_args_parser().parse_intermixed_args(argv)  # slides may come after options too
    try:
        return run(args)
    except (BundleError, UsageError, SlideError, OutputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; the tiles done are kept: run the same command again to continue", file=sys.stderr)
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
