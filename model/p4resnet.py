"""The training-time network: 70-layer pre-activation ResNet of P4 group convolutions (e2cnn).

Every hidden feature is a stack of regular fields of C4 = {0, 90, 180, 270 degrees}, so rotating the input by 90
degrees rotates every feature map and cyclically permutes each field's 4 channels; group pooling (max over those 4
channels) makes the head invariant. The colour input is 3 trivial fields: colour does not change under rotation.

`export_state_dict()` turns the trained network into weights for `model.plain.PlainP4ResNet` (e2cnn's own
`export()` for convolutions and batch norms; the group pooling becomes `plain.group_max_pool`), so inference never
imports e2cnn. Save in eval mode: R2Conv's parameters differ between train and eval (see e2cnn's docs).
`load_exported_state_dict()` goes the other way, so that training can start from a shipped bundle's weights.
"""

from __future__ import annotations

import torch
from e2cnn import gspaces
from e2cnn import nn as enn
from torch import nn

from model.architecture import GROUP_ORDER, ArchitectureConfig, BlockSpec, block_specs, check_matches_geometry
from model.plain import PlainP4ResNet


def _crop(x: enn.GeometricTensor, margin_px: int) -> enn.GeometricTensor:
    if margin_px == 0:
        return x
    return enn.GeometricTensor(x.tensor[..., margin_px:-margin_px, margin_px:-margin_px], x.type)


class P4Bottleneck(nn.Module):
    """Equivariant twin of `plain.PlainBottleneck` (same attribute names, so exported weights line up)."""

    def __init__(self, gspace: gspaces.GeneralOnR2, spec: BlockSpec):
        super().__init__()
        in_type = enn.FieldType(gspace, [gspace.regular_repr] * spec.in_fields)
        mid_type = enn.FieldType(gspace, [gspace.regular_repr] * spec.mid_fields)
        out_type = enn.FieldType(gspace, [gspace.regular_repr] * spec.out_fields)
        self.in_type, self.out_type = in_type, out_type
        self.margin_px = (spec.kernel - 1) // 2
        self.bn1 = enn.InnerBatchNorm(in_type)
        self.relu1 = enn.ReLU(in_type)
        self.conv1 = enn.R2Conv(in_type, mid_type, 1, bias=False)
        self.bn2 = enn.InnerBatchNorm(mid_type)
        self.relu2 = enn.ReLU(mid_type)
        self.conv2 = enn.R2Conv(mid_type, mid_type, spec.kernel, stride=spec.stride, bias=False)
        self.bn3 = enn.InnerBatchNorm(mid_type)
        self.relu3 = enn.ReLU(mid_type)
        self.conv3 = enn.R2Conv(mid_type, out_type, 1, bias=False)
        projects = spec.stride != 1 or spec.in_fields != spec.out_fields
        self.shortcut = enn.R2Conv(in_type, out_type, 1, stride=spec.stride, bias=False) if projects else None

    def forward(self, x: enn.GeometricTensor) -> enn.GeometricTensor:
        pre = self.relu1(self.bn1(x))
        identity = self.shortcut(_crop(pre, self.margin_px)) if self.shortcut is not None else _crop(x, self.margin_px)
        y = self.conv1(pre)
        y = self.conv2(self.relu2(self.bn2(y)))
        y = self.conv3(self.relu3(self.bn3(y)))
        return y + identity


class P4ResNet(nn.Module):
    """(B, 3, H, W) float in [0, 1] -> (B, 2, h, w) logits; invariant to 90-degree rotations of each window."""

    def __init__(self, config: ArchitectureConfig | None = None):
        super().__init__()
        config = config or ArchitectureConfig()
        check_matches_geometry(config)
        self.config = config
        self.gspace = gspaces.Rot2dOnR2(N=GROUP_ORDER)
        self.in_type = enn.FieldType(self.gspace, [self.gspace.trivial_repr] * 3)
        stem_type = enn.FieldType(self.gspace, [self.gspace.regular_repr] * config.stem_fields)
        self.stem = enn.R2Conv(self.in_type, stem_type, config.stem_kernel, stride=config.stem_stride, bias=False)
        self.blocks = nn.Sequential(*(P4Bottleneck(self.gspace, spec) for spec in block_specs(config)))
        last_type = self.blocks[-1].out_type
        self.head_bn = enn.InnerBatchNorm(last_type)
        self.head_relu = enn.ReLU(last_type)
        self.head_conv = enn.R2Conv(last_type, last_type, 1, bias=False)
        self.head_pool = enn.GroupPooling(last_type)
        self.head_fc1 = nn.Conv2d(len(last_type), config.head_channels, 1)
        self.head_fc2 = nn.Conv2d(config.head_channels, config.num_classes, 1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.blocks(self.stem(enn.GeometricTensor(x, self.in_type)))
        y = self.head_pool(self.head_conv(self.head_relu(self.head_bn(y)))).tensor
        return self.head_fc2(self.relu(self.head_fc1(y)))

    @torch.no_grad()
    def export_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights for `PlainP4ResNet(self.config)`; leaves this network in eval mode."""
        self.eval()
        plain = PlainP4ResNet(self.config)
        plain.stem = self.stem.export()
        for plain_block, block in zip(plain.blocks, self.blocks, strict=True):
            for name in ("bn1", "conv1", "bn2", "conv2", "bn3", "conv3", "shortcut"):
                module = getattr(block, name)
                setattr(plain_block, name, None if module is None else module.export())
        plain.head_bn = self.head_bn.export()
        plain.head_conv = self.head_conv.export()
        plain.head_fc1.load_state_dict(self.head_fc1.state_dict())
        plain.head_fc2.load_state_dict(self.head_fc2.state_dict())
        reference = PlainP4ResNet(self.config).state_dict()
        exported = {name: tensor.detach().clone().contiguous() for name, tensor in plain.state_dict().items()}
        if exported.keys() != reference.keys():
            raise RuntimeError(f"exported weights do not match the plain network: {exported.keys() ^ reference.keys()}")
        return exported

    def load_exported_state_dict(self, state: dict[str, torch.Tensor], tolerance: float = 1e-4) -> float:
        """Set this network so that `export_state_dict()` gives `state` back (e.g. a shipped bundle's weights).

        A convolution's exported filter is a linear function of its basis coefficients: each is recovered by least
        squares (exact, since an exported filter lies in the span of its basis); batch norms hold one value per field,
        repeated over the field's 4 channels by the export. Raises ValueError when the round trip is off by more than
        `tolerance` (weights that were not exported from this architecture). Returns the largest deviation.
        """
        for name, module in self.named_modules():
            if isinstance(module, enn.R2Conv):
                _fit_convolution(module, state[f"{name}.weight"])
            elif isinstance(module, enn.InnerBatchNorm):
                _load_batch_norm(module, {key: state[f"{name}.{key}"] for key in _BATCH_NORM_KEYS})
        self.head_fc1.load_state_dict({key: state[f"head_fc1.{key}"] for key in ("weight", "bias")})
        self.head_fc2.load_state_dict({key: state[f"head_fc2.{key}"] for key in ("weight", "bias")})
        exported = self.export_state_dict()
        weights = [key for key in exported if exported[key].is_floating_point()]  # not batch-norm step counters
        deviation = max(float((exported[key].float() - state[key].float()).abs().max()) for key in weights)
        if deviation > tolerance:
            raise ValueError(f"weights do not round-trip through this architecture (max deviation {deviation:.2e})")
        return deviation


_BATCH_NORM_KEYS = ("weight", "bias", "running_mean", "running_var")


def _fit_convolution(module: enn.R2Conv, filter_weight: torch.Tensor) -> None:
    """Basis coefficients whose expansion is `filter_weight` (least squares through the linear basis expansion)."""
    coefficients = module.weights
    with torch.no_grad():
        coefficients.zero_()
    optimizer = torch.optim.LBFGS(
        [coefficients],
        lr=1.0,
        max_iter=500,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )
    target = filter_weight.to(coefficients.dtype)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        expanded, _ = module.expand_parameters()
        loss = ((expanded.reshape(target.shape) - target) ** 2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    coefficients.grad = None


def _load_batch_norm(module: enn.InnerBatchNorm, exported: dict[str, torch.Tensor]) -> None:
    """One value per field: the export repeats it over the field's channels (contiguous fields of equal size)."""
    for size, _ in module._contiguous.items():
        start, end = getattr(module, f"indices_{size}")
        norm = getattr(module, f"batch_norm_[{size}]")
        with torch.no_grad():
            for key in _BATCH_NORM_KEYS:
                per_channel = exported[key][start:end].to(getattr(norm, key).dtype)
                getattr(norm, key).copy_(per_channel.view(-1, size)[:, 0])
