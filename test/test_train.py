"""training.train end to end on a small synthetic MIDOG-format dataset: trains, exports, resumes after a kill, and
two gloo processes (torchrun) follow the single-process loss trajectory."""

from __future__ import annotations

import csv
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from model.architecture import architecture
from model.plain import PlainP4ResNet
from model.precision import autocast_dtype
from training import checkpoint, train
from training.config import load_config
from training.data.synthetic import generate_dataset
from training.figures import CURVES_SIZE_PX

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synthetic_dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    generate_dataset(folder, n_images=5, seed=11, width_px=768, height_px=768)
    return folder


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    """The CI smoke config with a validation at every iteration (so a kill after iteration 2 leaves a checkpoint)."""
    text = (REPO / "configs" / "smoke.toml").read_text()
    text = text.replace("iterations = 6", "iterations = 3").replace("eval_every = 3", "eval_every = 1")
    text = text.replace("threads = 2", "threads = 1").replace(
        'architecture = "narrow"', 'architecture = "narrow"\nprecision = "fp32"'
    )
    path = tmp_path_factory.mktemp("config") / "smoke-every-iteration.toml"
    path.write_text(text)
    return path


def run(out: Path, data: Path, config: Path) -> None:
    assert train.main(["--config", str(config), "--data", str(data), "--out", str(out)]) == 0


def iterations_logged(out: Path) -> list[str]:
    with open(out / "metrics.csv") as handle:
        return [row["iteration"] for row in csv.DictReader(handle)]


def test_smoke_config_is_small_and_uses_the_narrow_twin():
    config = load_config("smoke")
    assert config.train.iterations <= 10 and config.train.architecture == "narrow"
    assert architecture("narrow").stages[0].kernels == architecture("paper").stages[0].kernels


def test_trains_exports_and_resumes_after_a_kill(tmp_path, synthetic_dataset, config_file, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="training.train")
    original_save, saves = checkpoint.save_atomically, []

    def save_then_die_after_second_checkpoint(obj, path):
        original_save(obj, path)
        if path.name == "checkpoint.pt":
            saves.append(path)
        if len(saves) == 2:
            raise KeyboardInterrupt  # as if the process were killed right after iteration 2

    monkeypatch.setattr(checkpoint, "save_atomically", save_then_die_after_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, synthetic_dataset, config_file)
    monkeypatch.setattr(checkpoint, "save_atomically", original_save)
    assert iterations_logged(tmp_path) == ["1", "2"]
    plain = PlainP4ResNet(architecture("narrow"))
    plain.load_state_dict(load_file(str(tmp_path / "best.safetensors")), strict=True)  # exported, loadable

    run(tmp_path, synthetic_dataset, config_file)  # the same command again: continues from the checkpoint
    assert "resumed at iteration 2" in caplog.text
    assert iterations_logged(tmp_path) == ["1", "2", "3"]
    with Image.open(tmp_path / "curves.png") as curves:  # the resumed run still draws its curves
        assert curves.format == "PNG" and curves.size == CURVES_SIZE_PX

    run(tmp_path / "uninterrupted", synthetic_dataset, config_file)
    resumed = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["model"]
    straight = torch.load(tmp_path / "uninterrupted" / "checkpoint.pt", weights_only=False)["model"]
    for name, tensor in straight.items():
        assert torch.allclose(resumed[name].float(), tensor.float(), atol=1e-5), name
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)  # the full state a CUDA fp16 run resumes from
    assert {"model", "optimizer", "grad_scaler", "iteration", "settings", "numpy_rng", "torch_rng"} <= state.keys()
    assert state["iteration"] == 3 and state["settings"]["iterations"] == 3


def weights(out: Path) -> dict[str, torch.Tensor]:
    state = torch.load(out / "checkpoint.pt", weights_only=False)["model"]
    return {name: t.float() for name, t in state.items() if t.is_floating_point()}


def train_losses(out: Path) -> list[float]:
    with open(out / "metrics.csv") as handle:
        return [float(row["train_loss"]) for row in csv.DictReader(handle)]


def test_torchrun_data_parallel_matches_one_process(tmp_path, synthetic_dataset, config_file):
    """torchrun with 1 process = the plain command, bit for bit; 2 gloo processes x 32 samples follow the loss
    trajectory of 1 process x 64 samples (not exactly: batch-norm statistics are per process on CPU, SyncBatchNorm
    needs CUDA)."""
    environment = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    config = tmp_path / "batch-64.toml"
    config.write_text(config_file.read_text().replace("batch_size = 8", "batch_size = 64"))
    common = ["-m", "training.train", "--config", str(config), "--data", str(synthetic_dataset)]
    subprocess.run([sys.executable, *common, "--out", str(tmp_path / "single")], check=True, env=environment)
    for processes in (1, 2):
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes)]
        torchrun += ["--master-port", str(29510 + processes)]
        subprocess.run([*torchrun, *common, "--out", str(tmp_path / f"ddp{processes}")], check=True, env=environment)

    single, one = weights(tmp_path / "single"), weights(tmp_path / "ddp1")
    assert all(torch.equal(single[name], one[name]) for name in single)
    losses, two = train_losses(tmp_path / "single"), train_losses(tmp_path / "ddp2")
    assert len(losses) == len(two) == 3
    assert max(abs(a - b) for a, b in zip(losses, two, strict=True)) < 0.02, (losses, two)


def test_fp16_on_a_cpu_is_refused_before_the_data_loads(tmp_path, config_file):
    config = tmp_path / "fp16.toml"
    config.write_text(config_file.read_text().replace('precision = "fp32"', 'precision = "fp16"'))
    missing_data = tmp_path / "no-such-dataset"  # reading it would raise another error
    with pytest.raises(ValueError, match='train.precision = "fp16" needs a CUDA GPU'):
        train.main(["--config", str(config), "--data", str(missing_data), "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_training_autocasts_as_inference_does():
    """One rule for both (`model.precision`): what is validated and tuned is what ships."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for precision in ("auto", "bf16", "fp32"):
        assert train.training_autocast_dtype(cpu, precision) == autocast_dtype(cpu, precision)
    for precision in ("auto", "bf16", "fp16", "fp32"):
        assert train.training_autocast_dtype(cuda, precision) == autocast_dtype(cuda, precision)
    assert train.training_autocast_dtype(cuda, "auto") == torch.float16


def test_batches_interleave_positives_and_negatives_for_every_rank():
    """Each rank's slice of the global batch is half positives (batch-norm statistics are per rank)."""
    order = train.interleaved_order(positive_count=4, negative_count=4)
    labels = torch.cat([torch.ones(4), torch.zeros(4)])[order]
    assert sorted(order.tolist()) == list(range(8))
    for rank_slice in (slice(0, 4), slice(4, 8)):
        assert labels[rank_slice].sum().item() == 2
