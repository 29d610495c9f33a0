"""grand-challenge entry point: mitotic figures in one H&E region of interest -> "Multiple points" JSON in mm.

python process.py                                   # container: /input/images/histopathology-roi-cropout/ ->
                                                    #            /output/mitotic-figures.json
python process.py --input DIR --output out.json    # local run, no Docker
python process.py --input DIR --output out.json --overlay out.png
python process.py --input DIR --output-dir OUT [--overlay-dir PNGS]   # batch: OUT/<stem>.json per image
python process.py --task atypical --input DIR --output out.json   # MIDOG 2025 track 2: DIR holds one TIFF stack
                                                    # of 128x128 crops -> atypical/normal per crop
In container mode (no --input, no --task) the input folder that exists picks the task: track 1's
/input/images/histopathology-roi-cropout/ or track 2's /input/images/stacked-histopathology-roi-cropouts/.

One loop for both modes: a single image is a batch of one with a fixed output name. Everything that can be checked
before the models run is (`app.preflight`): a bad option, input or output stops with one line on stderr and exit
code 1, and no output file. Outputs are written atomically and never onto an input or onto each other.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

DEFAULT_INPUT_DIR = Path("/input/images/histopathology-roi-cropout/")
DEFAULT_OUTPUT_FILE = Path("/output/mitotic-figures.json")
ATYPICAL_INPUT_DIR = Path("/input/images/stacked-histopathology-roi-cropouts/")  # MIDOG 2025 track 2
ATYPICAL_OUTPUT_FILE = Path("/output/multiple-mitotic-figure-classification.json")
SHELL_NAMES = {"sh", "bash", "dash"}


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, add_help=add_help, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--task",
        choices=["detection", "atypical"],
        default=None,
        help="detection: mitotic figures in a region (MIDOG track 1); atypical: each crop of a TIFF stack atypical\n"
        "or normal (MIDOG 2025 track 2). Default: detection, or in container mode the task whose input folder exists",
    )
    parser.add_argument(
        "--input",
        type=str,  # not Path: Path("") is the current folder, and an empty --input is refused instead
        default=None,
        help=f"folder holding one .tif/.tiff/.mha image (default: {DEFAULT_INPUT_DIR}; track 2: {ATYPICAL_INPUT_DIR})",
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
        "--bundle", type=Path, default=None, help="model bundle folder (default: the shipped model/weights)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (default: the CPUs this process may use); to detect several images in parallel on one\n"
        "machine, run one process per image with --threads = CPUs / processes",
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
        "--no-verifier",
        action="store_true",
        help="skip the bundle's verifier (model/verifier.py): the dense nets' own probabilities and naming rule,\n"
        "the output of the bundle before it had one",
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
    args = get_args_parser().parse_args(argv)  # --help and argument errors answer before torch is imported
    try:  # importing torch and evalutils takes seconds: Ctrl-C there is one line too, as later
        from model import threads

        threads.configure(args.threads)  # before torch starts its thread pool
        task = pick_task(args)
        if task == "detection":  # only the task's own imports: track 2 never loads evalutils (about 1.4 s)
            from app.algorithm import run
        else:
            from app.atypical import run_atypical
    except KeyboardInterrupt:
        print("error: interrupted while starting; nothing was written", file=sys.stderr, flush=True)
        return 128 + signal.SIGINT  # as `app.algorithm.run` answers it
    if task == "detection":
        args.input = DEFAULT_INPUT_DIR if args.input is None else args.input
        return run(args, DEFAULT_OUTPUT_FILE)
    from app.console import say

    extras = [option for option in ("output_dir", "overlay", "overlay_dir") if getattr(args, option) is not None]
    if extras:
        say(f"error: --{extras[0].replace('_', '-')} is for the detection task; --task atypical writes one --output")
        return 1
    input_dir = ATYPICAL_INPUT_DIR if args.input is None else args.input
    return run_atypical(input_dir, args.output or ATYPICAL_OUTPUT_FILE, args.bundle, args.device)


def pick_task(args: argparse.Namespace) -> str:
    """--task as given; without it, detection unless in container mode (no --input) only track 2's folder exists."""
    if args.task is not None:
        return args.task
    if args.input is None and not DEFAULT_INPUT_DIR.exists() and ATYPICAL_INPUT_DIR.exists():
        return "atypical"
    return "detection"


def exit_now(code: int) -> None:
    """Flush and leave without the interpreter's clean-up (unloading torch, pandas and scikit-learn costs most of a
    second: docs/performance.md): by then every output file is written, closed and renamed into place. A closed or
    broken stdout/stderr is not an error then."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
