"""The full training state of one run, saved and loaded as mirror images: what `checkpoint.pt` holds.

Why a whole object: runs last days and are resumed by rerunning the same command, so the checkpoint must restore
everything that decides the next iteration, bit for bit: weights, optimizer (momentum buffers), gradient scaler (the
fp16 loss scale it had reached), the iteration, the best validation record so far, and every random generator the
batches and augmentations draw from. The learning rate is a function of the iteration (`training.train.cyclic_lr`),
so there is no scheduler state. The settings are saved to be compared, not applied: a rerun with other settings is
allowed (e.g. more iterations) and logged.

The keys on disk are those of every `checkpoint.pt` written since the gradient scaler was added; `load` also accepts
the older files without ``grad_scaler`` (a fresh scaler) and files from machines without CUDA (no ``cuda_rng``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.config import TrainSettings

__all__ = ["CHECKPOINT_FILE", "Checkpoint", "no_best_record", "save_atomically"]

logger = logging.getLogger("training.train")  # the loop's logger: its messages belong to the run

CHECKPOINT_FILE = "checkpoint.pt"
"""The checkpoint's file name in a run folder; rerunning the command in that folder continues from it."""


def save_atomically(obj: Any, path: Path) -> None:
    """`torch.save` to a temporary file, then rename: a kill mid-write leaves the previous file intact."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, temporary)
    os.replace(temporary, path)


def no_best_record() -> dict[str, float]:
    """The validation record of a run that has not validated yet: every real record is better."""
    return {"iteration": 0, "val_loss": float("inf"), "val_ap": 0.0, "val_ap_calibrated": 0.0}


@dataclass
class Checkpoint:
    """Live references to everything a run's next iteration depends on, plus where the run stands.

    `load_state_dict` restores into these objects in place (the batch drawer keeps using the same generators), and
    `state_dict` reads them; the two name the same keys in the same order.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    grad_scaler: torch.amp.GradScaler
    numpy_rng: np.random.Generator  # draws the batch's samples
    torch_rng: torch.Generator  # draws the augmentations
    settings: TrainSettings
    iteration: int = 0  # iterations done
    best: dict = field(default_factory=no_best_record)  # the best validation record so far

    def state_dict(self) -> dict[str, Any]:
        """The dictionary `checkpoint.pt` holds (the torch global and CUDA generators included)."""
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "grad_scaler": self.grad_scaler.state_dict(),
            "iteration": self.iteration,
            "best": self.best,
            "settings": dataclasses.asdict(self.settings),
            "numpy_rng": self.numpy_rng.bit_generator.state,
            "torch_rng": self.torch_rng.get_state(),
            "torch_global_rng": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> None:
        """Restore what `state_dict` saved; settings that differ from the saved ones are logged with `source`."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if "grad_scaler" in state:  # checkpoints before the scaler was saved resume with a fresh one
            self.grad_scaler.load_state_dict(state["grad_scaler"])
        self.iteration, self.best = state["iteration"], state["best"]
        changed = changed_settings(state.get("settings", {}), self.settings)
        if changed:
            logger.warning("%s: resumed with other settings than it started with: %s", source, changed)
        self.numpy_rng.bit_generator.state = state["numpy_rng"]
        self.torch_rng.set_state(state["torch_rng"])
        torch.set_rng_state(state["torch_global_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    def save(self, path: Path) -> None:
        """Write `state_dict` to `path` atomically."""
        save_atomically(self.state_dict(), path)

    def load(self, path: Path) -> None:
        """Read `path` (written by `save`) into this run's objects; the generators' states stay on the CPU."""
        state = torch.load(path, map_location="cpu", weights_only=False)  # own file: RNG states are not tensors only
        self.load_state_dict(state, source=str(path.parent))


def changed_settings(saved: dict[str, Any], settings: TrainSettings) -> dict[str, tuple[Any, Any]]:
    """{name: (saved value, current value)} of the settings that differ; names the current code lacks are ignored."""
    return {
        name: (value, getattr(settings, name))
        for name, value in saved.items()
        if getattr(settings, name, value) != value
    }
