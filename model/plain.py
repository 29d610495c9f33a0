"""Plain-torch twin of the P4 ResNet: the network the container runs (no e2cnn at inference time).

Built from an `ArchitectureConfig`; weights come from `P4ResNet.export_state_dict()` so module names here mirror
`model.p4resnet` one to one. Group pooling becomes a max over the 4 rotation channels of each regular field.
"""

from __future__ import annotations

import torch
from torch import nn

from model.architecture import GROUP_ORDER, ArchitectureConfig, block_specs, check_matches_geometry


def crop(x: torch.Tensor, margin_px: int) -> torch.Tensor:
    """Drop `margin_px` on every side: aligns a shortcut with the output of a valid convolution."""
    if margin_px == 0:
        return x
    return x[..., margin_px:-margin_px, margin_px:-margin_px]


def group_max_pool(x: torch.Tensor) -> torch.Tensor:
    """Max over the rotation channels of each regular field: (B, 4F, H, W) -> (B, F, H, W), rotation invariant."""
    batch, channels, height, width = x.shape
    return x.view(batch, channels // GROUP_ORDER, GROUP_ORDER, height, width).amax(dim=2)


@torch.no_grad()
def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A convolution with bias computing bn(conv(x)) with bn's running statistics (eval mode)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, bias=True)
    folded.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    folded.bias.copy_(bn.bias - bn.running_mean * scale)
    return folded


class ChannelAffine(nn.Module):
    """x * scale + shift per channel: an eval-mode batch norm whose input is needed elsewhere, so it cannot be folded
    into a convolution. One fused multiply-add per element, cheaper than eval-mode `BatchNorm2d` on channels-last
    CPU features (docs/performance.md, "Per window")."""

    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        with torch.no_grad():
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            self.register_buffer("scale", scale.view(1, -1, 1, 1).clone())
            self.register_buffer("shift", (bn.bias - bn.running_mean * scale).view(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift.to(x.dtype), x, self.scale.to(x.dtype))  # autocast keeps x's dtype


class PlainBottleneck(nn.Module):
    """Pre-activation bottleneck: BN-ReLU-1x1, BN-ReLU-kxk (stride), BN-ReLU-1x1, plus a cropped shortcut."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, kernel: int, stride: int):
        super().__init__()
        self.margin_px = (kernel - 1) // 2
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, mid_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_channels)
        self.conv2 = nn.Conv2d(mid_channels, mid_channels, kernel, stride=stride, bias=False)
        self.bn3 = nn.BatchNorm2d(mid_channels)
        self.conv3 = nn.Conv2d(mid_channels, out_channels, 1, bias=False)
        projects = stride != 1 or in_channels != out_channels
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False) if projects else None
        self.relu = nn.ReLU(inplace=True)  # only ever applied to a fresh BN / convolution output

    def fold_batchnorms(self) -> None:
        """Merge bn2 into conv1 and bn3 into conv2 (each convolution's output feeds only that BN): the same function
        in eval mode up to rounding, two fewer passes over the features per block. bn1 cannot be merged (its input
        also feeds the shortcut): it becomes a `ChannelAffine`."""
        self.bn1 = ChannelAffine(self.bn1)
        self.conv1, self.bn2 = fold_batchnorm(self.conv1, self.bn2), nn.Identity()
        self.conv2, self.bn3 = fold_batchnorm(self.conv2, self.bn3), nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.bn1(x))
        if self.shortcut is not None:
            identity = self.shortcut(crop(pre, self.margin_px))
        else:
            identity = crop(x, self.margin_px)
        y = self.conv1(pre)
        y = self.conv2(self.relu(self.bn2(y)))
        y = self.conv3(self.relu(self.bn3(y)))
        return y.add_(identity)  # in place: y is conv3's fresh output, and a new tensor would cost a pass


class PlainP4ResNet(nn.Module):
    """Dense mitosis scorer: (B, 3, H, W) float in [0, 1] -> (B, 2, h, w) logits, one cell per 78 px window."""

    def __init__(self, config: ArchitectureConfig):
        super().__init__()
        check_matches_geometry(config)
        self.config = config
        self.stem = nn.Conv2d(
            3, config.stem_fields * GROUP_ORDER, config.stem_kernel, stride=config.stem_stride, bias=False
        )
        specs = block_specs(config)
        self.blocks = nn.Sequential(
            *(
                PlainBottleneck(
                    b.in_fields * GROUP_ORDER,
                    b.mid_fields * GROUP_ORDER,
                    b.out_fields * GROUP_ORDER,
                    b.kernel,
                    b.stride,
                )
                for b in specs
            )
        )
        in_fields = specs[-1].out_fields
        self.head_bn = nn.BatchNorm2d(in_fields * GROUP_ORDER)
        self.head_conv = nn.Conv2d(in_fields * GROUP_ORDER, in_fields * GROUP_ORDER, 1, bias=False)
        self.head_fc1 = nn.Conv2d(in_fields, config.head_channels, 1)
        self.head_fc2 = nn.Conv2d(config.head_channels, config.num_classes, 1)
        self.relu = nn.ReLU(inplace=False)

    def fold_batchnorms(self) -> PlainP4ResNet:
        """Inference only (eval mode, weights loaded): fold what BN can be folded (`PlainBottleneck.fold_batchnorms`),
        about 18% faster on a 2-core CPU in bf16. The folded network no longer accepts the exported state dict."""
        if self.training:
            raise RuntimeError("fold batch norms in eval mode only: folding uses the running statistics")
        for block in self.blocks:
            block.fold_batchnorms()
        self.head_bn = ChannelAffine(self.head_bn)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.blocks(self.stem(x))
        y = self.head_conv(self.relu(self.head_bn(y)))
        y = group_max_pool(y)
        return self.head_fc2(self.relu(self.head_fc1(y)))
