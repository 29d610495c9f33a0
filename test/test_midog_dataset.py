"""The MIDOG reader on the real annotation files, on a tiny image folder, and on a deliberately broken dataset."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile

from training.data.midog_dataset import (
    IMPOSTER,
    MITOTIC_FIGURE,
    DatasetError,
    load_dataset,
    read_spacing_mm,
    read_window,
    unlisted_images,
)

ANNOTATIONS_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "midog-annotations"
MIDOG2021 = ANNOTATIONS_DIR / "MIDOG.json"
MIDOGPP = ANNOTATIONS_DIR / "MIDOG++.json"
needs_annotations = pytest.mark.skipif(
    not MIDOGPP.is_file() or not MIDOG2021.is_file(),
    reason=f"real MIDOG annotation files not found in {ANNOTATIONS_DIR} (shared data folder next to the repo)",
)


@needs_annotations
def test_midog2021_counts_and_scanner_ranges():
    dataset = load_dataset(MIDOG2021)
    assert dataset.flavour == "midog2021"
    assert len(dataset) == 200
    assert dataset.totals() == (1721, 2714)
    # Scanner by id range, checked against the file: ids 151-200 (Leica GT450) carry no annotation at all.
    assert dataset.counts("domain") == {
        "human breast cancer / Aperio CS2": (50, 688, 924),
        "human breast cancer / Hamamatsu S360": (50, 582, 1066),
        "human breast cancer / Hamamatsu XR": (50, 451, 724),
        "human breast cancer / Leica GT450": (50, 0, 0),
    }
    assert [r.image_id for r in dataset.images if not r.labeled] == list(range(151, 201))
    first = dataset.by_id(1).annotations[0]
    assert (first.x_px, first.y_px, first.label) == (4361.0, 371.0, IMPOSTER)


@needs_annotations
def test_midogpp_counts_per_tumour_type(caplog):
    with caplog.at_level(logging.WARNING):
        dataset = load_dataset(MIDOGPP)
    assert dataset.flavour == "midog++"
    assert len(dataset) == 553
    assert dataset.totals() == (11937, 14349)
    assert dataset.counts("tumor_type") == {
        "canine cutaneous mast cell tumor": (50, 2327, 1366),
        "canine lung cancer": (44, 855, 951),
        "canine lymphosarcoma": (55, 3959, 4257),
        "canine soft tissue sarcoma": (100, 1286, 2375),
        "human breast cancer": (200, 1721, 2714),
        "human melanoma": (49, 1150, 925),
        "human neuroendocrine tumor": (55, 639, 1761),
    }
    # Two real cells cut by the image border have centres 2 and 5 px outside: kept, with a warning.
    assert sum("outside the image" in message for message in caplog.messages) == 2
    assert len(dataset.labeled_images) == 503
    assert all(len(r.annotations) == 0 for r in dataset.images if not r.labeled)


@needs_annotations
def test_midogpp_breast_equals_midog2021():
    """MIDOG++ re-publishes the MIDOG 2021 images 1-200 with the same boxes and categories."""
    old, new = load_dataset(MIDOG2021), load_dataset(MIDOGPP)
    for image_id in (1, 77, 140):
        assert old.by_id(image_id).annotations == new.by_id(image_id).annotations


@needs_annotations
def test_scanner_csv_gives_domains(tmp_path):
    dataset = load_dataset(MIDOGPP, scanner_csv=ANNOTATIONS_DIR / "datasets_xvalidation.csv")
    assert dataset.by_id(60).domain == "human breast cancer / Hamamatsu S360"
    assert dataset.by_id(300).domain == "canine cutaneous mast cell tumor / Aperio CS2"


def test_midog2022_id_ranges(tmp_path):
    images = [
        {"file_name": f"{i:03d}.tiff", "id": i, "width": 100, "height": 80}
        for i in (1, 60, 120, 151, 194, 195, 250, 300, 355)
    ]
    payload = {
        "info": {"description": "MIDOG 2022 - Training set"},
        "licenses": [],
        "images": images,
        "categories": [{"id": 1, "name": "mitotic figure"}, {"id": 2, "name": "not mitotic figure"}],
        "annotations": [],
    }
    path = tmp_path / "MIDOG2022_training.json"
    path.write_text(json.dumps(payload))
    dataset = load_dataset(path)
    assert dataset.flavour == "midog2022"
    domains = {r.image_id: (r.domain, r.labeled) for r in dataset.images}
    assert domains == {
        1: ("human breast cancer / Hamamatsu XR", True),
        60: ("human breast cancer / Hamamatsu S360", True),
        120: ("human breast cancer / Aperio CS2", True),
        151: ("canine lung cancer / 3D Histech", True),
        194: ("canine lung cancer / 3D Histech", True),
        195: ("canine lymphoma / 3D Histech", True),
        250: ("canine cutaneous mast cell tumor / Aperio CS2", True),
        300: ("human neuroendocrine tumor / Hamamatsu XR", True),
        355: ("human melanoma / Hamamatsu XR", False),
    }


def _write_dataset(folder: Path, image_ids=(1, 2)) -> Path:
    rng = np.random.default_rng(0)
    images = []
    for image_id in image_ids:
        pixels = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
        tifffile.imwrite(
            folder / f"{image_id:03d}.tiff",
            pixels,
            photometric="rgb",
            tile=(128, 128),
            compression="zlib",
            resolution=(40000, 40000),
            resolutionunit="CENTIMETER",
        )
        images.append({"file_name": f"{image_id:03d}.tiff", "id": image_id, "width": 400, "height": 300})
    annotations = [
        {"bbox": [75, 75, 125, 125], "category_id": 1, "image_id": 1, "id": 1},
        {"bbox": [175, 25, 225, 75], "category_id": 2, "image_id": 1, "id": 2},
        {"bbox": [300, 200, 350, 250], "category_id": 1, "image_id": 2, "id": 3},
    ]
    payload = {
        "info": {"description": "test"},
        "licenses": [],
        "images": images,
        "categories": [{"id": 1, "name": "mitotic figure"}, {"id": 2, "name": "not mitotic figure"}],
        "annotations": annotations,
    }
    path = folder / "dataset.json"
    path.write_text(json.dumps(payload))
    return path


def test_images_are_read_lazily_by_window_with_reflection(tmp_path):
    dataset = load_dataset(_write_dataset(tmp_path), images_dir=tmp_path, check_image_sizes=True)
    record = dataset.by_id(1)
    assert record.spacing_mm == (0.00025, 0.00025)
    assert [(a.x_px, a.y_px, a.label) for a in record.annotations] == [(100, 100, MITOTIC_FIGURE), (200, 50, IMPOSTER)]
    full = tifffile.imread(record.path)
    window = read_window(record, 150, 100, 64, 48)
    assert window.dtype == np.uint8 and window.shape == (48, 64, 3)
    np.testing.assert_array_equal(window, full[100:148, 150:214])
    # Leaving the image at the top-left corner: mirrored without repeating the edge pixel (numpy "reflect").
    corner = read_window(record, -10, -5, 30, 20)
    np.testing.assert_array_equal(corner, np.pad(full, ((5, 0), (10, 0), (0, 0)), mode="reflect")[:20, :30])
    white = read_window(record, 390, 290, 20, 20, padding="constant")
    np.testing.assert_array_equal(white[:10, :10], full[290:, 390:])
    assert (white[10:, :] == 255).all() and (white[:, 10:] == 255).all()


def test_spacing_defaults_with_warning_when_tags_missing(tmp_path, caplog):
    path = tmp_path / "untagged.tiff"
    tifffile.imwrite(path, np.zeros((10, 10, 3), np.uint8), photometric="rgb")
    with caplog.at_level(logging.WARNING):
        assert read_spacing_mm(path) == (0.00025, 0.00025)
    assert "assuming 0.25 um/px" in caplog.text


def test_unlisted_images_are_the_unlabeled_ones(tmp_path):
    path = _write_dataset(tmp_path, image_ids=(1, 2, 3))
    payload = json.loads(path.read_text())
    payload["images"] = payload["images"][:2]
    path.write_text(json.dumps(payload))
    dataset = load_dataset(path, images_dir=tmp_path)
    assert [p.name for p in unlisted_images(dataset)] == ["003.tiff"]


def test_every_problem_is_reported_at_once(tmp_path):
    path = _write_dataset(tmp_path)
    payload = json.loads(path.read_text())
    payload["images"].append({"file_name": "003.tiff", "id": 3, "width": 400, "height": 300})  # file missing
    payload["images"].append({"file_name": "004.tiff", "id": 2, "width": 400, "height": 300})  # duplicate id
    payload["annotations"] += [
        {"bbox": [500, 100, 550, 150], "category_id": 1, "image_id": 1, "id": 4},  # centre outside the image
        {"bbox": [10, 10, 60, 60], "category_id": 3, "image_id": 1, "id": 5},  # unknown category
        {"bbox": [10, 10, 60, 60], "category_id": 2, "image_id": 1, "id": 1},  # duplicate annotation id
        {"bbox": [60, 10, 10, 60], "category_id": 1, "image_id": 2, "id": 6},  # x2 < x1
    ]
    path.write_text(json.dumps(payload))
    with pytest.raises(DatasetError) as caught:
        load_dataset(path, images_dir=tmp_path)
    problems = caught.value.problems
    message = str(caught.value)
    expected = [
        "image id 3 (003.tiff): image file missing",
        "duplicate image id 2",
        "annotation id 4 (image id 1): centre (525, 125) px outside",
        "unknown category_id 3",
        "duplicate annotation id 1",
        "does not have x2 > x1",
    ]
    for fragment in expected:
        assert any(fragment in problem for problem in problems), fragment
        assert fragment in message
    assert len(problems) == len(expected)
    assert message.startswith(f"{len(expected)} problem(s)")
    # Without an image folder the missing file is not a problem, the rest still is.
    with pytest.raises(DatasetError) as caught:
        load_dataset(path)
    assert len(caught.value.problems) == len(expected) - 1


def test_image_entry_problems_are_one_line_each(tmp_path):
    """Each check names the entry in one line; an image with a problem of its file keeps its annotations checked."""
    path = _write_dataset(tmp_path)
    payload = json.loads(path.read_text())
    payload["images"][1]["height"] = 301  # the TIFF is 400x300
    payload["images"].append({"file_name": "001.tiff", "id": 9, "width": 400, "height": 300})  # same file as id 1
    payload["images"].append({"file_name": "010.tiff", "id": "10", "width": 400, "height": 300})
    payload["images"].append({"file_name": "011.tiff", "id": 11, "width": 0, "height": 300})
    payload["annotations"].append({"bbox": [10, 10, 60, 60], "category_id": 1, "image_id": 11, "id": 7})
    path.write_text(json.dumps(payload))
    with pytest.raises(DatasetError) as caught:
        load_dataset(path, images_dir=tmp_path, check_image_sizes=True)
    assert caught.value.problems == [
        "image id 2 (002.tiff): file is 400x300 px, JSON says 400x301 px",
        "duplicate file name 001.tiff (image ids 1 and 9)",
        "images[3]: image id '10' is not an integer",
        "image id 11 (011.tiff): width/height 0x300 are not positive integers",
        "annotation id 7 (image id 11): refers to unknown image id 11",
    ]
    assert all("\n" not in problem for problem in caught.value.problems)
