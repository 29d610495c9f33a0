"""Deterministic train/validation split of MIDOG images, stratified by domain and by mitotic-figure count.

Why: the method keeps the weights with the lowest validation loss and tunes its detection threshold on validation
F1 (paper: 283 training / 71 validation images, 7,588 / 1,913 mitotic figures). A validation set that misses a
domain, or holds the few mitosis-rich lymphoma images, biases both choices. So the split is made per domain (tumour
type and scanner): within a domain, images are sorted by their number of mitotic figures (ties in a seeded random
order) cut into consecutive blocks of ``1 / validation_fraction`` images (block borders at a seeded random offset, i.e.
systematic sampling), and from each block the image goes to validation that keeps the domain's running share of
mitotic figures closest to the target. Each domain is then ~80/20 by images *and* by mitotic figures.

Example::

    python -m training.data.split MIDOG2022_training.json --out runs/split.json --seed 0
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import operator
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.command_line import command_parser
from training.data.midog_dataset import ImageRecord, load_dataset

VALIDATION_FRACTION = 0.2
"""Share of every domain's images (and of the real data's crop groups and MITOS fields) held out for validation."""

__all__ = ["Split", "get_args_parser", "main", "split_images"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """Train and validation images (labelled ones only); ``unlabeled`` keeps the rest for semi-supervised use."""

    train: list[ImageRecord]
    validation: list[ImageRecord]
    unlabeled: list[ImageRecord]
    seed: int
    validation_fraction: float

    def ids(self) -> dict[str, list[int]]:
        """Image ids per part, sorted: the form written to disk."""
        return {
            "train": sorted(r.image_id for r in self.train),
            "validation": sorted(r.image_id for r in self.validation),
            "unlabeled": sorted(r.image_id for r in self.unlabeled),
        }


def split_images(
    images: Sequence[ImageRecord], validation_fraction: float = VALIDATION_FRACTION, seed: int = 0
) -> Split:
    """Split images into train / validation, stratified by ``domain`` and mitotic-figure count.

    Parameters
    ----------
    images : records from `training.data.midog_dataset.load_dataset`; unlabelled images go to ``Split.unlabeled``.
    validation_fraction : share of each domain's images that go to validation, in (0, 1).
    seed : the same seed and images always give the same split (independent of the input order).

    Returns
    -------
    Split whose parts are sorted by image id.
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    rng = np.random.default_rng(seed)
    by_domain: dict[str, list[ImageRecord]] = defaultdict(list)
    unlabeled: list[ImageRecord] = []
    for record in images:
        (by_domain[record.domain] if record.labeled else unlabeled).append(record)
    step = 1.0 / validation_fraction
    train: list[ImageRecord] = []
    validation: list[ImageRecord] = []
    for domain in sorted(by_domain):
        members = sorted(by_domain[domain], key=lambda record: record.image_id)
        tie_break = rng.permutation(len(members))
        # Most mitotic figures first; ties in seeded random order (stable sort keeps the permutation's order).
        order = sorted(range(len(members)), key=lambda i: (-members[i].n_mitotic_figures, tie_break[i]))
        offset = rng.uniform(0.0, step)
        # Systematic sampling decides how many images each block of consecutive ranks gives to validation: block k
        # ends where the k-th multiple of `step` (shifted by offset) falls, so every block holds one pick.
        block_of = [math.floor((rank + offset) / step) for rank in range(len(order))]
        total_mf = validation_mf = 0
        for block in sorted(set(block_of)):
            ranks = [rank for rank in range(len(order)) if block_of[rank] == block]
            block_members = [members[order[rank]] for rank in ranks]
            total_mf += sum(record.n_mitotic_figures for record in block_members)
            has_pick = block < math.floor((len(order) - 1 + offset) / step) or (
                math.floor((ranks[-1] + 1 + offset) / step) > block
            )
            chosen = -1
            if has_pick:
                # Pick the member that keeps this domain's validation share of mitotic figures closest to the target
                # (first one wins ties: the seeded tie-break order).
                errors = [
                    abs(validation_mf + r.n_mitotic_figures - validation_fraction * total_mf) for r in block_members
                ]
                chosen = int(np.argmin(errors))
                validation_mf += block_members[chosen].n_mitotic_figures
            for position, record in enumerate(block_members):
                (validation if position == chosen else train).append(record)
    key = operator.attrgetter("image_id")
    return Split(
        sorted(train, key=key), sorted(validation, key=key), sorted(unlabeled, key=key), seed, validation_fraction
    )


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = command_parser("training.data.split", "Stratified train/validation split of a MIDOG dataset.", add_help)
    parser.add_argument("annotations", type=Path, help="annotation JSON of the dataset")
    parser.add_argument("--out", type=Path, required=True, help="output JSON with image ids per part")
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=VALIDATION_FRACTION,
        help=f"share of every domain's images used for validation (default: {VALIDATION_FRACTION})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the tie-breaking and offsets (default: 0)")
    parser.add_argument(
        "--scanner-csv",
        type=Path,
        default=None,
        help="datasets_xvalidation.csv-style scanner per image id (default: none)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    dataset = load_dataset(args.annotations, scanner_csv=args.scanner_csv)
    split = split_images(dataset.images, args.validation_fraction, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "annotations": str(args.annotations),
        "seed": args.seed,
        "validation_fraction": args.validation_fraction,
        **split.ids(),
    }
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    for name, part in (("train", split.train), ("validation", split.validation)):
        logger.info("%s: %d images, %d mitotic figures", name, len(part), sum(r.n_mitotic_figures for r in part))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
