"""Training throughput of the paper architecture (70-layer P4 ResNet, 78 px windows) on this machine.

    python -m benchmarks.train_speed [--threads 2] [--steps 5] [--batch-size 128]

Times full SGD steps (forward, cross-entropy, backward, update) on random windows, after one warm-up step, in fp32
and with bf16 autocast (CPU) or fp16 autocast (CUDA), and extrapolates to the paper's 150k iterations of batch 128.
Augmentation and patch reading are not included (see training/augment.py: about 0.2 s per 128-patch batch on CPU).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from model.architecture import ArchitectureConfig
from model.p4resnet import P4ResNet

PAPER_ITERATIONS = 150_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per precision (default: 5)")
    parser.add_argument("--batch-size", type=int, default=128, help="windows per step (default: 128, the paper's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = P4ResNet(ArchitectureConfig()).to(device).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    windows = torch.rand(args.batch_size, 3, 78, 78, device=device)
    labels = torch.randint(0, 2, (args.batch_size,), device=device)
    low_precision = torch.float16 if device.type == "cuda" else torch.bfloat16
    results = {"device": str(device), "threads": args.threads, "batch_size": args.batch_size}
    for name, dtype in (("fp32", None), (str(low_precision).replace("torch.", ""), low_precision)):
        timings = []
        for step in range(args.steps + 1):
            started = time.perf_counter()
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = F.cross_entropy(net(windows).float().flatten(1), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if step:  # the first step warms up kernels and caches
                timings.append(time.perf_counter() - started)
        seconds_per_step = sum(timings) / len(timings)
        results[name] = {
            "patches_per_second": round(args.batch_size / seconds_per_step, 1),
            "seconds_per_iteration": round(seconds_per_step, 3),
            "paper_run_hours": round(seconds_per_step * PAPER_ITERATIONS / 3600, 1),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
