"""The run behind `process.py`: plan the jobs, load the detector, detect every image, write its outputs.

`process.py` parses the command line and sets the threads before this module is imported (torch, evalutils and
their dependencies take seconds to import: `--help` and argument errors should not wait for them). A single image is
a batch of one with a fixed output name; the grand-challenge contract is evalutils' `DetectionAlgorithm`.
"""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

from evalutils import DetectionAlgorithm
from pandas import DataFrame

from app import preflight
from app.console import say
from app.output import multiple_points
from app.overlay import draw_overlay
from app.preflight import UsageError
from model import Detector
from model.atomic_files import write_json_atomically
from model.bundle import DEFAULT_BUNDLE_DIR, BundleError
from model.image_io import InputImageError, read_rgb
from model.progress import progress_bar
from model.spacing import describe_um

logger = logging.getLogger("process")


def plural(count: int, word: str) -> str:
    """'1 mitotic figure', '2 mitotic figures'."""
    return f"{count} {word}" + ("" if count == 1 else "s")


def detect_file(detector: Detector, job: preflight.Job) -> dict:
    """One image file -> the platform's "Multiple points" document (and the job's overlay PNG, if any)."""
    image_rgb, header = read_rgb(job.image, job.header)
    name = job.image.name
    logger.info("%s: %dx%d px at %s", name, header.width_px, header.height_px, describe_um(header.spacing_mm))
    try:
        detections = detector.detect(image_rgb, header.spacing_mm, header.origin_mm, progress=True, source=name)
    except ValueError as error:  # a resolution the detector cannot serve (checked from the header beforehand)
        raise InputImageError(f"{name}: {error}") from None
    logger.info(
        "%s: %s among %s",
        name,
        plural(int(detections.is_mitosis.sum()), "mitotic figure"),
        plural(len(detections.probability), "candidate"),
    )
    if job.overlay is not None:
        try:
            draw_overlay(
                image_rgb,
                detections.xy_px,
                detections.is_mitosis,
                detections.probability,
                header.spacing_mm,
                job.overlay,
                detector.bundle.candidate_floor,
            )
        except OSError as error:  # checked beforehand (`app.preflight`); a full disk can still stop it
            raise UsageError(f"cannot write --overlay {job.overlay}: {error.strerror or error}") from None
    return multiple_points(detections.xy_mm, detections.probability, detections.is_mitosis)


def write_output(document: dict, path: Path) -> None:
    """`write_json_atomically`, with a failure the checks could not foresee (disk full) as one line."""
    try:
        write_json_atomically(document, path)
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror or error}") from None


class MitosisDetection(DetectionAlgorithm):
    """evalutils' algorithm contract (load, validate, process the cases, save) over the jobs `app.preflight`
    planned: one image and `/output/mitotic-figures.json` on grand-challenge, or a folder of images locally.

    The images were found and checked before the models loaded, so `load` takes the plan as it is and `validate` has
    nothing left to find. Each case writes its own output as soon as it is done (atomically): a later failure never
    loses an earlier result. An image that cannot be read is reported in one line and the others go on."""

    def __init__(self, detector: Detector, jobs: list[preflight.Job]):
        super().__init__(input_path=jobs[0].image.parent, output_file=jobs[0].output, validators={})
        self.detector = detector
        self.jobs = jobs
        self.failures = 0

    def load(self) -> None:
        self._cases["input_image"] = DataFrame({"path": [job.image for job in self.jobs]})

    def process_cases(self, file_loader_key: str | None = None) -> None:
        bar = progress_bar(self.jobs, stage="images", unit="image", show=len(self.jobs) > 1)
        self._case_results = [self.process_case(idx=idx, case=job) for idx, job in enumerate(bar)]

    def process_case(self, *, idx: int, case: preflight.Job) -> bool:
        try:
            preflight.check_output_file(case.output)  # batch names come from the images: one may be too long
            write_output(self.predict(input_image=case), case.output)
        except (InputImageError, UsageError) as error:
            self.failures += 1
            say(f"error: {error}")
            return False
        return True

    def predict(self, *, input_image: preflight.Job) -> dict:
        """The detection of one case: its "Multiple points" document."""
        return detect_file(self.detector, input_image)

    def save(self) -> None:  # every case saved its own output
        if len(self.jobs) > 1:
            written = len(self.jobs) - self.failures
            logger.info("%d of %s written to %s", written, plural(len(self.jobs), "image"), self.jobs[0].output.parent)
        elif not self.failures:
            extra = f" (overlay {self.jobs[0].overlay})" if self.jobs[0].overlay is not None else ""
            logger.info("written to %s%s", self.jobs[0].output, extra)


def plan(args: argparse.Namespace, default_output: Path) -> list[preflight.Job]:
    """The jobs the command line asks for, checked before any model loads (`app.preflight`)."""
    if args.output_dir is not None:
        if args.output is not None or args.overlay is not None:
            raise UsageError(
                "batch mode (--output-dir) writes one file per image: use --overlay-dir, not --output or --overlay"
            )
        return preflight.plan_batch(args.input, args.output_dir, args.overlay_dir)
    if args.overlay_dir is not None:
        raise UsageError("--overlay-dir is for batch mode (--output-dir); use --overlay FILE.png")
    return [preflight.plan_single(args.input, args.output or default_output, args.overlay)]


def run(args: argparse.Namespace, default_output: Path) -> int:
    """Plan, check, load, detect and write; every failure the user can act on is one `error:` line and exit 1."""
    try:
        jobs = plan(args, default_output)
        preflight.check_device(args.device, args.precision)
        use_screen = False if args.no_screen else None  # None: the screen on CPUs, the exact path on GPUs
        bundle_dir = args.bundle or DEFAULT_BUNDLE_DIR
        detector = Detector(
            bundle_dir,
            device=args.device,
            precision=args.precision,
            use_screen=use_screen,
            verifier=not args.no_verifier,
            atypical=False,  # track 1's output has no place for it (the platform's schema allows no extra key)
        )
        algorithm = MitosisDetection(detector, jobs)
        algorithm.process()
    except (InputImageError, BundleError, UsageError) as error:
        say(f"error: {error}")
        return 1
    except KeyboardInterrupt:  # outputs are written atomically: what was finished is complete, the rest absent
        say("error: interrupted; images finished before that have their output, the others none")
        return 128 + signal.SIGINT
    return 1 if algorithm.failures else 0
