"""Checks that run before the models load: a run that would fail late fails first, with one line.

A detection run spends minutes in the networks; an output it cannot write, a device it cannot use or an input it
cannot take would otherwise surface as a traceback after that work (and sometimes not at all: two images written to
the same file, an option silently ignored). Everything that can be known from the command line and the file system
is checked here, without side effects: no folder is created and no file is left behind.
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from model.image_io import SUPPORTED_SUFFIXES, ImageHeader, InputImageError, read_header

CONTAINER_MARKER = Path("/.dockerenv")
"""Docker creates this file in every container: a folder that is not writable there usually means a bind-mounted
host folder owned by another user, and the hint says how to run as that user."""

_DOCKER_HINT = ' (in Docker: create the folder on the host first and run with --user "$(id -u):$(id -g)")'


logger = logging.getLogger(__name__)


class UsageError(Exception):
    """A run that cannot do what its command line asks (options, outputs, device); the message is one line."""


@dataclass(frozen=True)
class Job:
    """One image and where its results go."""

    image: Path
    output: Path
    overlay: Path | None = None
    header: ImageHeader | None = None  # read once, when the plan already had to read it


def find_images(input_dir: str | Path) -> list[Path]:
    """The .tif/.tiff/.mha files anywhere under `input_dir` (as evalutils finds them), sorted; at least one.

    An empty `--input ''` is refused rather than read as the current folder."""
    if not str(input_dir).strip():
        raise UsageError("--input is empty: name the folder that holds the image(s)")
    input_dir = Path(input_dir)
    if input_dir.is_file():
        raise UsageError(f"--input {input_dir} is a file: --input takes the folder that holds the image(s)")
    if not input_dir.is_dir():
        raise InputImageError(f"input folder {input_dir} does not exist")
    if not os.access(input_dir, os.R_OK | os.X_OK):
        raise InputImageError(f"input folder {input_dir} cannot be read (permission denied for user id {os.geteuid()})")
    images, unreadable = _walk_images(input_dir)
    denied = f"(permission denied for user id {os.geteuid()})"
    if not images:
        where = f"; subfolder {unreadable[0]} cannot be read {denied}" if unreadable else ""
        raise InputImageError(f"no .tif/.tiff/.mha image in {input_dir}{where}")
    for folder in unreadable:
        logger.warning("subfolder %s cannot be read %s: images in it, if any, are not processed", folder, denied)
    return images


def _walk_images(input_dir: Path) -> tuple[list[Path], list[Path]]:
    """(sorted image files under `input_dir`, sorted subfolders that could not be listed). Symbolic links to folders
    are not followed, as `Path.rglob` does not follow them."""
    images, unreadable = [], []

    def note_unreadable(error: OSError) -> None:
        unreadable.append(Path(error.filename))

    for folder, _, files in os.walk(input_dir, onerror=note_unreadable):
        images += [Path(folder) / name for name in files if Path(name).suffix.lower() in SUPPORTED_SUFFIXES]
    return sorted(p for p in images if p.is_file()), sorted(unreadable)


def _in_container() -> bool:
    return CONTAINER_MARKER.exists()


def _not_writable(folder: Path) -> str:
    hint = _DOCKER_HINT if _in_container() else ""
    return f"folder {folder} is not writable by user id {os.geteuid()}{hint}"


def folder_write_problem(folder: Path) -> str | None:
    """Why files cannot be created in `folder` (created on demand when missing), or None when they can.

    An existing folder is probed for real (a temporary file made and removed: permissions, read-only mounts, ACLs
    and quotas all answer); for a missing one, its nearest existing ancestor must be a writable folder.
    """
    folder = Path(folder).absolute()
    existing = folder
    try:
        while not existing.exists() and existing.parent != existing:
            existing = existing.parent
        if not existing.is_dir():
            return f"{existing} is a file, not a folder"
        if existing != folder:
            return None if os.access(existing, os.W_OK | os.X_OK) else _not_writable(existing)
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".write-check-")
        os.close(handle)
        os.unlink(probe)
    except PermissionError:
        return _not_writable(existing)
    except OSError as error:
        if error.errno == errno.EROFS:
            return f"folder {existing} is on a read-only file system"
        return f"folder {existing}: {error.strerror or error}"
    return None


def name_max(folder: Path) -> int:
    """Longest file name (bytes) the file system of `folder` (or its nearest existing ancestor) takes."""
    existing = Path(folder).absolute()
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    try:
        return os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def check_output_file(path: Path, option: str = "--output") -> None:
    """`path` can be written (atomically, by rename within its folder): not a folder, a name the file system takes,
    its folder writable."""
    path = Path(path)
    if not path.name:
        raise UsageError(f"{option} {str(path)!r} names no file")
    if len(os.fsencode(path.name)) > (limit := name_max(path.parent)):
        raise UsageError(f"{option}: the file name {path.name[:40]}... is longer than the {limit} bytes allowed here")
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder: name the file to write, e.g. {path / 'mitotic-figures.json'}")
    if path.exists() and not path.is_file():
        raise UsageError(f"{option} {path} exists and is not a regular file")
    if (problem := folder_write_problem(path.parent)) is not None:
        raise UsageError(f"cannot write {option} {path}: {problem}")


def check_output_folder(path: Path, option: str = "--output-dir") -> None:
    """Files can be created in folder `path` (which is created on demand when missing)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path} is a file, not a folder")
    if (problem := folder_write_problem(path)) is not None:
        raise UsageError(f"cannot write into {option} {path}: {problem}")


def check_overlay_file(path: Path) -> None:
    """A picture format Pillow can write (chosen by the suffix), in a writable place."""
    Image.init()
    suffix = Path(path).suffix.lower()
    if Image.registered_extensions().get(suffix) not in Image.SAVE:
        raise UsageError(f"--overlay {path}: cannot tell the picture format from {suffix or 'no suffix'!r} (use .png)")
    check_output_file(path, "--overlay")


def check_device(requested: str | None, precision: str) -> None:
    """The device exists here and the precision suits it (else torch fails later with a traceback). torch is
    imported here only: the file-system checks above serve tools without torch (`evaluation.report`)."""
    import torch

    from model.precision import autocast_dtype, pick_device

    try:
        device = torch.device(requested) if requested else None
    except RuntimeError:
        raise UsageError(f"--device {requested}: not a torch device (use cpu, cuda or cuda:N)") from None
    if device is not None and device.type == "cuda":
        if not torch.cuda.is_available():
            built = "" if torch.version.cuda else f", this torch {torch.__version__} is built without CUDA"
            raise UsageError(f"--device {requested}: no CUDA GPU is available here{built}; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {requested}: only {torch.cuda.device_count()} CUDA GPU(s) here")
    elif device is not None and device.type == "mps":
        if not torch.backends.mps.is_available():
            raise UsageError(f"--device {requested}: no Apple GPU (MPS) is available here; use --device cpu")
    elif device is not None and device.type != "cpu":
        raise UsageError(f"--device {requested}: unsupported device type (use cpu, cuda or cuda:N)")
    resolved = pick_device(requested)
    try:
        dtype = autocast_dtype(resolved, precision)
    except ValueError as error:
        raise UsageError(f"--precision {precision}: {error}") from None
    if resolved.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise UsageError(f"--precision {precision}: this GPU does not support bf16; use fp16 or fp32")


def same_file(a: Path, b: Path) -> bool:
    """Do two paths name one file (links and `..` resolved; a path that does not exist yet by its resolved name)?"""
    try:
        return Path(a).resolve() == Path(b).resolve() or os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs_apart(images: list[Path], outputs: dict[str, Path]) -> None:
    """No output may overwrite an input image or another output (`--output in/001.tiff` once replaced the image)."""
    named = [(option, path) for option, path in outputs.items() if path is not None]
    for option, path in named:
        for image in images:
            if same_file(path, image):
                raise UsageError(f"{option} {path} is the input image {image}: it would be overwritten")
    for index, (option, path) in enumerate(named):
        for other_option, other in named[index + 1 :]:
            if same_file(path, other):
                raise UsageError(f"{option} and {other_option} name the same file {path}: each needs its own")


def plan_single(input_dir: str | Path, output: Path, overlay: Path | None = None) -> Job:
    """Container / local mode: exactly one image, validated from its header, and writable outputs."""
    images = find_images(input_dir)
    input_dir = Path(input_dir)
    if len(images) > 1:
        names = ", ".join(str(p.relative_to(input_dir)) for p in images[:3]) + (", ..." if len(images) > 3 else "")
        raise UsageError(
            f"{len(images)} images in {input_dir} ({names}): --output takes exactly one (grand-challenge sends one "
            "per job); use --output-dir FOLDER for a folder of images"
        )
    header = read_header(images[0])
    check_outputs_apart(images, {"--output": output, "--overlay": overlay})
    check_output_file(output)
    if overlay is not None:
        check_overlay_file(overlay)
    return Job(images[0], Path(output), overlay, header)


def plan_batch(input_dir: str | Path, output_dir: Path, overlay_dir: Path | None = None) -> list[Job]:
    """Batch mode: `output_dir/<stem>.json` (and `overlay_dir/<stem>.png`) per image; two images that would write
    the same file are refused up front (`a/001.tiff` and `b/001.tiff`, `001.tif` and `001.mha`).

    Flat names are kept on purpose: a folder of `<stem>.json` is what `evaluation.evaluate --predictions` reads.
    Images are not validated here: a bad image is reported when its turn comes and the others are still processed.
    """
    images = find_images(input_dir)
    input_dir = Path(input_dir)
    by_name: dict[str, list[Path]] = {}
    for image in images:
        by_name.setdefault(image.stem.casefold(), []).append(image)
    clashes = [paths for paths in by_name.values() if len(paths) > 1]
    if clashes:
        first = clashes[0]
        more = f" (and {len(clashes) - 1} more such group(s))" if len(clashes) > 1 else ""
        raise UsageError(
            f"{', '.join(str(p.relative_to(input_dir)) for p in first)} would all be written to "
            f"{Path(output_dir) / (first[0].stem + '.json')}{more}: batch mode names each output after its image's "
            "file name; rename them or run each folder on its own"
        )
    check_output_folder(output_dir)
    if overlay_dir is not None:
        check_output_folder(overlay_dir, "--overlay-dir")
    return [
        Job(
            image=image,
            output=Path(output_dir) / f"{image.stem}.json",
            overlay=None if overlay_dir is None else Path(overlay_dir) / f"{image.stem}.png",
        )
        for image in images
    ]
