"""grand-challenge entry point: mitotic figures in one H&E region of interest -> "Multiple points" JSON in mm.

python process.py                                   # container: /input/images/histopathology-roi-cropout/ ->
                                                    #            /output/mitotic-figures.json
python process.py --input DIR --output out.json    # local run, no Docker
python process.py --input DIR --output out.json --overlay out.png
python process.py --input DIR --output-dir OUT [--overlay-dir PNGS]   # batch: OUT/<stem>.json per image

Everything that can be checked before the models run is (`model.preflight`): a bad option, input or output stops
with one line on stderr and exit code 1, and no output file.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path

from evalutils import DetectionAlgorithm
from evalutils.exceptions import ValidationError
from evalutils.io import ImageLoader
from evalutils.validators import UniqueImagesValidator, UniquePathIndicesValidator
from tqdm import tqdm

from model import preflight
from model.bundle import DEFAULT_BUNDLE_DIR, BundleError
from model.image_io import SUPPORTED_SUFFIXES, ImageHeader, InputImageError, read_header, read_rgb
from model.inference import Detector
from model.output import multiple_points, write_json_atomically
from model.overlay import draw_overlay
from model.preflight import UsageError
from model.resample import detect_at_model_spacing
from model.spacing import describe_um

DEFAULT_INPUT_DIR = Path("/input/images/histopathology-roi-cropout/")
DEFAULT_OUTPUT_FILE = Path("/output/mitotic-figures.json")
SHELL_NAMES = {"sh", "bash", "dash"}
logger = logging.getLogger("process")


class HeaderLoader(ImageLoader):
    """evalutils loader that validates from the header and hashes (path, size, mtime) instead of all pixels.

    evalutils 0.4.2 reads and hashes every image twice (when listing cases and again per case); the pixels are
    read once, in `process_case`, instead.
    """

    def __init__(self):
        self.headers: dict[str, ImageHeader] = {}

    def load(self, *, fname: Path):
        header = self.load_image(fname)
        self.headers[str(fname)] = header
        return [{"hash": self.hash_image(header), "path": fname}]

    @staticmethod
    def load_image(fname: Path):
        return read_header(fname)  # raises InputImageError: a bad image must stop the job, not be skipped

    @staticmethod
    def hash_image(image) -> int:
        stat = image.path.stat()
        return hash((str(image.path), stat.st_size, stat.st_mtime_ns))


def detect_file(detector: Detector, path: Path, header: ImageHeader | None = None, overlay: Path | None = None) -> dict:
    """One image file -> the platform's "Multiple points" document (and optionally an overlay PNG)."""
    image_rgb, header = read_rgb(path, header)
    logger.info("%s: %dx%d px at %s", path.name, header.width_px, header.height_px, describe_um(header.spacing_mm))
    detections = detect_at_model_spacing(
        detector, image_rgb, header.spacing_mm, header.origin_mm, progress=True, source=path.name
    )
    logger.info(
        "%s: %d mitotic figures among %d candidates",
        path.name,
        int(detections.is_mitosis.sum()),
        len(detections.probability),
    )
    if overlay is not None:
        try:
            draw_overlay(
                image_rgb, detections.xy_px, detections.is_mitosis, detections.probability, header.spacing_mm, overlay
            )
        except OSError as error:  # checked beforehand (`model.preflight`); a full disk can still stop it
            raise UsageError(f"cannot write --overlay {overlay}: {error.strerror or error}") from None
    return multiple_points(detections.xy_mm, detections.probability, detections.is_mitosis)


def write_output(document: dict, path: Path) -> None:
    """`write_json_atomically`, with a failure the checks could not foresee (disk full) as one line."""
    try:
        write_json_atomically(document, path)
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror or error}") from None


def run_batch(detector: Detector, jobs: list[preflight.Job]) -> int:
    """Every planned image -> its JSON (and overlay); models loaded once. Bad images are reported, not fatal."""
    failures = 0
    for job in tqdm(jobs, desc="images", unit="image"):
        try:
            document = detect_file(detector, job.image, overlay=job.overlay)
        except InputImageError as error:
            failures += 1
            print(f"error: {error}", file=sys.stderr)
            continue
        write_output(document, job.output)
    logger.info("%d of %d images written to %s", len(jobs) - failures, len(jobs), jobs[0].output.parent)
    return 1 if failures else 0


class MitosisDetection(DetectionAlgorithm):
    def __init__(self, input_dir: Path, output_file: Path, detector: Detector, overlay: Path | None = None):
        suffixes = "|".join(re.escape(s) for s in SUPPORTED_SUFFIXES)
        loader = HeaderLoader()
        self._headers = loader.headers
        super().__init__(
            input_path=Path(input_dir),
            output_file=Path(output_file),
            file_loaders={"input_image": loader},
            file_filters={"input_image": re.compile(rf".*({suffixes})$", re.IGNORECASE)},
            validators={"input_image": (UniqueImagesValidator(), UniquePathIndicesValidator())},
        )
        self.detector = detector
        self.overlay = overlay

    def process_case(self, *, idx, case):
        path = Path(case["path"])
        return detect_file(self.detector, path, self._headers.get(str(path)), self.overlay)

    def predict(self, *, input_image):  # required by the abstract base; process_case does the work
        raise NotImplementedError

    def save(self):
        if len(self._case_results) != 1:
            raise InputImageError(f"expected exactly one input image, found {len(self._case_results)}")
        write_output(self._case_results[0], self._output_file)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, add_help=add_help, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--input",
        type=Path,
        default=DEFAULT_INPUT_DIR,
        help=f"folder holding one .tif/.tiff/.mha image (default: {DEFAULT_INPUT_DIR})",
    )
    parser.add_argument(
        "--output", type=Path, default=None, help=f"JSON file to write (default: {DEFAULT_OUTPUT_FILE})"
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="batch mode: every image of --input -> OUTPUT_DIR/<stem>.json (instead of --output); two images with\n"
        "the same file name (a/001.tiff, b/001.tiff) are refused",
    )
    parser.add_argument("--overlay", type=Path, default=None, help="also draw the detections into this PNG")
    parser.add_argument(
        "--overlay-dir", type=Path, default=None, help="batch mode: also draw OVERLAY_DIR/<stem>.png per image"
    )
    parser.add_argument(
        "--bundle", type=Path, default=DEFAULT_BUNDLE_DIR, help="model bundle folder (default: shipped)"
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--no-screen",
        action="store_true",
        help="exact dense path on a CPU too: model A scores every window instead of only where the bundle's screen\n"
        "passes (slower; the screen keeps >= 99.5%% of the exact path's points, see model/weights/README.md).\n"
        "On a GPU the exact path is the default: it is faster there",
    )
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="autocast precision (default: auto = fp16 on CUDA, bf16 on CPUs that support it)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if argv is None:
        argv = sys.argv[1:]
        # The grand-challenge convention `ENTRYPOINT python -m process $0 $@` passes the shell's own name as the first
        # argument when the container is started without arguments (the normal case on the platform).
        if argv and Path(argv[0]).name in SHELL_NAMES:
            argv = argv[1:]
    args = get_args_parser().parse_args(argv)
    try:
        if args.output_dir is not None:
            if args.output is not None or args.overlay is not None:
                raise UsageError(
                    "batch mode (--output-dir) writes one file per image: use --overlay-dir, not --output or --overlay"
                )
            jobs = preflight.plan_batch(args.input, args.output_dir, args.overlay_dir)
        else:
            if args.overlay_dir is not None:
                raise UsageError("--overlay-dir is for batch mode (--output-dir); use --overlay FILE.png")
            jobs = [preflight.plan_single(args.input, args.output or DEFAULT_OUTPUT_FILE, args.overlay)]
        preflight.check_device(args.device, args.precision)
        use_screen = False if args.no_screen else None  # None: the screen on CPUs, the exact path on GPUs
        detector = Detector(args.bundle, device=args.device, precision=args.precision, use_screen=use_screen)
        if args.output_dir is not None:
            return run_batch(detector, jobs)
        MitosisDetection(args.input, jobs[0].output, detector, jobs[0].overlay).process()
    except (InputImageError, BundleError, UsageError, ValidationError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def exit_now(code: int) -> None:
    """Flush and leave without the interpreter's clean-up: unloading torch, pandas and scikit-learn took 0.7-0.9 s
    of a 15 s run on 2 CPU cores (`benchmarks/process_speed.py`), and there is nothing left to clean by then: every
    output file is written, closed and renamed into place. An exception never gets here (normal traceback, exit 1)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
