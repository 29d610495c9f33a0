"""Hard negatives: windows of mitosis-free training tissue that the current models score highest.

    python -m training.mine --bundle model/weights --out runs/hnm/hard_negatives.npz --min-probability 0.5

Only the two mitosis-free canine tiles are mined (their training part, left 80%): the unlabeled MITOS 2012 fields
hold unannotated mitoses, and the highest-scoring "negatives" there would often be real mitoses. Every map cell whose
probability (the higher of the two policy models: anything either model fires on) reaches `--min-probability` becomes
a hard-negative centre; `training.train --hard-negatives` then draws part of each batch's negatives from them.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from model.bundle import DEFAULT_BUNDLE_DIR
from model.geometry import pixel_from_map_index
from model.inference import Detector
from training.sampling import REAL_DATA_DIR, load_negative_images

logger = logging.getLogger("training.mine")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, add_help=add_help, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--bundle", type=Path, default=DEFAULT_BUNDLE_DIR, help="models to mine with (default: shipped)"
    )
    parser.add_argument("--out", type=Path, required=True, help="npz to write (image, row_px, col_px, probability)")
    parser.add_argument("--data", type=Path, default=REAL_DATA_DIR, help=f"real data (default: {REAL_DATA_DIR})")
    parser.add_argument("--min-probability", type=float, default=0.5, help="keep cells at or above (default: 0.5)")
    return parser


def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    detector = Detector(args.bundle)
    names, rows, cols, probabilities = [], [], [], []
    for image in load_negative_images(args.data, validation=False):
        if image.may_hold_mitoses:  # its highest-scoring "negatives" would often be real mitoses
            continue
        x0, x1 = image.x_range
        maps = detector.probability_maps(image.rgb[:, x0:x1], progress=True)
        score = np.maximum(maps[0], maps[1])
        cells = np.argwhere(score >= args.min_probability)
        centres = pixel_from_map_index(cells)  # (row, col) in pixels of the cropped image
        names += [image.name] * len(cells)
        rows.append(np.round(centres[:, 0]).astype(np.int64))
        cols.append(np.round(centres[:, 1]).astype(np.int64) + x0)
        probabilities.append(score[cells[:, 0], cells[:, 1]])
        logger.info("%s: %d hard negatives of %d cells", image.name, len(cells), score.size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        args.out,
        image=np.asarray(names),
        row_px=np.concatenate(rows),
        col_px=np.concatenate(cols),
        probability=np.concatenate(probabilities),
    )


if __name__ == "__main__":
    main(get_args_parser().parse_args())
