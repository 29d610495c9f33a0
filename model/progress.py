"""Progress bars: named by their stage, drawn on a terminal only.

Logs stay free of escape codes (a bar is drawn only when stderr is a terminal), and a closed stderr (a daemon, `2>&-`)
is no error: tqdm's own `disable=None` test would write to a missing stream.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm import tqdm


def on_terminal() -> bool:
    """Is stderr an open terminal?"""
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, OSError, ValueError):
        return False


def progress_bar(
    iterable: Iterable | None = None, *, stage: str, unit: str, total: int | None = None, show: bool = True
):
    """A tqdm bar named `stage` (e.g. "model A"), shown when `show` and stderr is a terminal."""
    return tqdm(iterable, total=total, desc=stage, unit=unit, disable=not (show and on_terminal()), leave=False)
