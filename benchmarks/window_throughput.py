"""Cost of one P4 window under each execution setting: tile size, batching, autocast precision, memory format, threads.

    python benchmarks/window_throughput.py [--seconds 5] [--device cpu] [--compile] [--int8 DATA] [--layers]
                                           [--json OUT]

Where the detector's settings come from (`model.dense.DEFAULT_TILE_CELLS`, `model.cascade.PART_TILE_CELLS` and
`PART_BATCH_TILES`, bf16 autocast on CPU, channels-last): each row times the shipped model A's forward pass on random
input of one tile shape, repeated for `--seconds`, and reports microseconds per map cell (one 78 px window). Rows run
one after the other in this process, so compare them as ratios within one run; absolute times depend on the CPU,
which the report names. `--compile` adds the reference setting through `torch.compile` (inductor; its compile time
is reported apart, and its output checked against eager). `--int8 DATA` adds fp32 and int8 post-training quantization
of the 64-cell setting, with how far int8 moves the probabilities on real tiles. `--layers` times model A's
convolutions one by one, single-threaded, with their GFLOP/s.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.process_speed import cpu_model  # noqa: E402
from model.bundle import DEFAULT_BUNDLE_DIR, load_networks, read_bundle  # noqa: E402
from model.dense import window_scorer  # noqa: E402
from model.geometry import OUTPUT_STRIDE_PX, RECEPTIVE_FIELD_PX  # noqa: E402
from model.precision import autocast_dtype  # noqa: E402

SETTINGS = (  # (tile cells, tiles per call, precision, channels-last, threads)
    (128, 1, "auto", True, 2),
    (64, 1, "auto", True, 2),
    (48, 2, "auto", True, 2),
    (32, 4, "auto", True, 2),
    (24, 4, "auto", True, 2),
    (24, 8, "auto", True, 2),
    (24, 16, "auto", True, 2),
    (16, 8, "auto", True, 2),
    (64, 1, "auto", False, 2),
    (64, 1, "fp32", True, 2),
    (64, 1, "auto", True, 1),
)


def time_setting(
    network, device, cells: int, batch: int, precision: str, channels_last: bool, threads: int, seconds: float
) -> dict:
    torch.set_num_threads(threads)
    side_px = RECEPTIVE_FIELD_PX + (cells - 1) * OUTPUT_STRIDE_PX
    dtype = autocast_dtype(device, precision)
    score = window_scorer(
        network.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format), device, dtype
    )
    batch_tensor = torch.rand(batch, 3, side_px, side_px, generator=torch.Generator().manual_seed(0)).to(device)
    if channels_last:
        batch_tensor = batch_tensor.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        score(batch_tensor)  # warm-up (oneDNN primitive creation)
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            score(batch_tensor)
            if device.type == "cuda":
                torch.cuda.synchronize()
            calls += 1
    per_call = (time.perf_counter() - started) / calls
    return {
        "tile_cells": cells,
        "tiles_per_call": batch,
        "precision": str(dtype).replace("torch.", "") if dtype else "fp32",
        "channels_last": channels_last,
        "threads": threads,
        "us_per_window": per_call / (batch * cells * cells) * 1e6,
    }


def time_compiled(network, device, seconds: float) -> dict:
    """The 64-cell reference setting through `torch.compile`: compile time, output difference to eager, and speed."""
    torch.set_num_threads(2)
    network = network.to(memory_format=torch.channels_last)
    side_px = RECEPTIVE_FIELD_PX + 63 * OUTPUT_STRIDE_PX
    tile = torch.rand(1, 3, side_px, side_px, generator=torch.Generator().manual_seed(0)).to(device)
    tile = tile.contiguous(memory_format=torch.channels_last)
    compiled = torch.compile(network, dynamic=False)
    started = time.perf_counter()
    with torch.no_grad():
        max_diff = float((compiled(tile) - network(tile)).abs().max())
    compile_s = time.perf_counter() - started
    row = time_setting(compiled, device, 64, 1, "auto", True, 2, seconds)
    return row | {"compile_s": compile_s, "max_diff": max_diff}


def real_tiles(images: list[Path], per_image: int, seed: int) -> list[torch.Tensor]:
    """`per_image` random 64-cell tiles (channels-last, [0, 1]) of each real image, for calibration and checks."""
    from training.data import real_data  # only this measurement reads real images

    side_px = RECEPTIVE_FIELD_PX + 63 * OUTPUT_STRIDE_PX
    rng = np.random.default_rng(seed)
    tiles = []
    for path in images:
        rgb = real_data.read_image(path)
        for _ in range(per_image):
            y, x = (int(rng.integers(0, size - side_px + 1)) for size in rgb.shape[:2])
            tile = torch.from_numpy(np.ascontiguousarray(rgb[y : y + side_px, x : x + side_px])).permute(2, 0, 1)
            tiles.append((tile[None].float() / 255).contiguous(memory_format=torch.channels_last))
    return tiles


def time_int8(network, data: Path, seconds: float) -> dict:
    """Model A quantized after training (FX graph mode, the "x86" backend: int8 weights per channel, uint8
    activations per tensor, eager int8 kernels, no compilation), calibrated on tiles of the unlabeled MITOS 2012
    fields, against fp32 on tiles of the MiDeSeC fields: speed of both in this process, and how far the
    probabilities move (the container test allows 0.04)."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    torch.set_num_threads(2)
    network = network.to(memory_format=torch.channels_last).eval()
    calibration = real_tiles(sorted((data / "unlabeled" / "mitos2012").glob("*.jpg")), 2, seed=0)
    checks = real_tiles(sorted((data / "fields" / "midesec").glob("*.webp"))[::5], 1, seed=1)
    with torch.no_grad():
        prepared = prepare_fx(copy.deepcopy(network), get_default_qconfig_mapping("x86"), (calibration[0],))
        for tile in calibration:
            prepared(tile)
        quantized = convert_fx(prepared)
        differences = torch.cat(
            [
                (torch.softmax(quantized(tile), 1)[:, 1] - torch.softmax(network(tile), 1)[:, 1]).abs().flatten()
                for tile in checks
            ]
        )
    rows = [time_setting(net, torch.device("cpu"), 64, 1, "fp32", True, 2, seconds) for net in (network, quantized)]
    rows[1]["precision"] = "int8"
    rows[1] |= {
        "max_diff": float(differences.max()),
        "mean_diff": float(differences.mean()),
        "share_over_0.04": float((differences > 0.04).float().mean()),
    }
    return rows


def time_layers(network, repeats: int = 3) -> list[dict]:
    """Model A's convolutions on one 64-cell tile, single-threaded as the tile workers run them (`model.dense`),
    grouped by shape: milliseconds per tile (fastest of `repeats`) and GFLOP/s, to tell layers bound by arithmetic
    from layers bound by memory."""
    torch.set_num_threads(1)
    network = network.cpu().to(memory_format=torch.channels_last).eval()
    side_px = RECEPTIVE_FIELD_PX + 63 * OUTPUT_STRIDE_PX
    tile = torch.rand(1, 3, side_px, side_px, generator=torch.Generator().manual_seed(0))
    tile = tile.contiguous(memory_format=torch.channels_last)
    started: dict[int, float] = {}
    seconds: dict[tuple, list[float]] = {}
    macs: dict[tuple, int] = {}
    modules_of: dict[tuple, set[int]] = {}
    run = [0]  # the repeat being recorded

    def before(module, _inputs):
        started[id(module)] = time.perf_counter()

    def after(module, _inputs, output):
        key = (module.in_channels, module.out_channels, module.kernel_size[0], module.stride[0])
        seconds.setdefault(key, [0.0] * repeats)[run[0]] += time.perf_counter() - started[id(module)]
        if run[0] == 0:
            macs[key] = macs.get(key, 0) + output.numel() * module.weight[0].numel()
            modules_of.setdefault(key, set()).add(id(module))

    with torch.no_grad():
        network(tile)  # warm-up (oneDNN primitive creation), not recorded
        convolutions = [m for m in network.modules() if isinstance(m, torch.nn.Conv2d)]
        handles = [
            h for m in convolutions for h in (m.register_forward_pre_hook(before), m.register_forward_hook(after))
        ]
        try:
            for run[0] in range(repeats):
                network(tile)
        finally:
            for handle in handles:
                handle.remove()
    rows = []
    for (inputs, outputs, kernel, stride), times in seconds.items():
        best = min(times)
        gmac = macs[(inputs, outputs, kernel, stride)] / 1e9
        rows.append(
            {
                "in": inputs,
                "out": outputs,
                "kernel": kernel,
                "stride": stride,
                "layers": len(modules_of[(inputs, outputs, kernel, stride)]),
                "ms": best * 1e3,
                "gflops": 2 * gmac / best,
            }
        )
    return sorted(rows, key=lambda row: -row["ms"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="time per setting (default 5)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="also time the 64-cell setting through torch.compile")
    parser.add_argument(
        "--int8",
        type=Path,
        default=None,
        metavar="DATA",
        help="also time model A quantized to int8 after training, calibrated and checked on real data in DATA "
        "(../shared/data/real); CPU only",
    )
    parser.add_argument("--layers", action="store_true", help="also time model A's convolutions one by one (CPU)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    bundle = read_bundle(DEFAULT_BUNDLE_DIR)
    network = load_networks(bundle, DEFAULT_BUNDLE_DIR)[0].to(device)
    rows = [time_setting(network, device, *setting, args.seconds) for setting in SETTINGS]
    if args.compile:
        rows.append(time_compiled(network, device, args.seconds))
    if args.int8 is not None:
        rows.extend(time_int8(network.cpu(), args.int8, args.seconds))
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs); device {device}")
    print(f"{'tile cells':>10}{'tiles/call':>11}{'precision':>10}{'ch-last':>8}{'threads':>8}{'us/window':>11}")
    for row in rows:
        print(
            f"{row['tile_cells']:>10}{row['tiles_per_call']:>11}{row['precision']:>10}{row['channels_last']!s:>8}"
            f"{row['threads']:>8}{row['us_per_window']:>11.1f}"
            + (
                f"  torch.compile: {row['compile_s']:.0f} s to compile, max |diff| {row['max_diff']:.1e}"
                if "compile_s" in row
                else ""
            )
            + (
                f"  int8 against fp32 on real tiles: max |diff| {row['max_diff']:.3f}, mean {row['mean_diff']:.4f}, "
                f"{100 * row['share_over_0.04']:.1f}% of windows over 0.04"
                if "max_diff" in row and "compile_s" not in row
                else ""
            )
        )
    layers = time_layers(network) if args.layers else []
    if layers:
        print("\nmodel A's convolutions, one 64-cell tile, 1 thread (as a tile worker), grouped by shape:")
        print(f"{'in':>5}{'out':>5}{'kernel':>7}{'stride':>7}{'layers':>7}{'ms':>8}{'GFLOP/s':>9}")
        for row in layers:
            print(
                f"{row['in']:>5}{row['out']:>5}{row['kernel']:>7}{row['stride']:>7}{row['layers']:>7}"
                f"{row['ms']:>8.1f}{row['gflops']:>9.1f}"
            )
    if args.json:
        report = {"cpu": cpu_model(), "device": str(device), "rows": rows, "layers": layers}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
