"""Train one policy model (A or B) of the P4 ResNet on the real offline data; keep the lowest-validation-loss weights.

    python -m training.train --policy A --out runs/cpu-small --iterations 2000

Recipe (paper): cross-entropy, SGD momentum 0.9, lr 0.03 with a cyclic (cosine, warm-restart) schedule, weight decay
1e-4, batch 128 balanced positive/negative, 78 px windows. Validation loss and AP every `--eval-every` iterations;
the best weights are exported to plain torch (`best_<policy>.safetensors`). A checkpoint written atomically at every
evaluation makes a rerun of the same command continue where it stopped.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from sklearn.metrics import average_precision_score
from tqdm import tqdm

from model.architecture import ArchitectureConfig
from model.p4resnet import P4ResNet
from training.augment import POLICIES, augment_batch, centre_windows
from training.sampling import (
    REAL_DATA_DIR,
    HardNegatives,
    load_negative_images,
    load_positives,
    sample_hard_negatives,
    sample_negatives,
)

logger = logging.getLogger("training.train")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, add_help=add_help, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--policy", choices=sorted(POLICIES), default="A", help="augmentation policy (default: A)")
    parser.add_argument("--out", type=Path, required=True, help="run folder (checkpoint, metrics, best weights)")
    parser.add_argument("--data", type=Path, default=REAL_DATA_DIR, help=f"real data folder (default: {REAL_DATA_DIR})")
    parser.add_argument("--iterations", type=int, default=2000, help="training iterations (default: 2000)")
    parser.add_argument(
        "--cycle", type=int, default=0, help="lr cycle period in iterations (default: 0 = --iterations)"
    )
    parser.add_argument("--batch-size", type=int, default=128, help="half positives, half negatives (default: 128)")
    parser.add_argument("--lr", type=float, default=0.03, help="initial / peak learning rate (default: 0.03)")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="SGD weight decay (default: 1e-4)")
    parser.add_argument("--eval-every", type=int, default=250, help="iterations between validations (default: 250)")
    parser.add_argument("--val-negatives", type=int, default=3000, help="validation negatives (default: 3000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random generator (default: 0)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: 0 = torch's choice)")
    parser.add_argument("--init", type=Path, default=None, help="start from this checkpoint's weights (default: none)")
    parser.add_argument(
        "--hard-negatives", type=Path, default=None, help="npz of mined hard negatives (training.mine; default: none)"
    )
    parser.add_argument(
        "--hard-fraction",
        type=float,
        default=0.25,
        help="share of each batch's negatives drawn from them (default: 0.25)",
    )
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16", help="CPU autocast (default: bf16)")
    return parser


def cyclic_lr(iteration: int, base_lr: float, cycle: int) -> float:
    """Cosine annealing with warm restarts (Loshchilov & Hutter), the paper's cyclic schedule."""
    return 0.5 * base_lr * (1 + math.cos(math.pi * (iteration % cycle) / cycle))


def save_atomically(obj, path: Path) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, temporary)
    os.replace(temporary, path)


@torch.no_grad()
def predict(net: P4ResNet, windows: torch.Tensor, autocast: bool, batch: int = 256) -> torch.Tensor:
    net.eval()
    outputs = []
    for start in range(0, len(windows), batch):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            outputs.append(net(windows[start : start + batch]).float().flatten(1))
    return torch.cat(outputs)


def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    policy = POLICIES[args.policy]
    autocast = args.precision == "bf16"
    cycle = args.cycle or args.iterations

    crops, table = load_positives(args.data)
    is_validation = table["validation"].to_numpy()
    train_positives, val_positives = crops[~is_validation], crops[is_validation]
    train_negative_images = load_negative_images(args.data, validation=False, seed=args.seed)
    val_negative_images = load_negative_images(args.data, validation=True, seed=args.seed + 1)
    val_negatives = sample_negatives(val_negative_images, args.val_negatives, np.random.default_rng(args.seed + 2))
    del val_negative_images
    val_windows = torch.cat(
        [centre_windows(torch.from_numpy(val_positives)), centre_windows(torch.from_numpy(val_negatives))]
    )
    val_labels = torch.cat([torch.ones(len(val_positives)), torch.zeros(len(val_negatives))]).long()
    logger.info(
        "train: %d positives + negatives from %d images; validation: %d positives, %d negatives",
        len(train_positives),
        len(train_negative_images),
        len(val_positives),
        len(val_negatives),
    )

    net = P4ResNet(ArchitectureConfig())
    if args.init is not None:
        net.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=False)["model"])
        logger.info("initialised from %s", args.init)
    hard = HardNegatives.load(args.hard_negatives) if args.hard_negatives else None
    hard_count = int(round((args.batch_size - args.batch_size // 2) * args.hard_fraction)) if hard else 0
    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    checkpoint_path = args.out / f"checkpoint_{args.policy}.pt"
    metrics_path = args.out / f"metrics_{args.policy}.csv"
    start, best_loss = 0, float("inf")
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, weights_only=False)  # our own file: includes RNG states
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, best_loss = state["iteration"], state["best_loss"]
        rng.bit_generator.state = state["numpy_rng"]
        generator.set_state(state["torch_rng"])
        torch.set_rng_state(state["torch_global_rng"])
        logger.info("resumed at iteration %d (best validation loss %.4f)", start, best_loss)

    half = args.batch_size // 2
    labels = torch.cat([torch.ones(half), torch.zeros(args.batch_size - half)]).long()
    progress = tqdm(range(start, args.iterations), initial=start, total=args.iterations, desc=f"policy {args.policy}")
    running, started = [], time.time()
    for iteration in progress:
        net.train()
        for group in optimizer.param_groups:
            group["lr"] = cyclic_lr(iteration, args.lr, cycle)
        positives = train_positives[rng.integers(0, len(train_positives), size=half)]
        negatives = sample_negatives(train_negative_images, args.batch_size - half - hard_count, rng)
        if hard_count:
            hard_crops = sample_hard_negatives(train_negative_images, hard, hard_count, rng)
            negatives = np.concatenate([negatives, hard_crops])
        batch = augment_batch(torch.from_numpy(np.concatenate([positives, negatives])), policy, generator)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = net(batch).float().flatten(1)
        loss = F.cross_entropy(logits, labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at iteration {iteration}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running.append(loss.item())
        progress.set_postfix(loss=f"{np.mean(running[-50:]):.3f}")

        done = iteration + 1
        if done % args.eval_every == 0 or done == args.iterations:
            logits = predict(net, val_windows, autocast)
            val_loss = F.cross_entropy(logits, val_labels).item()
            probability = torch.softmax(logits, 1)[:, 1].numpy()
            val_ap = float(average_precision_score(val_labels.numpy(), probability))
            improved = val_loss < best_loss
            if improved:
                best_loss = val_loss
                save_file(net.export_state_dict(), str(args.out / f"best_{args.policy}.safetensors"))
                np.save(args.out / f"best_{args.policy}_val_probability.npy", probability)
                (args.out / f"best_{args.policy}.json").write_text(
                    json.dumps(
                        {"iteration": done, "val_loss": val_loss, "val_ap": val_ap, "policy": args.policy}, indent=2
                    )
                )
            new_file = not metrics_path.exists()
            with open(metrics_path, "a", newline="") as handle:
                writer = csv.writer(handle)
                if new_file:
                    writer.writerow(["iteration", "train_loss", "val_loss", "val_ap", "lr", "seconds"])
                writer.writerow(
                    [
                        done,
                        np.mean(running),
                        val_loss,
                        val_ap,
                        optimizer.param_groups[0]["lr"],
                        round(time.time() - started, 1),
                    ]
                )
            running = []
            logger.info(
                "iteration %d: val loss %.4f, val AP %.4f%s", done, val_loss, val_ap, " (best)" if improved else ""
            )
            save_atomically(
                {
                    "model": net.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "iteration": done,
                    "best_loss": best_loss,
                    "numpy_rng": rng.bit_generator.state,
                    "torch_rng": generator.get_state(),
                    "torch_global_rng": torch.get_rng_state(),
                    "args": vars(args) | {"out": str(args.out), "data": str(args.data)},
                },
                checkpoint_path,
            )
    np.save(args.out / "val_labels.npy", val_labels.numpy())


if __name__ == "__main__":
    main(get_args_parser().parse_args())
