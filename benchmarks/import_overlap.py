"""Does importing evalutils beside the detector's loading shorten track 1's start-up? Both orders, timed.

    python -m benchmarks.import_overlap [--repeats 3]

Each run is a fresh interpreter that imports torch and the detector, builds `Detector()` as `process.py` does and
imports evalutils, either after the detector (`in turn`) or in a background thread started first (`overlapped`).
The wall time of each run is printed with the CPU's name: the thread pays only if the two imports can share the
machine, which the interpreter lock decides (docs/performance.md, "Start-up").
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.process_speed import cpu_model  # noqa: E402
from model.command_line import command_parser  # noqa: E402

CHILD = """
import threading
overlapped = {overlapped}
if overlapped:
    thread = threading.Thread(target=lambda: __import__("evalutils"))
    thread.start()
from model import Detector
Detector(atypical=False)
if overlapped:
    thread.join()
else:
    import evalutils
"""


def one_run(overlapped: bool) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", CHILD.format(overlapped=overlapped)], cwd=REPO, check=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("benchmarks.import_overlap", __doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each order, interleaved")
    args = parser.parse_args(argv)
    times: dict[str, list[float]] = {"in turn": [], "overlapped": []}
    for _ in range(args.repeats):
        for label in times:
            times[label].append(one_run(label == "overlapped"))
    print(f"CPU: {cpu_model()}")
    for label, seconds in times.items():
        print(f"{label:>10}: " + ", ".join(f"{s:.2f} s" for s in seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
