"""Train one P4 ResNet (policy A or B) on a dataset's positives and a set of negative sites; keep the best weights.

    python -m training.train --config cpu-small --data ../shared/data/real --out runs/cpu-small/A --policy A
    torchrun --nproc-per-node 4 -m training.train --config paper --data /data/midog22 --out runs/paper/A

Recipe (paper): cross-entropy, SGD momentum 0.9, lr 0.03 with a cyclic (cosine, warm-restart) schedule of 10k
iterations, weight decay 1e-4, batch 128 half positives (oversampled) half negatives, 78 px windows. Every
`eval_every` iterations: validation loss and AP; the lowest-validation-loss weights are exported to plain torch
(`best.safetensors`). A checkpoint written atomically at each validation makes a rerun of the same command continue
where it stopped (`checkpoint.pt`: model, optimizer, gradient scaler, iteration, settings and every random
generator's state; the learning rate is a function of the iteration, so no scheduler state is needed).

Data parallel (torchrun / DDP): every rank draws the same global batch (same generators) and trains on its slice;
gradients are averaged, so W processes with batch B/W follow the trajectory of one process with batch B (up to
batch-norm statistics, which are per rank on CPU and synchronised on CUDA). Rank 0 validates and writes files.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from model.architecture import architecture
from model.p4resnet import P4ResNet
from model.plain import PlainP4ResNet
from training.augment import POLICIES, augment_batch, centre_windows, with_lab_transfer
from training.config import Config, TrainSettings, load_config
from training.data.sources import NegativeSites, TrainingData, load_training_data, negative_sampler, positive_sampler
from training.field_validation import field_metrics, field_points
from training.validation_metrics import patch_metrics

logger = logging.getLogger("training.train")


def cyclic_lr(iteration: int, base_lr: float, cycle: int) -> float:
    """Cosine annealing with warm restarts (Loshchilov & Hutter), the paper's cyclic schedule."""
    return 0.5 * base_lr * (1 + math.cos(math.pi * (iteration % cycle) / cycle))


def save_atomically(obj, path: Path) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, temporary)
    os.replace(temporary, path)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """fp16 on CUDA (with a gradient scaler), bf16 on CPU; None = fp32."""
    if precision == "fp32":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.bfloat16


@torch.no_grad()
def predict(net: torch.nn.Module, windows: torch.Tensor, dtype: torch.dtype | None, batch: int = 256) -> torch.Tensor:
    """Logits (N, 2) of 78 px windows, in eval mode."""
    net.eval()
    device = next(net.parameters()).device
    outputs = []
    for start in range(0, len(windows), batch):
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            outputs.append(net(windows[start : start + batch].to(device)).float().flatten(1).cpu())
    return torch.cat(outputs)


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


@dataclass
class TrainResult:
    best_iteration: int
    val_loss: float
    val_ap: float
    val_ap_calibrated: float
    weights: Path
    field_ap: float | None = None  # challenge AP on the whole validation fields (None: the data has none)
    field_f1: float | None = None  # best challenge F1 over thresholds on them


BEST_MODEL = "best_model.pt"
"""The e2cnn state dict of the best weights: what fine-tuning starts from (not the run's last checkpoint)."""


def snapshot_path(out_dir: Path, iteration: int) -> Path:
    """Exported weights of one evaluated iteration (runs with `TrainSettings.snapshots`)."""
    return out_dir / f"iteration_{iteration:06d}.safetensors"


def is_better(candidate: dict, best: dict) -> bool:
    """Validation-field AP decides when the data has validation fields (ties: lower loss); else validation loss."""
    if candidate.get("field_ap") is not None:
        return (candidate["field_ap"], -candidate["val_loss"]) > (best.get("field_ap") or -1.0, -best["val_loss"])
    return candidate["val_loss"] < best["val_loss"]


def field_validation(net: P4ResNet, data: TrainingData, device: torch.device) -> dict:
    """Field AP / best F1 of the current weights, through the plain export that inference runs."""
    if not data.field_regions:
        return {}
    plain = PlainP4ResNet(net.config).to(device)
    plain.load_state_dict(net.export_state_dict())
    return field_metrics(field_points(plain, data, data.field_regions, device))


def validation_set(
    data: TrainingData, settings: TrainSettings, seed: int
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Fixed validation windows, labels and per-sample weights (negatives weighted to a realistic density)."""
    sites = data.negatives_val
    if len(sites) > settings.val_negatives:
        sites = sites.subset(np.sort(np.random.default_rng(seed).choice(len(sites), settings.val_negatives, False)))
    negatives = data.crops(sites)
    windows = torch.cat(
        [centre_windows(torch.from_numpy(data.positives_val)), centre_windows(torch.from_numpy(negatives))]
    )
    labels = torch.cat([torch.ones(len(data.positives_val)), torch.zeros(len(negatives))]).long()
    weights = np.concatenate([np.ones(len(data.positives_val)), np.full(len(negatives), data.negative_weight(sites))])
    return windows, labels, weights


def train_model(
    data: TrainingData,
    settings: TrainSettings,
    out_dir: Path,
    policy: str = "A",
    seed: int = 0,
    negatives: NegativeSites | None = None,
    init: Path | None = None,
    description: str = "",
    distributed: Distributed | None = None,
) -> TrainResult:
    """Train (or continue training) one model in `out_dir`; return its best validation record.

    `negatives` defaults to every training negative site (drawn balanced by source and kind); `init` starts from
    another run's weights (its `best_model.pt`, any file with a "model" state dict, or exported `.safetensors` such
    as a shipped bundle's `policy_a.safetensors`). When `out_dir` holds a
    finished run, nothing is trained and its record is returned.
    """
    distributed = distributed or Distributed()
    out_dir.mkdir(parents=True, exist_ok=True)
    negatives = data.negatives_train if negatives is None else negatives
    if len(negatives) == 0:
        raise ValueError("no negative sites to train on")
    device = torch.device(
        f"cuda:{distributed.rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu"
    )
    dtype = autocast_dtype(settings.precision, device)
    if settings.threads and device.type == "cpu":
        torch.set_num_threads(settings.threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)

    net = P4ResNet(architecture(settings.architecture)).to(device)
    if init is not None and Path(init).suffix == ".safetensors":  # exported weights, e.g. a shipped bundle's
        net.load_exported_state_dict(load_file(str(init)))
        net.to(device)
    elif init is not None:
        net.load_state_dict(torch.load(init, map_location=device, weights_only=True)["model"])
    draw_negatives, draw_positives = (
        negative_sampler(negatives),
        positive_sampler(data.positive_train_groups, data.positive_scale),
    )
    optimizer = torch.optim.SGD(
        net.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    checkpoint_path, metrics_path = out_dir / "checkpoint.pt", out_dir / "metrics.csv"
    start, best = 0, {"iteration": 0, "val_loss": float("inf"), "val_ap": 0.0, "val_ap_calibrated": 0.0}
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)  # own file (RNG states stay on CPU)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if "grad_scaler" in state:  # checkpoints before the scaler was saved resume with a fresh one
            scaler.load_state_dict(state["grad_scaler"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        changed = {
            k: (v, getattr(settings, k)) for k, v in state.get("settings", {}).items() if getattr(settings, k, v) != v
        }
        if changed:
            logger.warning("%s: resumed with other settings than it started with: %s", out_dir, changed)
        start, best = state["iteration"], state["best"]
        rng.bit_generator.state = state["numpy_rng"]
        generator.set_state(state["torch_rng"])
        torch.set_rng_state(state["torch_global_rng"])
        if start < settings.iterations:
            logger.info("%s: resumed at iteration %d", out_dir, start)
    model = net
    if distributed.world > 1:
        if device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = torch.nn.parallel.DistributedDataParallel(model)
    if distributed.is_main and start < settings.iterations:
        (out_dir / "run.json").write_text(
            json.dumps(
                {
                    "policy": policy,
                    "seed": seed,
                    "negatives": len(negatives),
                    "init": str(init) if init else None,
                    "world_size": distributed.world,
                    "description": description,
                    "settings": settings.__dict__,
                },
                indent=2,
            )
        )

    val_windows = val_labels = val_weights = None
    if distributed.is_main and start < settings.iterations:
        val_windows, val_labels, val_weights = validation_set(data, settings, seed=1000 + seed)
    augmentation = POLICIES[policy]
    if settings.lab_transfer_p > 0:
        augmentation = with_lab_transfer(augmentation, settings.lab_transfer_p)
    half = settings.batch_size // 2
    if settings.batch_size % distributed.world:
        raise ValueError(f"batch size {settings.batch_size} is not divisible by {distributed.world} processes")
    per_rank = settings.batch_size // distributed.world
    mine = slice(distributed.rank * per_rank, (distributed.rank + 1) * per_rank)
    # interleave positives and negatives so that every rank's slice is balanced (batch-norm statistics per rank)
    interleave = torch.from_numpy(np.argsort(np.r_[np.arange(half) * 2, np.arange(settings.batch_size - half) * 2 + 1]))
    labels = torch.cat([torch.ones(half), torch.zeros(settings.batch_size - half)]).long()[interleave][mine].to(device)
    progress = tqdm(
        range(start, settings.iterations),
        initial=start,
        total=settings.iterations,
        desc=f"{description or out_dir.name} ({policy})",
        disable=not distributed.is_main,
        leave=False,
    )
    running, started = [], time.time()
    for iteration in progress:
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = cyclic_lr(iteration, settings.lr, settings.cycle)
        # the same global batch on every rank (same generators); each trains on its slice
        positives = data.positives_train[draw_positives.draw(rng, half)]
        negative_crops = data.crops(negatives, draw_negatives.draw(rng, settings.batch_size - half))
        batch = augment_batch(torch.from_numpy(np.concatenate([positives, negative_crops])), augmentation, generator)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(batch[interleave][mine].to(device)).float().flatten(1)
        loss = F.cross_entropy(logits, labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at iteration {iteration}")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if distributed.world > 1:
            dist.all_reduce(loss.detach(), op=dist.ReduceOp.AVG)
        running.append(loss.item())
        progress.set_postfix(loss=f"{np.mean(running[-50:]):.3f}")

        done = iteration + 1
        if done % settings.eval_every and done != settings.iterations:
            continue
        if distributed.is_main:
            logits = predict(net, val_windows, dtype)
            val_loss = F.cross_entropy(logits, val_labels).item()
            probability = torch.softmax(logits, 1)[:, 1].numpy()
            metrics = patch_metrics(val_labels.numpy(), probability, val_weights)
            exported = None
            if settings.snapshots:  # the field cross-validation measures and chooses; no choice on fields here
                exported = {k: v.cpu() for k, v in net.export_state_dict().items()}
                save_file(exported, str(snapshot_path(out_dir, done)))
            else:
                metrics |= field_validation(net, data, device)
            candidate = {"iteration": done, "val_loss": val_loss, **metrics}
            if settings.snapshots or is_better(candidate, best):
                best = candidate
                exported = exported or {k: v.cpu() for k, v in net.export_state_dict().items()}
                save_file(exported, str(out_dir / "best.safetensors"))
                save_atomically({"model": net.state_dict()}, out_dir / BEST_MODEL)
                np.savez(
                    out_dir / "best_validation.npz",
                    probability=probability,
                    labels=val_labels.numpy(),
                    weights=val_weights,
                )
                (out_dir / "best.json").write_text(json.dumps(best | {"policy": policy, "seed": seed}, indent=2))
            new_file = not metrics_path.exists()
            with open(metrics_path, "a", newline="") as handle:
                writer = csv.writer(handle)
                if new_file:
                    writer.writerow(
                        [
                            "iteration",
                            "train_loss",
                            "val_loss",
                            "val_ap",
                            "val_ap_calibrated",
                            "field_ap",
                            "field_f1",
                            "lr",
                            "seconds",
                        ]
                    )
                row = [done, np.mean(running), val_loss, metrics["val_ap"], metrics["val_ap_calibrated"]]
                row += [metrics.get("field_ap", ""), metrics.get("field_f1", "")]
                writer.writerow(row + [optimizer.param_groups[0]["lr"], round(time.time() - started, 1)])
            running = []
            logger.debug("iteration %d: val loss %.4f, %s", done, val_loss, metrics)
            save_atomically(
                {
                    "model": net.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "iteration": done,
                    "best": best,
                    "numpy_rng": rng.bit_generator.state,
                    "torch_rng": generator.get_state(),
                    "torch_global_rng": torch.get_rng_state(),
                    "grad_scaler": scaler.state_dict(),  # fp16 on CUDA: the loss scale it had reached
                    "settings": dataclasses.asdict(settings),
                    **({"cuda_rng": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {}),
                },
                checkpoint_path,
            )
        if distributed.world > 1:
            dist.barrier()
    progress.close()
    if distributed.is_main and start < settings.iterations:
        from training.plots import plot_training_curves  # plotting only where files are written

        plot_training_curves(metrics_path, out_dir / "curves.png")
    if not (out_dir / "best.json").exists():
        raise FileNotFoundError(f"{out_dir}: no best.json (was the run interrupted before its first validation?)")
    record = json.loads((out_dir / "best.json").read_text())
    return TrainResult(
        record["iteration"],
        record["val_loss"],
        record["val_ap"],
        record["val_ap_calibrated"],
        out_dir / "best.safetensors",
        record.get("field_ap"),
        record.get("field_f1"),
    )


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, add_help=add_help, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--config", default="cpu-small", help="configs/<name>.toml or a path (default: cpu-small)")
    parser.add_argument("--data", type=Path, required=True, help="MIDOG-format dataset folder or ../shared/data/real")
    parser.add_argument("--out", type=Path, required=True, help="run folder (checkpoint, metrics, best weights)")
    parser.add_argument("--policy", choices=sorted(POLICIES), default="A", help="augmentation policy (default: A)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random generator (default: 0)")
    parser.add_argument("--iterations", type=int, default=0, help="override the config's iterations (default: 0)")
    parser.add_argument(
        "--init", type=Path, default=None, help="start from a best_model.pt or exported .safetensors (default: none)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config: Config = load_config(args.config)
    settings = config.train if not args.iterations else replace(config.train, iterations=args.iterations)
    distributed = Distributed.from_environment()
    data = load_training_data(
        args.data,
        config.data.grid_step_px,
        config.data.min_distance_um,
        config.data.validation_fraction,
        config.data.split_seed,
    )
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
