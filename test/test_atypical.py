"""Atypical mitoses (MIDOG 2025 track 2): the classifier's plumbing, the track-2 app and its bad stacks, the training
command's tiny configuration. The shipped classifier's accuracy is measured by `python -m training.atypical` (model
card), not here."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import tifffile
from conftest import REPO, sample_crops
from PIL import Image

import process
from app import atypical as track2
from model.atypical import crops_around, descriptors
from model.bundle import BundleError, load_atypical, load_networks, read_bundle


def write_stack(path, crops) -> None:
    images = [Image.fromarray(crop) for crop in crops]
    images[0].save(path, save_all=True, append_images=images[1:])


def run_track2(tmp_path, bundle_dir, *extra):
    out = tmp_path / "out" / "classification.json"
    argv = ["--task", "atypical", "--input", str(tmp_path / "in"), "--output", str(out), "--bundle", str(bundle_dir)]
    return process.main([*argv, *extra]), out


def test_crops_around_mirror_at_the_edge_like_numpy():
    image = np.arange(200 * 150 * 3, dtype=np.uint32).reshape(200, 150, 3).astype(np.uint8)
    padded = np.pad(image, ((64, 64), (64, 64), (0, 0)), mode="reflect")
    crops = crops_around(image, np.array([[0.0, 0.0], [149.0, 199.0], [70.4, 100.6]]))
    np.testing.assert_array_equal(crops[0], padded[:128, :128])
    np.testing.assert_array_equal(crops[1], padded[199 : 199 + 128, 149 : 149 + 128])
    np.testing.assert_array_equal(crops[2], padded[101 : 101 + 128, 70 : 70 + 128])


def test_descriptors_see_no_difference_between_a_crop_and_its_mirror_image(random_bundle_dir):
    """Both views are averaged, so the descriptors (and P(atypical)) of a crop and its left-right mirror agree."""
    networks = load_networks(read_bundle(random_bundle_dir), random_bundle_dir)
    crops = sample_crops(2)
    np.testing.assert_allclose(
        descriptors(networks, crops), descriptors(networks, crops[:, :, ::-1]), rtol=1e-4, atol=1e-5
    )
    with pytest.raises(ValueError, match="128, 128, 3"):
        descriptors(networks, crops[:, :64])


def test_bundle_verifies_the_atypical_head(atypical_bundle_dir, tmp_path):
    bundle = read_bundle(atypical_bundle_dir)
    networks = load_networks(bundle, atypical_bundle_dir)
    classifier = load_atypical(bundle, networks, atypical_bundle_dir)
    assert classifier is not None and bundle.atypical_extra == {"note": "random head for tests"}
    tampered = tmp_path / "tampered"
    shutil.copytree(atypical_bundle_dir, tampered)
    with open(tampered / bundle.atypical.file, "r+b") as stream:
        stream.seek(-8, 2)
        stream.write(b"\x00" * 8)
    with pytest.raises(BundleError, match="checksum"):
        load_atypical(read_bundle(tampered), networks, tampered)


def test_track_two_writes_one_entry_per_page_in_order(atypical_bundle_dir, tmp_path):
    (tmp_path / "in").mkdir()
    crops = sample_crops(5)
    write_stack(tmp_path / "in" / "stack.tiff", crops)
    code, out = run_track2(tmp_path, atypical_bundle_dir)
    assert code == 0
    document = json.loads(out.read_text())
    bundle = read_bundle(atypical_bundle_dir)
    classifier = load_atypical(bundle, load_networks(bundle, atypical_bundle_dir), atypical_bundle_dir)
    expected = classifier.probability(crops)
    assert [set(entry) for entry in document] == [{"class", "confidence"}] * 5
    np.testing.assert_allclose([entry["confidence"] for entry in document], expected, atol=1e-6)
    assert [entry["class"] for entry in document] == [
        "atypical" if p >= bundle.atypical.threshold else "normal" for p in expected
    ]
    assert {entry["class"] for entry in document} == {"atypical", "normal"}  # the threshold splits them


def tiff_pages(folder, pages) -> None:
    with tifffile.TiffWriter(folder / "stack.tiff") as tiff:
        for page in pages:
            tiff.write(page, photometric="rgb" if page.ndim == 3 else "minisblack")


def stack_with_a_corrupt_page(folder) -> None:
    """Three deflate pages, the second's compressed pixels overwritten: the headers read, the pixels do not."""
    with tifffile.TiffWriter(folder / "stack.tiff") as tiff:
        for crop in sample_crops(3):
            tiff.write(crop, photometric="rgb", compression="zlib")
    with tifffile.TiffFile(folder / "stack.tiff") as tiff:
        offset, count = tiff.pages[1].dataoffsets[0], tiff.pages[1].databytecounts[0]
    with open(folder / "stack.tiff", "r+b") as stream:
        stream.seek(offset)
        stream.write(b"\xff" * count)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: write_stack(d / "stack.tiff", [np.zeros((96, 96, 3), np.uint8)]), "96x96 px; expected 128x128"),
        (lambda d: tiff_pages(d, [np.zeros((128, 128), np.uint8)]), "is grey"),
        (lambda d: tiff_pages(d, [np.zeros((128, 128), np.uint16)]), "16-bit"),
        (lambda d: [write_stack(d / n, sample_crops(1)) for n in ("a.tif", "b.tiff")], "2 TIFF stacks"),
        (lambda d: (d / "notes.txt").write_text("x"), "no .tif/.tiff stack"),
        (lambda d: (d / "stack.tiff").write_bytes(b"II*\x00garbage"), "not a readable TIFF stack"),
        (stack_with_a_corrupt_page, "page 2 cannot be decoded"),
    ],
    ids=["other-size", "grey", "16-bit", "two-stacks", "no-stack", "not-a-tiff", "corrupt-page"],
)
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")  # Pillow on the garbage TIFF: expected
def test_bad_stacks_are_one_line_and_write_nothing(atypical_bundle_dir, tmp_path, capsys, make, message):
    (tmp_path / "in").mkdir()
    make(tmp_path / "in")
    code, out = run_track2(tmp_path, atypical_bundle_dir)
    error = capsys.readouterr().err.strip()
    assert code == 1 and len(error.splitlines()) == 1 and error.startswith("error: "), error
    assert message in error and "Traceback" not in error
    assert not out.exists()


def test_a_bundle_without_the_classifier_is_one_line(random_bundle_dir, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    write_stack(tmp_path / "in" / "stack.tiff", sample_crops(1))
    code, out = run_track2(tmp_path, random_bundle_dir)
    assert code == 1 and "no atypical classifier" in capsys.readouterr().err and not out.exists()


def test_detection_options_are_refused_for_track_two(tmp_path, capsys):
    code, _ = run_track2(tmp_path, tmp_path, "--overlay", str(tmp_path / "o.png"))
    assert code == 1 and "--overlay is for the detection task" in capsys.readouterr().err


def test_container_mode_picks_the_task_whose_folder_exists(tmp_path, monkeypatch):
    monkeypatch.setattr(process, "DEFAULT_INPUT_DIR", tmp_path / "histopathology-roi-cropout")
    monkeypatch.setattr(process, "ATYPICAL_INPUT_DIR", tmp_path / "stacked-histopathology-roi-cropouts")
    args = process.get_args_parser().parse_args([])
    assert process.pick_task(args) == "detection"  # neither: track 1 reports its missing folder
    (tmp_path / "stacked-histopathology-roi-cropouts").mkdir()
    assert process.pick_task(args) == "atypical"
    (tmp_path / "histopathology-roi-cropout").mkdir()
    assert process.pick_task(args) == "detection"
    assert process.pick_task(process.get_args_parser().parse_args(["--task", "atypical"])) == "atypical"


def test_classification_document_is_the_platforms():
    document = track2.classification_document(np.array([0.9, 0.2]), np.array([True, False]))
    assert document == [{"class": "atypical", "confidence": 0.9}, {"class": "normal", "confidence": 0.2}]


def test_training_command_tiny_configuration(tmp_path, random_bundle_dir):
    """`python -m training.atypical` end to end on a tiny data folder of sample crops (three sources, random labels):
    the report, the figure and a bundle whose classifier loads; a second run reuses the cached descriptors."""
    from training import atypical as training_atypical

    data = tmp_path / "data"
    (data / "patches").mkdir(parents=True)
    rows = []
    for index, crop in enumerate(sample_crops(36, seed=3)):
        path = f"patches/{index}.png"
        Image.fromarray(crop).save(data / path)
        source = ("MIDOG21", "TUPAC16", "MIDOG++")[index % 3]
        slide = "" if source == "MIDOG++" else f"{index % 4}.tiff"
        rows.append([path, 1, "x", source, slide, 0, 0, ("normal", "atypical")[(index // 3) % 2], 128])
    with open(data / "patches.csv", "w", newline="") as stream:
        csv.writer(stream).writerows([["path", "label", "source", "dataset", "slide", "x", "y", "subclass", "size"]])
        csv.writer(stream).writerows(rows)
    out = tmp_path / "run"
    argv = ["--data", str(data), "--out", str(out), "--bundle", str(random_bundle_dir)]
    assert training_atypical.main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert [r["held_out"] for r in report["leave_one_source_out"]] == ["MIDOG++", "MIDOG21", "TUPAC16"]
    assert report["crops"] == 36 and (out / "atypical_validation.png").stat().st_size > 0
    bundle = read_bundle(out / "bundle")
    assert load_atypical(bundle, load_networks(bundle, out / "bundle"), out / "bundle") is not None
    cached = sorted((out / "descriptors").glob("chunk_*.npz"))
    stamps = [path.stat().st_mtime_ns for path in cached]
    assert training_atypical.main(argv) == 0
    assert [path.stat().st_mtime_ns for path in cached] == stamps  # resumed from the cache


def test_track_two_never_imports_evalutils(atypical_bundle_dir, tmp_path):
    """Only the task's own imports: evalutils (about 1.4 s of start-up) serves track 1's DetectionAlgorithm only."""
    import subprocess
    import sys

    (tmp_path / "in").mkdir()
    write_stack(tmp_path / "in" / "stack.tiff", sample_crops(1))
    code = (
        "import sys, process\n"
        f"argv = ['--task', 'atypical', '--input', {str(tmp_path / 'in')!r}, '--output', {str(tmp_path / 'o.json')!r},"
        f" '--bundle', {str(atypical_bundle_dir)!r}]\n"
        "assert process.main(argv) == 0\n"
        "print('evalutils' in sys.modules, 'app.algorithm' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]
