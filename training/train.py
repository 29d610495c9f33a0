"""Train one P4 ResNet (policy A or B) on a dataset's positives and a set of negative sites; keep the best weights.

    python -m training.train --config cpu-small --data ../shared/data/real --out runs/cpu-small/A --policy A
    torchrun --nproc-per-node 4 -m training.train --config paper --data /data/midog22 --out runs/paper/A

Recipe (paper): cross-entropy, SGD momentum 0.9, lr 0.03 with a cyclic (cosine, warm-restart) schedule of 10k
iterations, weight decay 1e-4, batch 128 half positives (oversampled) half negatives, 78 px windows. Every
`eval_every` iterations: validation loss and AP; the lowest-validation-loss weights are exported to plain torch
(`best.safetensors`). A checkpoint written atomically at each validation makes a rerun of the same command continue
where it stopped (`training.checkpoint`: model, optimizer, gradient scaler, iteration, settings and every random
generator's state; the learning rate is a function of the iteration, so no scheduler state is needed). Precision is
`model.precision`'s rule, the one inference runs with (fp16 on CUDA with a gradient scaler, bf16 on a CPU that runs
it natively, else fp32); `train.precision = "fp16"` on a CPU is refused before anything is loaded.

The loop reads as torchvision's reference scripts: `BatchDrawer.draw` -> `train_one_step` every iteration, and every
`eval_every` iterations `evaluate` -> `save_best` -> `MetricsLog.append` -> `Checkpoint.save`.

Data parallel (torchrun / DDP): every rank draws the same global batch (same generators) and trains on its slice;
gradients are averaged, so W processes with batch B/W follow the trajectory of one process with batch B (up to
batch-norm statistics, which are per rank on CPU and synchronised on CUDA). Rank 0 validates and writes files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from model.architecture import architecture
from model.bundle import POLICY_NAMES
from model.command_line import command_parser
from model.p4resnet import P4ResNet
from model.plain import PlainP4ResNet
from model.precision import autocast, autocast_dtype
from training.augment import POLICIES, augment_batch, centre_windows, with_lab_transfer
from training.checkpoint import CHECKPOINT_FILE, Checkpoint, save_atomically
from training.config import Config, TrainSettings, load_config
from training.data.sources import NegativeSites, TrainingData, negative_sampler, positive_sampler
from training.metrics_log import METRICS_FILE, MetricsLog
from training.validation.field_validation import field_metrics, field_points
from training.validation_metrics import patch_metrics

logger = logging.getLogger("training.train")

BEST_MODEL = "best_model.pt"
"""The e2cnn state dict of the best weights: what fine-tuning starts from (not the run's last checkpoint)."""


@dataclass(frozen=True)
class RunFolder:
    """Where one run keeps each of its files: the names are defined here and nowhere else."""

    path: Path

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def run_record(self) -> Path:
        """How the run was started (policy, seed, settings, ...): `run.json`."""
        return self.path / "run.json"

    @property
    def best_weights(self) -> Path:
        """The best weights exported to plain torch: what a bundle ships."""
        return self.path / "best.safetensors"

    @property
    def best_model(self) -> Path:
        return self.path / BEST_MODEL

    @property
    def best_record(self) -> Path:
        """The best validation record (`best.json`): what `train_model` returns, also for a finished run."""
        return self.path / "best.json"

    @property
    def best_validation(self) -> Path:
        """The best weights' validation probabilities, labels and weights (threshold tuning reads them)."""
        return self.path / "best_validation.npz"

    @property
    def curves(self) -> Path:
        return self.path / "curves.png"

    def snapshot(self, iteration: int) -> Path:
        """Exported weights of one evaluated iteration (runs with `TrainSettings.snapshots`)."""
        return self.path / f"iteration_{iteration:06d}.safetensors"


def snapshot_path(out_dir: Path, iteration: int) -> Path:
    """`RunFolder(out_dir).snapshot(iteration)`, for callers that hold only the folder's path
    (`training.validation.field_cv`)."""
    return RunFolder(out_dir).snapshot(iteration)


def cyclic_lr(iteration: int, base_lr: float, cycle: int) -> float:
    """Cosine annealing with warm restarts (Loshchilov & Hutter), the paper's cyclic schedule."""
    return 0.5 * base_lr * (1 + math.cos(math.pi * (iteration % cycle) / cycle))


@dataclass
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_environment(cls) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return cls(dist.get_rank(), world)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self) -> torch.device:
        """This rank's GPU (ranks share the GPUs round robin), else the CPU."""
        if torch.cuda.is_available():
            return torch.device(f"cuda:{self.rank % torch.cuda.device_count()}")
        return torch.device("cpu")

    def mean(self, value: torch.Tensor) -> float:
        """`value` averaged over the ranks (the loss every rank logs is the global batch's)."""
        if self.world > 1:
            value = value.detach().clone()
            dist.all_reduce(value, op=dist.ReduceOp.AVG)
        return value.item()


def training_autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """`model.precision.autocast_dtype`: training validates in the precision that inference ships with.

    Raises ValueError for ``precision = "fp16"`` off CUDA, with the setting's name, so that a config meant for a GPU
    fails before the data is loaded rather than at the first batch."""
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f'train.precision = "fp16" needs a CUDA GPU, this run is on {device.type}: use "auto", "bf16" or "fp32"'
        )
    return autocast_dtype(device, precision)


@torch.no_grad()
def predict(
    net: torch.nn.Module, windows: torch.Tensor, dtype: torch.dtype | None, batch_size: int = 256
) -> torch.Tensor:
    """Logits (N, 2) of (N, 3, 78, 78) windows, in eval mode and `dtype` autocast (None: fp32), on the CPU."""
    net.eval()
    device = next(net.parameters()).device
    outputs = []
    for start in range(0, len(windows), batch_size):
        with autocast(device, dtype):
            outputs.append(net(windows[start : start + batch_size].to(device)).float().flatten(1).cpu())
    return torch.cat(outputs)


@dataclass
class TrainResult:
    """A run's best validation record (`best.json`) and where its exported weights are."""

    best_iteration: int
    val_loss: float
    val_ap: float
    val_ap_calibrated: float
    weights: Path
    field_ap: float | None = None  # challenge AP on the whole validation fields (None: the data has none)
    field_f1: float | None = None  # best challenge F1 over thresholds on them

    @classmethod
    def read(cls, folder: RunFolder) -> TrainResult:
        """The record of a run that validated at least once; FileNotFoundError otherwise."""
        if not folder.best_record.exists():
            raise FileNotFoundError(
                f"{folder.path}: no best.json (was the run interrupted before its first validation?)"
            )
        record = json.loads(folder.best_record.read_text())
        return cls(
            record["iteration"],
            record["val_loss"],
            record["val_ap"],
            record["val_ap_calibrated"],
            folder.best_weights,
            record.get("field_ap"),
            record.get("field_f1"),
        )


def is_better(candidate: dict, best: dict) -> bool:
    """Validation-field AP decides when the data has validation fields (ties: lower loss); else validation loss."""
    if candidate.get("field_ap") is not None:
        return (candidate["field_ap"], -candidate["val_loss"]) > (best.get("field_ap") or -1.0, -best["val_loss"])
    return candidate["val_loss"] < best["val_loss"]


def exported_weights(net: P4ResNet) -> dict[str, torch.Tensor]:
    """The plain-torch weights inference runs (`PlainP4ResNet`), on the CPU; leaves `net` in eval mode."""
    return {name: tensor.cpu() for name, tensor in net.export_state_dict().items()}


def field_validation(net: P4ResNet, data: TrainingData, device: torch.device, exported: dict | None = None) -> dict:
    """Field AP / best F1 of the current weights, through the plain export that inference runs ({}: no fields).

    `exported`: `exported_weights(net)` when the caller has them already (they are not computed twice)."""
    if not data.field_regions:
        return {}
    plain = PlainP4ResNet(net.config).to(device)
    plain.load_state_dict(exported if exported is not None else net.export_state_dict())
    return field_metrics(field_points(plain, data, data.field_regions, device))


class ValidationSet(NamedTuple):
    """Fixed validation windows with their labels and per-sample weights (for the calibrated AP)."""

    windows: torch.Tensor  # (N, 3, 78, 78) float in [0, 1]
    labels: torch.Tensor  # (N,) long, 1 = mitotic figure
    weights: np.ndarray  # (N,) 1 for positives, the realistic-density weight for negatives


def validation_set(data: TrainingData, settings: TrainSettings, seed: int) -> ValidationSet:
    """Every validation positive and at most `settings.val_negatives` negative sites (a fixed random subset)."""
    sites = data.negatives_val
    if len(sites) > settings.val_negatives:
        sites = sites.subset(np.sort(np.random.default_rng(seed).choice(len(sites), settings.val_negatives, False)))
    negatives = data.crops(sites)
    windows = torch.cat(
        [centre_windows(torch.from_numpy(data.positives_val)), centre_windows(torch.from_numpy(negatives))]
    )
    labels = torch.cat([torch.ones(len(data.positives_val)), torch.zeros(len(negatives))]).long()
    weights = np.concatenate([np.ones(len(data.positives_val)), np.full(len(negatives), data.negative_weight(sites))])
    return ValidationSet(windows, labels, weights)


def interleaved_order(positive_count: int, negative_count: int) -> torch.Tensor:
    """Indices that reorder [positives..., negatives...] to alternate them (p, n, p, n, ...; the surplus at the end),
    so that any contiguous slice of the batch, as one rank trains on, is balanced."""
    order = np.r_[np.arange(positive_count) * 2, np.arange(negative_count) * 2 + 1]
    return torch.from_numpy(np.argsort(order))


class BatchDrawer:
    """Draws each iteration's augmented batch: half positives, half negatives, and this rank's slice of it.

    Every rank draws the same global batch (the same generators, restored by the checkpoint in place) and keeps its
    slice, so W ranks of batch B/W see what one process of batch B sees. Positives and negatives are interleaved so
    that every slice is balanced (batch-norm statistics are per rank)."""

    def __init__(
        self,
        data: TrainingData,
        negatives: NegativeSites,
        policy: str,
        settings: TrainSettings,
        distributed: Distributed,
        numpy_rng: np.random.Generator,
        torch_rng: torch.Generator,
        device: torch.device,
    ) -> None:
        if settings.batch_size % distributed.world:
            raise ValueError(f"batch size {settings.batch_size} is not divisible by {distributed.world} processes")
        self.data, self.negatives = data, negatives
        self.numpy_rng, self.torch_rng, self.device = numpy_rng, torch_rng, device
        self.draw_positives = positive_sampler(data.positive_train_groups, data.positive_scale)
        self.draw_negatives = negative_sampler(negatives)
        self.augmentation = POLICIES[policy]
        if settings.lab_transfer_p > 0:
            self.augmentation = with_lab_transfer(self.augmentation, settings.lab_transfer_p)
        self.positive_count = settings.batch_size // 2
        self.negative_count = settings.batch_size - self.positive_count
        per_rank = settings.batch_size // distributed.world
        self.rank_slice = slice(distributed.rank * per_rank, (distributed.rank + 1) * per_rank)
        self.interleave = interleaved_order(self.positive_count, self.negative_count)
        labels = torch.cat([torch.ones(self.positive_count), torch.zeros(self.negative_count)]).long()
        self.labels = labels[self.interleave][self.rank_slice].to(device)

    def draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(this rank's windows on the device, their labels)."""
        positives = self.data.positives_train[self.draw_positives.draw(self.numpy_rng, self.positive_count)]
        negatives = self.data.crops(self.negatives, self.draw_negatives.draw(self.numpy_rng, self.negative_count))
        crops = torch.from_numpy(np.concatenate([positives, negatives]))
        batch = augment_batch(crops, self.augmentation, self.torch_rng)
        return batch[self.interleave][self.rank_slice].to(self.device), self.labels


def train_one_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    grad_scaler: torch.amp.GradScaler,
    windows: torch.Tensor,
    labels: torch.Tensor,
    dtype: torch.dtype | None,
    iteration: int,
) -> torch.Tensor:
    """One SGD step on a batch; returns its (detached) cross-entropy loss.

    Raises FloatingPointError on a non-finite loss before the weights are touched: a diverged run stops with its
    last checkpoint intact instead of training on NaNs."""
    model.train()
    with autocast(windows.device, dtype):
        logits = model(windows).float().flatten(1)
    loss = F.cross_entropy(logits, labels)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss at iteration {iteration}")
    optimizer.zero_grad(set_to_none=True)
    grad_scaler.scale(loss).backward()
    grad_scaler.step(optimizer)
    grad_scaler.update()
    return loss.detach()


def evaluate(net: torch.nn.Module, validation: ValidationSet, dtype: torch.dtype | None) -> tuple[dict, np.ndarray]:
    """({"val_loss", "val_ap", "val_ap_calibrated"}, each window's mitosis probability) of the current weights."""
    logits = predict(net, validation.windows, dtype)
    probability = torch.softmax(logits, 1)[:, 1].numpy()
    record = {"val_loss": F.cross_entropy(logits, validation.labels).item()}
    return record | patch_metrics(validation.labels.numpy(), probability, validation.weights), probability


def save_best(
    folder: RunFolder,
    net: P4ResNet,
    exported: dict[str, torch.Tensor],
    record: dict,
    validation: ValidationSet,
    probability: np.ndarray,
) -> None:
    """Write the best weights (exported and e2cnn), their validation scores and `record` as `best.json`."""
    save_file(exported, str(folder.best_weights))
    save_atomically({"model": net.state_dict()}, folder.best_model)
    np.savez(
        folder.best_validation, probability=probability, labels=validation.labels.numpy(), weights=validation.weights
    )
    folder.best_record.write_text(json.dumps(record, indent=2))


def build_network(architecture_name: str, init: Path | None, device: torch.device) -> P4ResNet:
    """A fresh network, or one started from `init`: exported `.safetensors` (a shipped bundle's) or any file with
    a "model" state dict (a run's `best_model.pt`)."""
    net = P4ResNet(architecture(architecture_name)).to(device)
    if init is not None and Path(init).suffix == ".safetensors":
        net.load_exported_state_dict(load_file(str(init)))
        net.to(device)
    elif init is not None:
        net.load_state_dict(torch.load(init, map_location=device, weights_only=True)["model"])
    return net


def data_parallel(net: torch.nn.Module, device: torch.device, distributed: Distributed) -> torch.nn.Module:
    """`net` wrapped for DDP (batch norm synchronised on CUDA) when there are several ranks; else `net` itself."""
    if distributed.world == 1:
        return net
    if device.type == "cuda":
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    return torch.nn.parallel.DistributedDataParallel(net)


def fresh_checkpoint(
    settings: TrainSettings, seed: int, init: Path | None, device: torch.device, dtype: torch.dtype | None
) -> Checkpoint:
    """The state of a run at iteration 0: network (from `init` or seeded), SGD, gradient scaler, seeded generators."""
    torch.manual_seed(seed)  # before the network: its initial weights
    numpy_rng, torch_rng = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    net = build_network(settings.architecture, init, device)
    optimizer = torch.optim.SGD(
        net.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    grad_scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)  # fp16 only: bf16 has fp32's range
    return Checkpoint(net, optimizer, grad_scaler, numpy_rng, torch_rng, settings)


def validate(
    net: P4ResNet,
    validation: ValidationSet,
    data: TrainingData,
    settings: TrainSettings,
    folder: RunFolder,
    iteration: int,
    best: dict,
    dtype: torch.dtype | None,
    identity: dict,
) -> tuple[dict, dict]:
    """Evaluate the weights after `iteration` iterations; save them when they are the best so far.

    Returns (this validation's record, the best record). With `settings.snapshots` every evaluated iteration is
    exported and counts as the best (the field cross-validation measures and chooses out of fold; no choice on fields
    here); otherwise the validation fields are measured too and `is_better` decides. `identity` (policy, seed) is
    added to `best.json`."""
    record, probability = evaluate(net, validation, dtype)
    exported = exported_weights(net) if settings.snapshots or data.field_regions else None
    if settings.snapshots:
        save_file(exported, str(folder.snapshot(iteration)))
    else:
        record |= field_validation(net, data, next(net.parameters()).device, exported)
    record = {"iteration": iteration} | record
    if settings.snapshots or is_better(record, best):
        best = record
        exported = exported_weights(net) if exported is None else exported
        save_best(folder, net, exported, best | identity, validation, probability)
    return record, best


def train_model(
    data: TrainingData,
    settings: TrainSettings,
    out_dir: Path,
    policy: str = POLICY_NAMES[0],
    seed: int = 0,
    negatives: NegativeSites | None = None,
    init: Path | None = None,
    description: str = "",
    distributed: Distributed | None = None,
) -> TrainResult:
    """Train (or continue training) one model in `out_dir`; return its best validation record.

    `negatives` defaults to every training negative site (drawn balanced by source and kind); `init` starts from
    another run's weights (see `build_network`). When `out_dir` holds a finished run, nothing is trained and its
    record is returned.
    """
    distributed, folder = distributed or Distributed(), RunFolder(out_dir)
    negatives = data.negatives_train if negatives is None else negatives
    if len(negatives) == 0:
        raise ValueError("no negative sites to train on")
    device = distributed.device()
    dtype = training_autocast_dtype(device, settings.precision)
    if settings.threads and device.type == "cpu":
        torch.set_num_threads(settings.threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = fresh_checkpoint(settings, seed, init, device, dtype)
    if folder.checkpoint.exists():
        checkpoint.load(folder.checkpoint)
        if checkpoint.iteration < settings.iterations:
            logger.info("%s: resumed at iteration %d", out_dir, checkpoint.iteration)
    if checkpoint.iteration >= settings.iterations:
        return TrainResult.read(folder)

    net, optimizer, grad_scaler = checkpoint.model, checkpoint.optimizer, checkpoint.grad_scaler
    model = data_parallel(net, device, distributed)
    batches = BatchDrawer(
        data, negatives, policy, settings, distributed, checkpoint.numpy_rng, checkpoint.torch_rng, device
    )
    identity = {"policy": policy, "seed": seed}
    validation, metrics_log = None, None  # rank 0 validates and writes files
    if distributed.is_main:
        run = identity | {"negatives": len(negatives), "init": str(init) if init else None}
        run |= {"world_size": distributed.world, "description": description, "settings": dataclasses.asdict(settings)}
        folder.run_record.write_text(json.dumps(run, indent=2))
        validation, metrics_log = validation_set(data, settings, seed=1000 + seed), MetricsLog(folder.metrics)
    progress = tqdm(
        range(checkpoint.iteration, settings.iterations),
        initial=checkpoint.iteration,
        total=settings.iterations,
        desc=f"{description or out_dir.name} ({policy})",
        disable=not distributed.is_main,
        leave=False,
    )
    losses, started_s = [], time.time()
    for iteration in progress:
        learning_rate = cyclic_lr(iteration, settings.lr, settings.cycle)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate
        windows, labels = batches.draw()
        loss = train_one_step(model, optimizer, grad_scaler, windows, labels, dtype, iteration)
        losses.append(distributed.mean(loss))
        progress.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
        done = iteration + 1
        if done % settings.eval_every and done != settings.iterations:
            continue
        if distributed.is_main:
            record, checkpoint.best = validate(
                net, validation, data, settings, folder, done, checkpoint.best, dtype, identity
            )
            logger.debug("iteration %d: %s", done, record)
            seconds = round(time.time() - started_s, 1)
            metrics_log.append(record | {"train_loss": np.mean(losses), "lr": learning_rate, "seconds": seconds})
            losses, checkpoint.iteration = [], done
            checkpoint.save(folder.checkpoint)
        if distributed.world > 1:
            dist.barrier()
    progress.close()
    if distributed.is_main:
        from training.figures import plot_training_curves  # plotting only where files are written

        plot_training_curves(folder.metrics, folder.curves)
    return TrainResult.read(folder)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """The command line of `main`, separate so that other launchers can reuse it."""
    parser = command_parser("training.train", __doc__, add_help, argparse.RawTextHelpFormatter)
    parser.add_argument("--config", default="cpu-small", help="configs/<name>.toml or a path (default: cpu-small)")
    parser.add_argument("--data", type=Path, required=True, help="MIDOG-format dataset folder or ../shared/data/real")
    parser.add_argument("--out", type=Path, required=True, help="run folder (checkpoint, metrics, best weights)")
    parser.add_argument(
        "--policy", choices=sorted(POLICIES), default=POLICY_NAMES[0], help="augmentation policy (default: A)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random generator (default: 0)")
    parser.add_argument("--iterations", type=int, default=0, help="override the config's iterations (default: 0)")
    parser.add_argument(
        "--init", type=Path, default=None, help="start from a best_model.pt or exported .safetensors (default: none)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Train one model from the command line; 0 on success (errors raise)."""
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config: Config = load_config(args.config)
    settings = config.train if not args.iterations else replace(config.train, iterations=args.iterations)
    distributed = Distributed.from_environment()
    training_autocast_dtype(distributed.device(), settings.precision)  # a wrong precision fails before the data loads
    data = config.data.load(args.data)
    result = train_model(data, settings, args.out, args.policy, args.seed, init=args.init, distributed=distributed)
    if distributed.is_main:
        logger.info(
            "best iteration %d: val loss %.4f, val AP %.4f", result.best_iteration, result.val_loss, result.val_ap
        )
    if distributed.world > 1:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
