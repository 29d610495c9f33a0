"""app.score_patches: one CSV row per readable patch, reflection padding for small ones."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from app import score_patches


def test_scores_every_format_and_size(tmp_path, random_bundle_dir):
    rng = np.random.default_rng(0)
    patches = tmp_path / "patches"
    patches.mkdir()
    for name, size in (("a.png", 64), ("b.jpg", 78), ("c.webp", 128), ("d.tiff", 100)):
        Image.fromarray(rng.integers(0, 256, (size, size + 3, 3), dtype=np.uint8)).save(patches / name)
    out = tmp_path / "scores.csv"
    assert score_patches.main([str(patches), "--out", str(out), "--bundle", str(random_bundle_dir)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [row["path"].rsplit("/", 1)[-1] for row in rows] == ["a.png", "b.jpg", "c.webp", "d.tiff"]
    assert all(0.0 <= float(row["probability"]) <= 1.0 for row in rows)


def test_too_small_patch_is_reported(tmp_path, random_bundle_dir, capsys):
    (tmp_path / "p").mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "p" / "small.png")
    code = score_patches.main(
        [str(tmp_path / "p"), "--out", str(tmp_path / "s.csv"), "--bundle", str(random_bundle_dir)]
    )
    assert code == 1 and "smaller than 64 px" in capsys.readouterr().err


def _one_line(capsys, code: int) -> str:
    error = capsys.readouterr().err.strip()
    assert code == 1 and len(error.splitlines()) == 1 and error.startswith("error: "), error
    return error


@pytest.fixture
def no_models(monkeypatch):
    def tripwire(*args, **kwargs):
        raise AssertionError("the models were loaded before the bad input was noticed")

    monkeypatch.setattr(score_patches, "Detector", tripwire)


def _patches(tmp_path, count: int = 2):
    folder = tmp_path / "p"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    return folder


@pytest.mark.parametrize(
    "make_out, message",
    [
        (lambda tmp: tmp / "p" / "0.png", "is the input image"),  # the CSV must never replace a patch
        (lambda tmp: tmp / "p", "is a folder"),
        (lambda tmp: [(tmp / "f").write_text("x"), tmp / "f" / "s.csv"][1], "is a file, not a folder"),
    ],
)
def test_bad_out_is_one_line_before_the_models(tmp_path, capsys, no_models, make_out, message):
    folder = _patches(tmp_path)
    before = (folder / "0.png").read_bytes()
    code = score_patches.main([str(folder), "--out", str(make_out(tmp_path))])
    assert message in _one_line(capsys, code)
    assert (folder / "0.png").read_bytes() == before


@pytest.mark.parametrize(
    "argv, message",
    [
        (["", "--out", "s.csv"], "the patch folder is empty"),
        (["missing", "--out", "s.csv"], "is not a folder of patches"),
        (["p", "--out", "s.csv", "--device", "cuda:7"], "--device cuda:7"),
        (["p", "--out", "s.csv", "--spacing-um", "3"], "outside the 0.1-0.75 um/px"),
        (["p", "--out", "s.csv", "--spacing-um", "inf"], "--spacing-um inf"),
    ],
)
def test_bad_options_are_one_line_before_the_models(tmp_path, capsys, no_models, monkeypatch, argv, message):
    _patches(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert message in _one_line(capsys, score_patches.main(argv))


@pytest.mark.parametrize(
    "save, message",
    [
        (lambda path: Image.fromarray(np.full((80, 80), 40000, np.uint16)).save(path.with_suffix(".tiff")), "I;16"),
        (lambda path: Image.fromarray(np.full((80, 80), 0.5, np.float32)).save(path.with_suffix(".tiff")), "mode F"),
        (lambda path: Image.new("RGB", (5000, 80)).save(path), "larger than a patch"),
        (lambda path: path.write_bytes(b"not a png"), "cannot be read as an image"),
    ],
)
def test_unscorable_patch_is_one_line_and_the_others_are_scored(tmp_path, capsys, random_bundle_dir, save, message):
    folder = _patches(tmp_path)
    save(folder / "bad.png")
    out = tmp_path / "s.csv"
    code = score_patches.main([str(folder), "--out", str(out), "--bundle", str(random_bundle_dir)])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert code == 1 and len(errors) == 1 and message in errors[0], errors
    assert [row["path"].rsplit("/", 1)[-1] for row in csv.DictReader(out.open())] == ["0.png", "1.png"]


def test_a_failed_write_keeps_the_old_csv(tmp_path, capsys, random_bundle_dir, monkeypatch):
    folder = _patches(tmp_path)
    out = tmp_path / "s.csv"
    out.write_text("path,probability\nold,0.5\n")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(score_patches.csv, "writer", disk_full)
    code = score_patches.main([str(folder), "--out", str(out), "--bundle", str(random_bundle_dir)])
    assert "No space left on device" in _one_line(capsys, code)
    assert out.read_text() == "path,probability\nold,0.5\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p", "s.csv"]


def test_patches_at_half_the_resolution_are_resampled(tmp_path, random_bundle_dir, monkeypatch):
    seen = []
    monkeypatch.setattr(score_patches.Detector, "centre_probability", lambda self, rgb: seen.append(rgb.shape) or 0.5)
    folder = _patches(tmp_path, 1)
    out = tmp_path / "s.csv"
    code = score_patches.main(
        [str(folder), "--out", str(out), "--spacing-um", "0.5", "--bundle", str(random_bundle_dir)]
    )
    assert code == 0 and seen == [(160, 160, 3)]


@pytest.mark.parametrize("size", [64, 78, 91])
def test_centre_window_is_receptive_field_sized(size):
    from model.detector import centre_window

    assert centre_window(np.zeros((size, size, 3), np.uint8)).shape == (78, 78, 3)
