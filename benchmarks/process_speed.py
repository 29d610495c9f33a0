"""Wall time, peak memory and time per stage of `process.py` (both models) on one MIDOG-sized image.

    python benchmarks/process_speed.py [--region tissue|glass | --image PATH] [--threads 2] [--repeats 1]
                                       [--compare REV] [--exact-too] [--json OUT]

Default image (`--region tissue`): the 7168x5120 mosaic of the 35 real MiDeSeC fields (`benchmarks/tissue_region.py`,
87% tissue by `model.tissue.tissue_mask`), what a MIDOG region of interest looks like. `--region glass`: a real
7215x5412 canine tile whose tissue fills its lower sixth. Both written as tiled TIFFs with 0.25 um/px resolution tags
(the MIDOG 2022 size).

What is measured, and why this way:

* **End to end**: `process.py` runs in a subprocess, exactly as the container runs it, so start-up (imports, model
  loading), reading the image and writing the JSON are all counted. Wall time is taken around the child; peak memory
  is that child's own maximum resident set size (`os.wait4`, not `RUSAGE_CHILDREN`, which would mix several runs).
* **Stages**: a separate child runs the same path as `process.py` (`read_rgb`, `Detector`,
  `Detector.detect`, `multiple_points` + `write_json_atomically`) in process and times each stage. The
  detector is observed, never changed: forward hooks on its P4 networks count the windows they actually score and
  tell which network a dense-map call belongs to, and `model.detector.probability_map` /
  `model.resample.resample_rgb` are wrapped with timers for that run only. `process.py` itself stays untouched.
  Stages: read, load models, resample (only when the image is not at the model's spacing), screen (the cheap first
  stage; absent in commits before it), P4 A dense map, P4 B dense map, candidates + agreement (the
  rest of detection: local maxima, agreement, micrograph guard, mm), write.
* **Windows scored**: the sum of the P4 networks' output cells over all their forward calls, divided by the number
  of windows of the exact dense map of the image at the model's spacing. Today both models score every window
  (100%); once a screen lets the P4 models skip windows, the same count shows how many they still score.
* **--compare REV**: the older commit is checked out with `git worktree add` into a temporary folder (removed and
  pruned afterwards), byte-compiled like the current tree, and its own `process.py` runs on the same image with the
  same interpreter, threads and measurement, interleaved with the current code's runs. It uses the bundle that commit
  shipped (unless --bundle is given, then both use that one). The old/new ratios are printed because absolute
  times differ from machine to machine; both walls include start-up equally.

Threads: OMP_NUM_THREADS / MKL_NUM_THREADS of every child (torch's intra-op threads follow them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/process_speed.py` puts benchmarks/, not the repository, on the path
    sys.path.insert(0, str(REPO))

from benchmarks.tissue_region import tissue_mosaic, write_midog_like_tiff  # noqa: E402

DEFAULT_SOURCE = REPO.parent / "shared/data/real/tiles/cmc-no-mitosis/2191a7aa287ce1d5dbc0_patch_0_28860.jpg"
STAGES = (
    "read",
    "load models",
    "resample",
    "screen",
    "P4 A dense map",
    "P4 B dense map",
    "candidates + agreement",
    "write",
)
"""Report order; a stage that did not run is None (resample at the model's spacing, screen while none exists)."""

GIB = 1024**3


def write_region_image(region: str, target: Path) -> None:
    """The built-in benchmark image `region` ("tissue" or "glass", see the module docstring) as a TIFF at `target`."""
    source = tissue_mosaic(REPO.parent / "shared/data/real") if region == "tissue" else DEFAULT_SOURCE
    write_midog_like_tiff(source, target)


def cpu_model() -> str:
    """The CPU's name: absolute times are only comparable on the same model (bf16 / AMX change them by 2x)."""
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as stream:
            for line in stream:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def thread_env(threads: int) -> dict[str, str]:
    """The environment of every child: the same thread count for the current and the old code."""
    count = str(threads)
    return dict(os.environ, OMP_NUM_THREADS=count, MKL_NUM_THREADS=count, OPENBLAS_NUM_THREADS=count)


@dataclass(frozen=True)
class ChildRun:
    """One measured subprocess: wall seconds (start-up included) and its own peak resident memory."""

    wall_s: float
    peak_rss_bytes: int
    returncode: int
    stderr_tail: str


def run_measured(command: list[str], env: dict[str, str], cwd: Path) -> ChildRun:
    """Run `command` and measure it alone: `os.wait4` returns this child's rusage, so its ru_maxrss is not mixed
    with earlier children the way `getrusage(RUSAGE_CHILDREN)` would be."""
    with tempfile.TemporaryFile(mode="w+") as stderr:
        started = time.perf_counter()
        child = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)
        wall_s = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: tell Popen so it does not wait again
        stderr.seek(0)
        tail = stderr.read()[-3000:]
    return ChildRun(wall_s, usage.ru_maxrss * 1024, child.returncode, tail)  # Linux: ru_maxrss in KiB


def process_command(
    repo: Path,
    input_dir: Path,
    output: Path,
    bundle: Path | None,
    precision: str,
    device: str | None,
    exact: bool = False,
) -> list[str]:
    """`process.py` of `repo` with only the options that differ from its defaults (older commits may lack some)."""
    command = [sys.executable, str(repo / "process.py"), "--input", str(input_dir), "--output", str(output)]
    if exact:
        command.append("--no-screen")
    if bundle is not None:
        command += ["--bundle", str(bundle)]
    if precision != "auto":
        command += ["--precision", precision]
    if device is not None:
        command += ["--device", device]
    return command


@dataclass(frozen=True)
class EndToEnd:
    """Fastest of the repeats of one code version, and what its output said (a sanity check, not a comparison:
    an older commit ships other weights)."""

    label: str
    wall_s: float
    peak_rss_bytes: int
    points: int
    mitotic_figures: int


def summarise_runs(label: str, runs: list[ChildRun], output: Path) -> EndToEnd:
    points = json.loads(output.read_text())["points"]
    return EndToEnd(
        label=label,
        wall_s=min(run.wall_s for run in runs),
        peak_rss_bytes=max(run.peak_rss_bytes for run in runs),
        points=len(points),
        mitotic_figures=sum(point["name"] == "mitotic figure" for point in points),
    )


def run_process(
    repo: Path,
    input_dir: Path,
    output: Path,
    threads: int,
    bundle: Path | None = None,
    precision: str = "auto",
    device: str | None = None,
    exact: bool = False,
) -> ChildRun:
    """One end-to-end run of `repo`'s process.py; a failure stops the benchmark with the child's stderr."""
    run = run_measured(
        process_command(repo, input_dir, output, bundle, precision, device, exact), thread_env(threads), cwd=repo
    )
    if run.returncode != 0:
        raise SystemExit(f"{repo / 'process.py'} failed with exit code {run.returncode}:\n{run.stderr_tail}")
    return run


def git(*arguments: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *arguments], capture_output=True, text=True, check=True).stdout


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[tuple[Path, str]]:
    """A detached checkout of `rev` in a temporary folder, byte-compiled like a tree that has run before (so the old
    code does not pay for compiling its modules), removed and pruned afterwards; yields (folder, short hash)."""
    short = git("rev-parse", "--short", f"{rev}^{{commit}}").strip()
    parent = Path(tempfile.mkdtemp(prefix="process-speed-"))
    folder = parent / short
    try:
        git("worktree", "add", "--detach", "--quiet", str(folder), short)
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(folder / "model")], check=True)
        yield folder, short
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            git("worktree", "remove", "--force", str(folder))
        shutil.rmtree(parent, ignore_errors=True)
        git("worktree", "prune")


class StageProbe:
    """Observes a `Detector` during one detection without changing what it computes.

    Forward hooks on each P4 network count the windows it scores (output cells of every forward call) and record
    which networks ran while a dense map was computed, so the time of each `probability_map` call is charged to the
    network that actually ran in it, not to a position in a list.
    """

    def __init__(self, detector: Any, synchronize: Callable[[], None]):
        self.names = [f"P4 {entry.policy}" for entry in detector.bundle.models]
        self.networks = list(detector.networks)
        self.screen = getattr(detector, "screen", None)  # older commits (--compare) have no screen
        self.synchronize = synchronize
        self.windows = dict.fromkeys(self.names, 0)
        self.seconds: dict[str, float] = {}
        self._ran: set[str] = set()

    def _hook(self, name: str) -> Callable[..., None]:
        def count(_module: Any, _inputs: Any, logits: Any) -> None:  # logits: (N, 2, h', w')
            self.windows[name] += int(logits.shape[0] * logits.shape[-2] * logits.shape[-1])
            self._ran.add(name)

        return count

    def _add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def timed(self, function: Callable[..., Any], stage: str | None) -> Callable[..., Any]:
        """`function` with its time charged to `stage`, or for a dense map (None) to '<network> dense map'."""

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self._ran = set()
            self.synchronize()
            started = time.perf_counter()
            result = function(*args, **kwargs)
            self.synchronize()
            elapsed = time.perf_counter() - started
            if stage is not None:
                self._add(stage, elapsed)
            elif self._ran == {"screen"}:
                self._add("screen", elapsed)
            elif len(self._ran) == 1:
                self._add(f"{next(iter(self._ran))} dense map", elapsed)
            else:  # no P4 network ran (some other network) or several in one call: do not guess
                self._add("other dense maps", elapsed)
            return result

        return wrapper

    @contextlib.contextmanager
    def attached(self) -> Iterator[StageProbe]:
        from unittest import mock

        from model import resample

        try:  # the detector's module; commits before the split of model/inference.py (--compare) had it there
            from model import detector as inference
        except ImportError:
            from model import inference  # type: ignore[no-redef]

        handles = [
            net.register_forward_hook(self._hook(name)) for name, net in zip(self.names, self.networks, strict=True)
        ]
        if self.screen is not None:
            handles.append(self.screen.register_forward_hook(lambda *_: self._ran.add("screen")))
        try:
            with (
                mock.patch.object(inference, "probability_map", self.timed(inference.probability_map, None)),
                mock.patch.object(resample, "resample_rgb", self.timed(resample.resample_rgb, "resample")),
                (  # commits before the screen have no screen_map
                    mock.patch.object(inference, "screen_map", self.timed(inference.screen_map, "screen"))
                    if hasattr(inference, "screen_map")
                    else contextlib.nullcontext()
                ),
            ):
                yield self
        finally:
            for handle in handles:
                handle.remove()


def measure_stages(
    image: Path,
    bundle: Path | None = None,
    precision: str = "auto",
    device: str | None = None,
    output: Path | None = None,
) -> dict[str, Any]:
    """Time process.py's stages on one image, in this process (run it in a child to keep start-up out of the
    stages and its memory apart). Returns stage seconds (None = did not run), windows scored per P4 network and
    the number of windows of the exact dense map."""
    import torch

    from app.output import multiple_points
    from model import spacing
    from model.atomic_files import write_json_atomically
    from model.bundle import DEFAULT_BUNDLE_DIR
    from model.geometry import map_shape
    from model.image_io import read_header, read_rgb

    try:
        from model.detector import Detector

        def detect(detector, image_rgb, header):  # resamples itself
            return detector.detect(image_rgb, header.spacing_mm, header.origin_mm)

    except ImportError:  # --compare with a commit from before `Detector.detect` resampled
        from model.inference import Detector

        from model.resample import detect_at_model_spacing

        def detect(detector, image_rgb, header):
            return detect_at_model_spacing(detector, image_rgb, header.spacing_mm, header.origin_mm)

    def synchronize() -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    seconds: dict[str, float | None] = dict.fromkeys(STAGES)
    started = time.perf_counter()
    header = read_header(image)
    image_rgb, header = read_rgb(image, header)
    seconds["read"] = time.perf_counter() - started

    started = time.perf_counter()
    import inspect

    # as process.py builds it: track 1 has no place for P(atypical) (commits before the classifier lack the option)
    same_as_process = {"atypical": False} if "atypical" in inspect.signature(Detector).parameters else {}
    detector = Detector(bundle or DEFAULT_BUNDLE_DIR, device=device, precision=precision, **same_as_process)
    synchronize()
    seconds["load models"] = time.perf_counter() - started

    probe = StageProbe(detector, synchronize)
    with probe.attached():
        started = time.perf_counter()
        detections = detect(detector, image_rgb, header)
        synchronize()
        detect_s = time.perf_counter() - started
    seconds.update(probe.seconds)
    seconds["candidates + agreement"] = detect_s - sum(probe.seconds.values())

    started = time.perf_counter()
    document = multiple_points(detections.xy_mm, detections.probability, detections.is_mitosis)
    with tempfile.TemporaryDirectory() as scratch:
        write_json_atomically(document, output or Path(scratch) / "out.json")
    seconds["write"] = time.perf_counter() - started

    model_width_px, model_height_px = spacing.model_size_px(header.width_px, header.height_px, header.spacing_mm)
    rows, cols = map_shape(model_height_px, model_width_px)
    return {
        "image_px": [header.width_px, header.height_px],
        "model_px": [model_width_px, model_height_px],
        "device": str(detector.device),
        "autocast": str(detector.autocast_dtype).replace("torch.", "") if detector.autocast_dtype else "fp32",
        "torch_threads": torch.get_num_threads(),
        "seconds": seconds,
        "windows_per_map": rows * cols,
        "windows_scored": probe.windows,
        "points": len(document["points"]),
        "peak_rss_bytes": None,  # filled in by the parent from the child's rusage
    }


def window_fractions(stages: dict[str, Any]) -> dict[str, float]:
    """Share of the exact dense map's windows each P4 network scored, and overall (a window scored twice, by
    overlapping fitted tiles, counts twice)."""
    total = stages["windows_per_map"]
    scored = stages["windows_scored"]
    fractions = {name: count / total for name, count in scored.items()}
    fractions["all P4"] = sum(scored.values()) / (total * len(scored)) if scored else 0.0
    return fractions


def run_stages_child(image: Path, args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """`measure_stages` in a fresh interpreter with the benchmark's threads, and that child's own peak memory."""
    result_file = scratch / "stages.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--image", str(image), "--stages-json", str(result_file)]
    if args.bundle is not None:
        command += ["--bundle", str(args.bundle)]
    command += ["--precision", args.precision] + (["--device", args.device] if args.device else [])
    run = run_measured(command, thread_env(args.threads), cwd=REPO)
    if run.returncode != 0:
        raise SystemExit(f"stage timing failed with exit code {run.returncode}:\n{run.stderr_tail}")
    stages = json.loads(result_file.read_text())
    stages["peak_rss_bytes"] = run.peak_rss_bytes
    return stages


def stage_note(stage: str) -> str:
    """What a stage that did not run means."""
    if stage == "screen":
        return "not run (no screen in the bundle, or an image mostly off glass: the P4 models score every window)"
    if stage == "resample":
        return "not needed (image at the model's 0.25 um/px)"
    return "did not run"


def format_report(result: dict[str, Any]) -> str:
    """The human-readable report; `result` is what --json writes."""
    stages = result["stages"]
    width, height = stages["image_px"]
    lines = [
        f"image: {result['image']} ({width}x{height} px, {width * height / 1e6:.1f} MP)",
        f"CPU: {result['cpu']} ({result['cpus']} logical CPUs); threads {result['threads']} "
        f"(torch intra-op {stages['torch_threads']}); device {stages['device']}, autocast {stages['autocast']}",
        "",
        f"end to end (process.py in a subprocess, start-up included; fastest of {result['repeats']}):",
    ]
    runs = [result["current"]] + [result[key] for key in ("exact", "compare") if result.get(key)]
    label_width = max(len(run["label"]) for run in runs)
    for run in runs:
        lines.append(
            f"  {run['label']:<{label_width}}  wall {run['wall_s']:6.1f} s   "
            f"peak RSS {run['peak_rss_bytes'] / GIB:5.2f} GiB   {run['points']} points, "
            f"{run['mitotic_figures']} mitotic figures"
        )
    for key, name in (("exact", "exact/screened"), ("compare", "old/new")):
        if result.get(key):
            other, new = result[key], result["current"]
            lines.append(
                f"  ratio {name}: wall {other['wall_s'] / new['wall_s']:.2f}x, "
                f"peak RSS {other['peak_rss_bytes'] / new['peak_rss_bytes']:.2f}x"
            )
    lines += ["", "stages of the current code (in process, the path process.py takes; start-up excluded):"]
    stage_names = list(STAGES) + [name for name in stages["seconds"] if name not in STAGES]
    for stage in stage_names:
        value = stages["seconds"].get(stage)
        lines.append(f"  {stage:<24}" + (f"{value:7.2f} s" if value is not None else f"   {stage_note(stage)}"))
    total = sum(value for value in stages["seconds"].values() if value is not None)
    lines.append(f"  {'sum':<24}{total:7.2f} s   (peak RSS of this run {stages['peak_rss_bytes'] / GIB:.2f} GiB)")
    fractions = window_fractions(stages)
    per_model = ", ".join(f"{name} {fractions[name]:.1%}" for name in stages["windows_scored"])
    lines.append(
        f"windows scored by the P4 models: {per_model} of {stages['windows_per_map']:,} windows each "
        f"-> {fractions['all P4']:.1%}"
    )
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    """The command line; `--stages-json` is the hidden switch of the stage-timing child."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--image",
        type=Path,
        default=None,
        help="image to process (default: --region's)",
    )
    parser.add_argument(
        "--region",
        choices=["tissue", "glass"],
        default="tissue",
        help="the built-in image: tissue = the 7168x5120 mosaic of real fields (benchmarks/tissue_region.py, 87%%\n"
        "tissue, what MIDOG regions look like); glass = the real 7215x5412 canine tile, tissue in its lower sixth",
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of every run (default: 2, like CI)")
    parser.add_argument("--repeats", type=int, default=1, help="end-to-end runs each; the fastest is reported")
    parser.add_argument("--precision", default="auto", help="process.py --precision (default: auto)")
    parser.add_argument("--device", default=None, help="process.py --device (default: its own choice)")
    parser.add_argument("--bundle", type=Path, default=None, help="model bundle (default: each commit's shipped one)")
    parser.add_argument("--compare", metavar="REV", default=None, help="also run this older commit, same image")
    parser.add_argument(
        "--exact-too", action="store_true", help="also run the current code's exact dense path (--no-screen)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--stages-json", type=Path, default=None, help=argparse.SUPPRESS)  # the stage-timing child
    return parser


def end_to_end_runs(
    args: argparse.Namespace, input_dir: Path, scratch: Path
) -> tuple[EndToEnd, EndToEnd | None, EndToEnd | None]:
    """`process.py` on the image `--repeats` times: the working tree, its exact path (`--exact-too`) and the
    `--compare` commit, interleaved so that load from elsewhere falls on all alike. Returns (current, exact, old)."""

    def run(repo: Path, name: str, exact: bool = False) -> ChildRun:
        return run_process(
            repo, input_dir, scratch / name, args.threads, args.bundle, args.precision, args.device, exact=exact
        )

    head = git("rev-parse", "--short", "HEAD").strip()
    current_runs: list[ChildRun] = []
    exact_runs: list[ChildRun] = []
    old_runs: list[ChildRun] = []
    with worktree(args.compare) if args.compare else contextlib.nullcontext((None, None)) as (old_repo, short):
        for _ in range(args.repeats):
            current_runs.append(run(REPO, "new.json"))
            if args.exact_too:
                exact_runs.append(run(REPO, "exact.json", exact=True))
            if old_repo is not None:
                old_runs.append(run(old_repo, "old.json"))
        current = summarise_runs(f"working tree (HEAD {head})", current_runs, scratch / "new.json")
        exact = (
            summarise_runs(f"working tree (HEAD {head}), --no-screen", exact_runs, scratch / "exact.json")
            if exact_runs
            else None
        )
        old = summarise_runs(f"{args.compare} ({short})", old_runs, scratch / "old.json") if old_runs else None
    return current, exact, old


def input_image(args: argparse.Namespace, input_dir: Path) -> Path:
    """The image in `input_dir` as `process.py` finds it: `--image` linked in, or the `--region` image written."""
    if args.image:
        image = input_dir / f"001{args.image.suffix.lower()}"
        os.symlink(args.image.resolve(), image)
    else:
        image = input_dir / "001.tiff"
        write_region_image(args.region, image)
    return image


def main() -> None:
    args = get_args_parser().parse_args()
    if args.stages_json is not None:  # the stage-timing child
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", args.threads)))
        stages = measure_stages(args.image, args.bundle, args.precision, args.device)
        args.stages_json.write_text(json.dumps(stages))
        return

    with tempfile.TemporaryDirectory() as work:
        scratch = Path(work)
        input_dir = scratch / "input"
        input_dir.mkdir()
        stages = run_stages_child(input_image(args, input_dir), args, scratch)
        current, exact, old = end_to_end_runs(args, input_dir, scratch)
    result = {
        "image": str(args.image or (f"{args.region} region" if args.region == "tissue" else DEFAULT_SOURCE)),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "repeats": args.repeats,
        "precision": args.precision,
        "current": asdict(current),
        "compare": asdict(old) if old else None,
        "exact": asdict(exact) if exact else None,
        "stages": stages,
        "window_fractions": window_fractions(stages),
    }
    print(format_report(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
