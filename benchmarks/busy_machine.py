"""process.py on a busy machine: the sample image quiet, then beside one CPU-bound job, for this tree and an older one.

    python benchmarks/busy_machine.py [--compare REV] [--image DIR | --region tissue|glass] [--repeats 1]

Users run the detector on shared servers and laptops, where other jobs want the same cores. OpenMP threads that spin
at barriers take turns with such a job and a run becomes several times slower; `model.threads` makes them wait
passively, and the dense maps are scored by single-threaded tile workers that never meet (`model.dense`). Each run
is `process.py` end to end (start-up included) on the container test's sample image, with the threads it chooses
itself (no OMP_NUM_THREADS given), first with the machine quiet, then with one competing process
that spins on one core for the whole run. The ratio loaded / quiet is what to compare (the issue's target: <= 2).
`--region` runs one of `benchmarks/process_speed.py`'s MIDOG-sized images instead of the sample.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.process_speed import (  # noqa: E402
    cpu_model,
    process_command,
    run_measured,
    worktree,
    write_region_image,
)

SAMPLE_DIR = REPO / "test" / "container" / "input"


def spin() -> None:
    """One core busy until terminated."""
    while True:
        pass


def wall_s(repo: Path, image_dir: Path, output: Path, loaded: bool) -> float:
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    competitor = multiprocessing.Process(target=spin, daemon=True) if loaded else None
    if competitor is not None:
        competitor.start()
    try:
        run = run_measured(process_command(repo, image_dir, output, None, "auto", None, False), env, cwd=repo)
    finally:
        if competitor is not None:
            competitor.terminate()
            competitor.join()
    if run.returncode != 0:
        raise SystemExit(f"{repo / 'process.py'} failed:\n{run.stderr_tail}")
    return run.wall_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--compare", metavar="REV", default=None, help="also run this older commit")
    parser.add_argument("--image", type=Path, default=SAMPLE_DIR, help="folder with one image (default: the sample)")
    parser.add_argument("--region", choices=("tissue", "glass"), default=None, help="a MIDOG-sized image instead")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each kind; the fastest is reported")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as scratch,
        worktree(args.compare) if args.compare else contextlib.nullcontext((None, None)) as (old_repo, short),
    ):
        if args.region:
            args.image = Path(scratch) / "input"
            args.image.mkdir()
            write_region_image(args.region, args.image / "001.tiff")
        print(f"{cpu_model()}, {len(os.sched_getaffinity(0))} CPUs; image {args.region or args.image}")
        trees = [("working tree", REPO)] + ([(f"{args.compare} ({short})", old_repo)] if old_repo else [])
        for name, repo in trees:
            quiet = min(wall_s(repo, args.image, Path(scratch) / "q.json", False) for _ in range(args.repeats))
            loaded = min(wall_s(repo, args.image, Path(scratch) / "l.json", True) for _ in range(args.repeats))
            print(f"  {name}: quiet {quiet:.1f} s, beside one busy process {loaded:.1f} s: {loaded / quiet:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
