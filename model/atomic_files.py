"""Writing files so that a crash never leaves a partial one: write beside, then rename into place.

Every writer of the project goes through here: the bundle, the container's outputs, whole-slide results, training runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to, renamed onto `path` when the block succeeds and removed when it
    fails: readers never see a partial file, and a failed write (disk full, Ctrl-C) leaves an older file untouched.
    The temporary name is short (`.tmp-XXXXXXXX`), so every name the file system takes for `path` can be written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o644)  # mkstemp creates 0600; the platform reads the file as another user
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json_atomically(data: dict | list, path: Path) -> None:
    """JSON through `atomic_output`."""
    with atomic_output(path) as temporary, open(temporary, "w") as stream:
        json.dump(data, stream, indent=2)
        stream.write("\n")
