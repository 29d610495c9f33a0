"""One line for the user on stderr: how every command of the app reports an error it cannot act on."""

from __future__ import annotations

import sys


def say(line: str) -> None:
    """One line on stderr, if there is a stderr to write to (it may be closed or a broken pipe)."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (AttributeError, OSError, ValueError):
        pass
