"""training.student: the student has model A's geometry (its map has A's cells), learns from teacher maps, and its
batches never mix crop sizes. Nothing here asserts accuracy (the real run reports it)."""

from __future__ import annotations

import numpy as np
import torch

from model.dense import probability_map, window_scorer
from model.geometry import map_shape
from training import student


def test_the_student_map_has_model_a_cells():
    net = student.StudentNet().eval()
    rgb = np.random.default_rng(0).integers(0, 255, (150, 230, 3), dtype=np.uint8)
    values = probability_map(rgb, window_scorer(net, torch.device("cpu"), None), torch.device("cpu"))
    assert values.shape == map_shape(150, 230)


def test_distillation_moves_the_student_towards_the_teacher():
    """A teacher map that is 1 on the bright half of each image and 0 elsewhere: 60 small steps must
    lower the loss against it (the student starts near 0.5 everywhere)."""
    rng = np.random.default_rng(1)
    images, maps = [], []
    for height, width in ((400, 420), (128, 128)):
        rgb = rng.integers(0, 90, (height, width, 3), dtype=np.uint8)
        rgb[:, width // 2 :] += 160
        images.append(rgb)
        teacher = np.zeros(map_shape(height, width), dtype=np.float32)
        teacher[:, teacher.shape[1] // 2 + 3 :] = 1.0
        maps.append(teacher)
    untrained = student.StudentNet().eval()
    trained = student.distil(images, maps, steps=60, floor=0.25, batch_crops=4)

    def error(net) -> float:
        scorer = window_scorer(net, torch.device("cpu"), None)
        return float(
            np.mean(
                [
                    np.abs(probability_map(r, scorer, torch.device("cpu")) - m).mean()
                    for r, m in zip(images, maps, strict=True)
                ]
            )
        )

    assert error(trained) < error(untrained) - 0.1


def test_a_channels_last_student_saves_and_loads_back(tmp_path):
    net = student.StudentNet().to(memory_format=torch.channels_last).eval()
    student.save_student(net, tmp_path / "student.safetensors")
    again = student.load_student(tmp_path / "student.safetensors")
    x = torch.rand(1, 3, 94, 94)
    torch.testing.assert_close(again(x), net(x))
