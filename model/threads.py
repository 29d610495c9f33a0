"""How many CPU threads a run uses, and how they wait: set once, before torch starts its thread pool.

The default is the CPUs this process may run on (`os.sched_getaffinity`: a container's or a job scheduler's CPU set,
not the machine's). OpenMP threads wait passively (`OMP_WAIT_POLICY=PASSIVE`): by default they spin at every
barrier, and on a machine where another job wants the same cores, spinning threads take turns with it and a run
became 3-9x slower (docs/performance.md, "Threads"). Both must be in the environment before torch is imported,
which is why `process.py` parses its arguments first. Image decoding (tifffile) stays within the same budget. The
dense maps avoid barriers altogether: one single-threaded tile worker per thread (`model.dense.in_tile_workers`).
"""

from __future__ import annotations

import os
import sys

_budget: int | None = None


def available_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def configure(threads: int | None = None) -> int:
    """Use `threads` (default: `available_cpus()`) threads, waiting passively; returns the number. Call it before
    torch is imported; if torch already is, its pool is resized (the wait policy can no longer change)."""
    global _budget
    _budget = max(1, int(threads or available_cpus()))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ["OMP_NUM_THREADS"] = str(_budget)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(_budget)
    return _budget


def budget() -> int:
    """Threads a stage may use: the configured number, or the CPUs available when nothing was configured."""
    return _budget or available_cpus()
