"""benchmarks.window_throughput: the per-convolution timing counts every convolution once and leaves the network as
it was."""

from __future__ import annotations

import torch
from conftest import random_plain_state

from benchmarks import window_throughput
from model.architecture import ArchitectureConfig
from model.geometry import OUTPUT_STRIDE_PX, RECEPTIVE_FIELD_PX
from model.plain import PlainP4ResNet


def test_layers_are_grouped_by_shape_with_their_arithmetic():
    network = PlainP4ResNet(ArchitectureConfig())
    network.load_state_dict(random_plain_state(4))
    network.eval().fold_batchnorms()
    threads = torch.get_num_threads()
    rows = window_throughput.time_layers(network, repeats=2)
    torch.set_num_threads(threads)
    convolutions = [m for m in network.modules() if isinstance(m, torch.nn.Conv2d)]
    assert sum(row["layers"] for row in rows) == len(convolutions)
    assert len({(row["in"], row["out"], row["kernel"], row["stride"]) for row in rows}) == len(rows)
    assert all(row["ms"] > 0 and row["gflops"] > 0 for row in rows)
    assert [row["ms"] for row in rows] == sorted((row["ms"] for row in rows), reverse=True)
    side_px = RECEPTIVE_FIELD_PX + 63 * OUTPUT_STRIDE_PX  # the stem's arithmetic, from its output size
    stem = next(row for row in rows if row["in"] == 3)
    out_side = (side_px - network.stem.kernel_size[0]) // network.stem.stride[0] + 1
    stem_flop = 2 * out_side**2 * network.stem.out_channels * network.stem.weight[0].numel()
    assert abs(stem["gflops"] * stem["ms"] / 1e3 - stem_flop / 1e9) < 1e-6 * stem_flop / 1e9 + 1e-9
    assert not network.stem._forward_hooks and not network.stem._forward_pre_hooks
