"""training.train end to end on a tiny stand-in of the real data layout: trains, keeps the best weights, resumes."""

from __future__ import annotations

import csv
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from model.architecture import ArchitectureConfig
from model.plain import PlainP4ResNet
from training import train
from training.sampling import _validation_fold


@pytest.fixture(scope="module")
def tiny_real_data(tmp_path_factory):
    """Same layout as ../shared/data/real: patches.csv + 128 px patches, a mitosis-free tile, unlabeled fields."""
    root = tmp_path_factory.mktemp("real")
    rng = np.random.default_rng(0)
    (root / "patches").mkdir()
    slides = [f"{i:03d}.tiff" for i in range(40)]
    validation = [s for s in slides if _validation_fold(f"MIDOG21/{s}")][:2]
    training = [s for s in slides if not _validation_fold(f"MIDOG21/{s}")][:6]
    rows = []
    for index, slide in enumerate(training + validation):
        path = f"patches/{index}.png"
        Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(root / path)
        rows.append({"path": path, "label": 1, "source": "test", "dataset": "MIDOG21", "slide": slide})
    with open(root / "patches.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for folder, name, size in (
        ("tiles/cmc-no-mitosis", "tile.jpg", (400, 700)),
        ("unlabeled/mitos2012", "A00.jpg", (300, 300)),
    ):
        (root / folder).mkdir(parents=True)
        Image.fromarray(rng.integers(60, 256, size + (3,), dtype=np.uint8)).save(root / folder / name)
    (root / "tiles/cmc-no-mitosis/tile.txt").write_text("1 0.5 0.5 0.01 0.01\n")
    return root


def run(out, data, iterations):
    args = train.get_args_parser().parse_args(
        [
            "--out",
            str(out),
            "--data",
            str(data),
            "--iterations",
            str(iterations),
            "--eval-every",
            "1",
            "--batch-size",
            "4",
            "--val-negatives",
            "6",
            "--threads",
            "1",
            "--precision",
            "fp32",
        ]
    )
    train.main(args)


def test_trains_exports_and_resumes_after_a_kill(tmp_path, tiny_real_data, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="training.train")
    original_save, saves = train.save_atomically, []

    def save_then_die_after_second_checkpoint(obj, path):
        original_save(obj, path)
        saves.append(path)
        if len(saves) == 2:
            raise KeyboardInterrupt  # as if the process were killed right after iteration 2

    monkeypatch.setattr(train, "save_atomically", save_then_die_after_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, tiny_real_data, iterations=3)
    monkeypatch.setattr(train, "save_atomically", original_save)
    with open(tmp_path / "metrics_A.csv") as handle:
        assert [row["iteration"] for row in csv.DictReader(handle)] == ["1", "2"]
    plain = PlainP4ResNet(ArchitectureConfig())
    plain.load_state_dict(load_file(str(tmp_path / "best_A.safetensors")), strict=True)  # exported, loadable

    run(tmp_path, tiny_real_data, iterations=3)  # the same command again: continues from the checkpoint
    assert "resumed at iteration 2" in caplog.text
    with open(tmp_path / "metrics_A.csv") as handle:
        assert [row["iteration"] for row in csv.DictReader(handle)] == ["1", "2", "3"]

    run(tmp_path / "uninterrupted", tiny_real_data, iterations=3)
    resumed = torch.load(tmp_path / "checkpoint_A.pt", weights_only=False)["model"]
    straight = torch.load(tmp_path / "uninterrupted" / "checkpoint_A.pt", weights_only=False)["model"]
    for name, tensor in straight.items():
        assert torch.allclose(resumed[name].float(), tensor.float(), atol=1e-5), name
