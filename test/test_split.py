"""The train/validation split is ~80/20 in every domain, by images and by mitotic figures, and deterministic."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.data.midog_dataset import Annotation, ImageRecord, load_dataset
from training.data.split import split_images

MIDOGPP = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "midog-annotations" / "MIDOG++.json"


def _records() -> list[ImageRecord]:
    if MIDOGPP.is_file():
        return load_dataset(MIDOGPP).images
    pytest.skip(f"real MIDOG++ annotation file not found at {MIDOGPP} (shared data folder next to the repo)")


def _mitoses(records) -> int:
    return sum(r.n_mitotic_figures for r in records)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_domain_is_80_20_by_images_and_mitoses(seed):
    records = _records()
    split = split_images(records, validation_fraction=0.2, seed=seed)
    assert not {r.image_id for r in split.train} & {r.image_id for r in split.validation}
    assert len(split.train) + len(split.validation) + len(split.unlabeled) == len(records)
    assert all(not r.labeled for r in split.unlabeled)
    for domain in {r.domain for r in records if r.labeled}:
        train = [r for r in split.train if r.domain == domain]
        validation = [r for r in split.validation if r.domain == domain]
        # Systematic sampling: the validation count is floor or ceil of 20% of the domain.
        assert abs(len(validation) - 0.2 * (len(train) + len(validation))) < 1.0, domain
        share = _mitoses(validation) / (_mitoses(train) + _mitoses(validation))
        assert 0.12 <= share <= 0.34, (domain, share)
    total_share = _mitoses(split.validation) / (_mitoses(split.train) + _mitoses(split.validation))
    assert 0.18 <= total_share <= 0.23


def test_split_is_deterministic_and_independent_of_input_order():
    records = _records()
    first = split_images(records, seed=3).ids()
    assert split_images(list(reversed(records)), seed=3).ids() == first
    assert split_images(records, seed=4).ids() != first


def test_small_domain_and_ties():
    records = [
        ImageRecord(
            f"{i:03d}.tiff",
            i,
            100,
            100,
            "t",
            "s",
            True,
            [Annotation(50.0, 50.0, 1, 100 * i + k, (25.0, 25.0, 75.0, 75.0)) for k in range(i % 3)],
        )
        for i in range(1, 11)
    ]
    split = split_images(records, validation_fraction=0.2, seed=0)
    assert len(split.validation) == 2 and len(split.train) == 8
    with pytest.raises(ValueError, match="validation_fraction"):
        split_images(records, validation_fraction=1.0)
