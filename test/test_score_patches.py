"""model.score_patches: one CSV row per readable patch, reflection padding for small ones."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from model import score_patches


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


@pytest.mark.parametrize("size", [64, 78, 91])
def test_centre_window_is_receptive_field_sized(size):
    from model.inference import centre_window

    assert centre_window(np.zeros((size, size, 3), np.uint8)).shape == (78, 78, 3)
