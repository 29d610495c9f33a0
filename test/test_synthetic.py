"""The synthetic generator: MIDOG 2022 layout read back by independent readers, determinism, reader round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import tifffile

from training.data.midog_dataset import load_dataset, read_window, unlisted_images
from training.data.synthetic import ANNOTATION_FILE, DOMAIN_FILE, generate_dataset, main, write_preview

SIZE = (640, 512)  # width, height in pixels: small enough for a fast test, big enough for several cells


def _generate(folder: Path, seed: int = 3) -> Path:
    argv = ["--out", str(folder), "--images", "4", "--seed", str(seed), "--size", str(SIZE[0]), str(SIZE[1])]
    assert main([*argv, "--unlabeled", "1", "--no-progress"]) == 0
    return folder / ANNOTATION_FILE


def test_output_is_byte_identical_for_a_seed(tmp_path):
    first, second = _generate(tmp_path / "a").parent, _generate(tmp_path / "b").parent
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert names == ["001.tiff", "002.tiff", "003.tiff", "004.tiff", "005.tiff", ANNOTATION_FILE, DOMAIN_FILE]
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    other = _generate(tmp_path / "c", seed=4).parent
    assert (other / "001.tiff").read_bytes() != (first / "001.tiff").read_bytes()


def test_midog_layout_read_by_independent_readers(tmp_path):
    annotation_path = _generate(tmp_path)
    payload = json.loads(annotation_path.read_text())
    assert set(payload) == {"info", "licenses", "images", "categories", "annotations"}
    assert payload["categories"] == [{"id": 1, "name": "mitotic figure"}, {"id": 2, "name": "not mitotic figure"}]
    assert [image["file_name"] for image in payload["images"]] == ["001.tiff", "002.tiff", "003.tiff", "004.tiff"]
    sizes = {image["id"]: (image["width"], image["height"]) for image in payload["images"]}
    for annotation in payload["annotations"]:
        assert set(annotation) == {"bbox", "category_id", "image_id", "id"}
        x1, y1, x2, y2 = annotation["bbox"]
        assert (x2 - x1, y2 - y1) == (50, 50)
        width, height = sizes[annotation["image_id"]]
        assert 0 <= x1 and x2 <= width and 0 <= y1 and y2 <= height
    assert {annotation["category_id"] for annotation in payload["annotations"]} == {1, 2}
    assert len({annotation["id"] for annotation in payload["annotations"]}) == len(payload["annotations"])
    for image_id in (1, 5):
        path = tmp_path / f"{image_id:03d}.tiff"
        pixels = tifffile.imread(path)
        assert pixels.dtype == np.uint8 and pixels.shape == (SIZE[1], SIZE[0], 3)
        with tifffile.TiffFile(path) as tiff:
            tags = tiff.pages.first.tags
            assert tags["XResolution"].value == (40000, 1) and tags["YResolution"].value == (40000, 1)
            assert tags["ResolutionUnit"].value == 3  # centimetre
            assert "DateTime" not in tags and "Software" not in tags
        image = sitk.ReadImage(str(path))
        assert np.allclose(image.GetSpacing(), (0.00025, 0.00025))
        assert image.GetSize() == SIZE


def test_reader_round_trip_and_unlabeled_images(tmp_path):
    annotation_path = _generate(tmp_path)
    dataset = load_dataset(
        annotation_path, images_dir=tmp_path, scanner_csv=tmp_path / DOMAIN_FILE, check_image_sizes=True
    )
    assert len(dataset) == 4
    assert [p.name for p in unlisted_images(dataset)] == ["005.tiff"]
    assert len({record.domain for record in dataset.images}) >= 3
    record = next(r for r in dataset.images if r.n_mitotic_figures)
    assert record.spacing_mm == (0.00025, 0.00025)
    centre = record.centres_px(1)[0]
    window = read_window(record, int(centre[0]) - 39, int(centre[1]) - 39, 78, 78)
    # A mitotic figure is dark in hematoxylin: the window centre is darker than the image's median.
    assert window[34:44, 34:44].min() < np.median(tifffile.imread(record.path))


def test_classes_overlap_in_intensity(tmp_path):
    """Colour alone must not separate the classes: darkest-pixel statistics of mitoses and imposters overlap."""
    generate_dataset(tmp_path, 6, seed=1, width_px=1024, height_px=1024, progress=False)
    dataset = load_dataset(tmp_path / ANNOTATION_FILE, images_dir=tmp_path)
    darkest = {1: [], 2: []}
    for record in dataset.images:
        pixels = tifffile.imread(record.path).astype(np.float32).mean(axis=-1)
        for annotation in record.annotations:
            x, y = int(annotation.x_px), int(annotation.y_px)
            darkest[annotation.label].append(np.percentile(pixels[y - 12 : y + 13, x - 12 : x + 13], 5))
    mitoses, imposters = np.asarray(darkest[1]), np.asarray(darkest[2])
    assert len(mitoses) >= 10 and len(imposters) >= 10
    # Ranges overlap substantially: each class's median lies inside the other's 10-90 percentile range.
    assert np.percentile(imposters, 10) < np.median(mitoses) < np.percentile(imposters, 90)
    assert np.percentile(mitoses, 10) < np.median(imposters) < np.percentile(mitoses, 90)


def test_preview_png(tmp_path):
    _generate(tmp_path)
    write_preview(tmp_path, tmp_path / "preview.png", n_crops=3, crop_px=256)
    assert (tmp_path / "preview.png").stat().st_size < 500_000
