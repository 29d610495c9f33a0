"""What the two dataset makers share (`training.data.dataset_making`): spaced positions, the MIDOG annotation
file."""

from __future__ import annotations

import itertools
import json

import numpy as np

from training.data.dataset_making import midog_image_entry, spaced_positions, write_midog_json
from training.data.midog_dataset import BOX_SIZE_PX, IMPOSTER, MITOTIC_FIGURE, load_dataset


def test_spaced_positions_keeps_the_distance_to_each_other_and_to_taken():
    rng = np.random.default_rng(0)
    candidates = [tuple(int(v) for v in rng.integers(0, 200, 2)) for _ in range(500)]
    taken = [(100, 100)]
    chosen = spaced_positions(candidates, 30, 25.0, taken)
    assert 5 < len(chosen) <= 30
    points = np.array(chosen + taken, dtype=float)
    distances = np.hypot(*(points[:, None, :] - points[None, :, :]).transpose(2, 0, 1))
    assert distances[~np.eye(len(points), dtype=bool)].min() >= 25.0
    assert chosen[0] == next(c for c in candidates if np.hypot(c[0] - 100, c[1] - 100) >= 25.0)  # first come


def test_spaced_positions_stops_drawing_once_it_has_enough():
    """A seeded generator's later draws must not depend on candidates that were never needed."""
    pulled = []

    def lazy():
        for index in itertools.count():
            pulled.append(index)
            yield (index * 10, 0)

    assert spaced_positions(lazy(), 3, 5.0) == [(0, 0), (10, 0), (20, 0)]
    assert pulled == [0, 1, 2]
    assert spaced_positions(lazy(), 0, 5.0) == [] and pulled == [0, 1, 2]


def test_written_annotation_file_reads_back(tmp_path):
    images = [
        midog_image_entry(1, "001.tiff", 640, 480, "canine lymphoma"),
        midog_image_entry(2, "002.tiff", 64, 64, "x"),
    ]
    cells = [(1, 100, 200, MITOTIC_FIGURE), (1, 300, 50, IMPOSTER), (2, 30, 31, MITOTIC_FIGURE)]
    path = write_midog_json(tmp_path / "a.json", {"description": "test"}, {"name": "CC0", "url": ""}, images, cells)
    payload = json.loads(path.read_text())
    assert [a["id"] for a in payload["annotations"]] == [1, 2, 3] and payload["licenses"][0]["id"] == 1
    assert payload["annotations"][0]["bbox"] == [100 - BOX_SIZE_PX // 2, 175, 125, 225]
    dataset = load_dataset(path)
    first = dataset.images[0]
    assert (first.file_name, first.width_px, first.height_px, first.tumor_type) == (
        "001.tiff",
        640,
        480,
        "canine lymphoma",
    )
    centres = sorted((float(a.x_px), float(a.y_px), a.label) for a in first.annotations)
    assert centres == [(100.0, 200.0, MITOTIC_FIGURE), (300.0, 50.0, IMPOSTER)]
