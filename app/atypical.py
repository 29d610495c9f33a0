"""MIDOG 2025 track 2: every crop of a multi-page TIFF -> atypical or normal, with P(atypical).

Input: one multi-page TIFF (written by Pillow on grand-challenge) whose pages are 128x128 RGB crops centred on a
mitotic figure, at about 0.25 um/px. Output: a JSON list with one object per page, in page order,
`{"class": "atypical" | "normal", "confidence": P(atypical)}`, written atomically.

Everything a bad stack can be is checked from the page headers before the models load (no pages, several TIFFs,
pages of another size, grey, palette or 16-bit pages); a page whose pixels cannot be decoded stops the run in one line
before anything is written. Crops of another size are refused rather than resampled: the classifier learned the
figure's size in pixels, and a crop of another size is another field of view.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from app.console import say
from app.preflight import UsageError, check_output_file
from model.atomic_files import write_json_atomically
from model.atypical import BATCH_CROPS, CROP_PX

logger = logging.getLogger("process")

STACK_SUFFIXES = (".tif", ".tiff")
ATYPICAL, NORMAL = "atypical", "normal"


class StackError(Exception):
    """A stack that cannot be classified; the message is one line for the user."""


@dataclass(frozen=True)
class Stack:
    path: Path
    pages: int


def find_stack(input_dir: str | Path) -> Path:
    """The one .tif/.tiff file directly in `input_dir` (the platform hands over exactly one)."""
    if not str(input_dir).strip():
        raise StackError("--input is empty: name the folder that holds the TIFF stack")
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise StackError(f"input folder {input_dir} does not exist")
    stacks = sorted(p for p in input_dir.iterdir() if p.is_file() and p.suffix.lower() in STACK_SUFFIXES)
    if not stacks:
        raise StackError(f"no .tif/.tiff stack of crops in {input_dir}")
    if len(stacks) > 1:
        names = ", ".join(p.name for p in stacks[:3]) + (", ..." if len(stacks) > 3 else "")
        raise StackError(f"{len(stacks)} TIFF stacks in {input_dir} ({names}): expected exactly one")
    return stacks[0]


def check_stack(path: Path) -> Stack:
    """Every page's header: 128x128, RGB or RGBA, 8 bits per sample; at least one page."""
    try:
        with Image.open(path) as image:
            pages = getattr(image, "n_frames", 1)
            for page in range(pages):
                image.seek(page)
                _check_page(path, page, image)
    except StackError:
        raise
    except Exception as error:  # Pillow answers a malformed file with OSError, SyntaxError, TypeError, struct.error...
        raise StackError(f"{path.name}: not a readable TIFF stack ({error or type(error).__name__})") from None
    if pages < 1:
        raise StackError(f"{path.name}: the stack holds no page")
    return Stack(path, pages)


def _check_page(path: Path, page: int, image: Image.Image) -> None:
    where = f"{path.name}: page {page + 1}"
    if image.mode not in ("RGB", "RGBA"):
        kind = {"L": "grey", "LA": "grey with alpha", "P": "palette", "1": "black-and-white"}.get(image.mode)
        kind = kind or (f"{image.mode} (16-bit or more)" if image.mode.startswith("I") else image.mode)
        raise StackError(f"{where} is {kind}; expected 8-bit RGB crops")
    if image.size != (CROP_PX, CROP_PX):
        width, height = image.size
        raise StackError(f"{where} is {width}x{height} px; expected {CROP_PX}x{CROP_PX} px crops (not resampled)")


def read_pages(stack: Stack, start: int, count: int) -> np.ndarray:
    """(count, 128, 128, 3) uint8 pixels of pages start .. start + count - 1."""
    crops = np.empty((count, CROP_PX, CROP_PX, 3), np.uint8)
    with Image.open(stack.path) as image:
        for index in range(count):
            try:
                image.seek(start + index)
                crops[index] = np.asarray(image.convert("RGB"))
            except Exception as error:  # as in `check_stack`: a corrupt page can raise any of Pillow's errors
                name = stack.path.name
                raise StackError(f"{name}: page {start + index + 1} cannot be decoded ({error})") from None
    return crops


def classify_stack(classifier, stack: Stack) -> list[dict]:
    """The track-2 document: one {"class", "confidence"} per page, in page order."""
    probability = np.concatenate(
        [
            classifier.probability(read_pages(stack, start, min(BATCH_CROPS, stack.pages - start)))
            for start in range(0, stack.pages, BATCH_CROPS)
        ]
    )
    return classification_document(probability, classifier.is_atypical(probability))


def classification_document(probability: np.ndarray, atypical: np.ndarray) -> list[dict]:
    """The platform's "multiple mitotic figure classification": P(atypical) as the confidence of every page."""
    return [
        {"class": ATYPICAL if flag else NORMAL, "confidence": round(float(p), 6)}
        for p, flag in zip(probability, atypical, strict=True)
    ]


def run_atypical(input_dir: str | Path, output: Path, bundle_dir: Path | None, device: str | None) -> int:
    """Check, load, classify, write; every failure the user can act on is one `error:` line and exit 1."""
    from model.bundle import DEFAULT_BUNDLE_DIR, BundleError, load_atypical, load_networks, read_bundle
    from model.precision import pick_device

    bundle_dir = bundle_dir or DEFAULT_BUNDLE_DIR
    try:
        stack = check_stack(find_stack(input_dir))
        check_output_file(output)
        bundle = read_bundle(bundle_dir)
        if bundle.atypical is None:
            raise BundleError(f"the bundle {bundle_dir} has no atypical classifier (python -m training.atypical)")
        networks = [net.to(pick_device(device)) for net in load_networks(bundle, bundle_dir)]
        classifier = load_atypical(bundle, networks, bundle_dir)
        document = classify_stack(classifier, stack)
        write_json_atomically(document, output)
    except (StackError, BundleError, UsageError) as error:
        say(f"error: {error}")
        return 1
    except OSError as error:
        say(f"error: cannot write {output}: {error.strerror or error}")
        return 1
    except KeyboardInterrupt:  # the output is written atomically at the end: nothing partial is left
        say("error: interrupted; nothing was written")
        return 130
    atypical = sum(entry["class"] == ATYPICAL for entry in document)
    logger.info("%s: %d of %d crops atypical; written to %s", stack.path.name, atypical, stack.pages, output)
    return 0
