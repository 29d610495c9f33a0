"""training.checkpoint: `save` and `load` mirror each other, and older checkpoint files still resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.checkpoint import Checkpoint, no_best_record
from training.config import TrainSettings


def make_checkpoint(seed: int, settings: TrainSettings | None = None) -> Checkpoint:
    """A tiny run's state: a linear model with momentum and generators seeded with `seed`."""
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    grad_scaler = torch.amp.GradScaler("cuda", enabled=False)
    return Checkpoint(
        model,
        optimizer,
        grad_scaler,
        np.random.default_rng(seed),
        torch.Generator().manual_seed(seed),
        settings or TrainSettings(iterations=10),
    )


def take_a_step(checkpoint: Checkpoint) -> None:
    """Change every part of the state: weights, momentum, both generators, the global generator, the record."""
    loss = checkpoint.model(torch.randn(3, 4)).sum()
    loss.backward()
    checkpoint.optimizer.step()
    checkpoint.numpy_rng.random(5)
    torch.rand(5, generator=checkpoint.torch_rng)
    checkpoint.iteration = 7
    checkpoint.best = {"iteration": 7, "val_loss": 0.25, "val_ap": 0.5, "val_ap_calibrated": 0.125}


def test_load_restores_what_save_wrote(tmp_path):
    saved = make_checkpoint(seed=0)
    take_a_step(saved)
    saved.save(tmp_path / "checkpoint.pt")
    expected_numbers, expected_noise = saved.numpy_rng.random(3), torch.rand(3, generator=saved.torch_rng)
    expected_global = torch.rand(3)

    restored = make_checkpoint(seed=1)  # other weights, other generators
    restored.load(tmp_path / "checkpoint.pt")
    assert restored.iteration == 7 and restored.best == saved.best
    for name, tensor in saved.model.state_dict().items():
        assert torch.equal(restored.model.state_dict()[name], tensor), name
    for mine, theirs in zip(restored.model.parameters(), saved.model.parameters(), strict=True):
        momentum = restored.optimizer.state[mine]["momentum_buffer"]
        assert torch.equal(momentum, saved.optimizer.state[theirs]["momentum_buffer"])
    # the generators continue where the saved run's did, in place (other objects hold them)
    np.testing.assert_array_equal(restored.numpy_rng.random(3), expected_numbers)
    assert torch.equal(torch.rand(3, generator=restored.torch_rng), expected_noise)
    assert torch.equal(torch.rand(3), expected_global)


def test_state_dict_keys_are_the_files_on_disk():
    """The keys every `checkpoint.pt` since the gradient scaler holds: runs of days resume from these files."""
    keys = set(make_checkpoint(seed=0).state_dict())
    expected = {"model", "optimizer", "grad_scaler", "iteration", "best", "settings", "numpy_rng", "torch_rng"}
    assert expected | {"torch_global_rng"} <= keys
    assert keys - expected - {"torch_global_rng"} <= {"cuda_rng"}


def test_an_older_checkpoint_without_scaler_or_settings_resumes(tmp_path):
    saved = make_checkpoint(seed=0)
    take_a_step(saved)
    state = saved.state_dict()
    del state["grad_scaler"], state["settings"]
    torch.save(state, tmp_path / "checkpoint.pt")
    restored = make_checkpoint(seed=1)
    restored.load(tmp_path / "checkpoint.pt")
    assert restored.iteration == 7


def test_other_settings_are_logged_not_applied(tmp_path, caplog):
    make_checkpoint(seed=0, settings=TrainSettings(iterations=10)).save(tmp_path / "checkpoint.pt")
    restored = make_checkpoint(seed=0, settings=TrainSettings(iterations=20))
    with caplog.at_level("WARNING", logger="training.train"):
        restored.load(tmp_path / "checkpoint.pt")
    assert "other settings" in caplog.text and "'iterations': (10, 20)" in caplog.text
    assert restored.settings.iterations == 20


def test_a_fresh_checkpoint_has_no_best_record():
    checkpoint = make_checkpoint(seed=0)
    assert checkpoint.iteration == 0 and checkpoint.best == no_best_record()
    assert checkpoint.best["val_loss"] == pytest.approx(float("inf"))
