"""Hyper-parameters of the 70-layer P4 ResNet, and the geometry they imply.

Both the e2cnn network (`model.p4resnet`, training) and its plain-torch export (`model.plain`, inference) are built
from an `ArchitectureConfig`, which is also stored in `bundle.json`. Receptive field, output stride and layer count
are derived here from the config, never retyped, and checked against `model.geometry` when a network is built.

Layout (pre-activation bottleneck blocks, He et al. 2016, all convolutions "valid" so the network can be slid densely):

    stem      R2Conv 3 trivial -> 16 regular fields, 6x6, stride 2
    stage 1   16 fields (64 channels),  4 blocks, middle kernels 3,3,3,1
    stage 2   32 fields (128 channels), 7 blocks, first strided, middle kernels 3,3,3,1,1,1,1
    stage 3   64 fields (256 channels), 11 blocks, first strided, middle kernels 3,3,3,1x8
    head      BN-ReLU, 1x1 P4 conv, group pooling (max over the 4 rotations), 1x1 conv, ReLU, 1x1 conv -> 2 logits

Main-path weighted layers: 1 (stem) + 22 blocks x 3 + 3 (head) = 70. Blocks whose middle kernel is 1 deepen the net
without growing the receptive field, which is what keeps 70 layers at exactly 78 px.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from model import geometry

GROUP_ORDER = 4
"""Rotations in the symmetry group P4 (multiples of 90 degrees); a regular field has this many channels."""


@dataclass(frozen=True)
class StageConfig:
    """One resolution level: `fields` regular P4 fields, one block per entry of `kernels` (middle conv size)."""

    fields: int
    kernels: tuple[int, ...]
    strided: bool  # first block halves the resolution


@dataclass(frozen=True)
class ArchitectureConfig:
    stem_kernel: int = 6
    stem_stride: int = 2
    stem_fields: int = 16
    stages: tuple[StageConfig, ...] = field(
        default_factory=lambda: (
            StageConfig(16, (3, 3, 3, 1), strided=False),
            StageConfig(32, (3, 3, 3, 1, 1, 1, 1), strided=True),
            StageConfig(64, (3, 3, 3) + (1,) * 8, strided=True),
        )
    )
    bottleneck_ratio: int = 4  # middle fields = stage fields // ratio
    head_channels: int = 64  # invariant channels after group pooling
    num_classes: int = 2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ArchitectureConfig:
        stages = tuple(
            StageConfig(int(s["fields"]), tuple(int(k) for k in s["kernels"]), bool(s["strided"]))
            for s in data["stages"]
        )
        rest = {k: v for k, v in data.items() if k != "stages"}
        return cls(stages=stages, **rest)


@dataclass(frozen=True)
class BlockSpec:
    """Shape of one bottleneck block, in regular P4 fields (channels = fields * GROUP_ORDER)."""

    in_fields: int
    mid_fields: int
    out_fields: int
    kernel: int
    stride: int


def block_specs(config: ArchitectureConfig) -> list[BlockSpec]:
    """Every bottleneck block in order; the e2cnn network and its plain export are both built from this list."""
    specs, in_fields = [], config.stem_fields
    for stage in config.stages:
        mid_fields = max(1, stage.fields // config.bottleneck_ratio)
        for index, kernel in enumerate(stage.kernels):
            stride = 2 if (stage.strided and index == 0) else 1
            specs.append(BlockSpec(in_fields, mid_fields, stage.fields, kernel, stride))
            in_fields = stage.fields
    return specs


def _layer_geometry(config: ArchitectureConfig) -> list[tuple[int, int]]:
    """(kernel, stride) of every spatial layer on the main path, in order."""
    return [(config.stem_kernel, config.stem_stride)] + [(b.kernel, b.stride) for b in block_specs(config)]


def receptive_field_px(config: ArchitectureConfig) -> int:
    """Input window side that produces exactly one output cell."""
    field_px, jump_px = 1, 1
    for kernel, stride in _layer_geometry(config):
        field_px += (kernel - 1) * jump_px
        jump_px *= stride
    return field_px


def output_stride_px(config: ArchitectureConfig) -> int:
    jump_px = 1
    for _, stride in _layer_geometry(config):
        jump_px *= stride
    return jump_px


def spatial_sizes(config: ArchitectureConfig, input_px: int) -> list[int]:
    """Feature-map side after each spatial layer for a square input; raises if a strided layer would drop pixels.

    Dropping pixels at a strided layer would break both rotation equivariance and the equality between dense and
    per-window scoring, so valid inputs are exactly ``RF + k * stride``.
    """
    sizes, size = [], input_px
    for kernel, stride in _layer_geometry(config):
        if (size - kernel) % stride or size < kernel:
            raise ValueError(
                f"input of {input_px} px does not fit the stride grid at a {kernel}x{kernel}/{stride} layer"
            )
        size = (size - kernel) // stride + 1
        sizes.append(size)
    return sizes


def weighted_layer_count(config: ArchitectureConfig) -> int:
    """Convolutions on the main path (shortcut projections excluded, as in ResNet naming): stem + 3 per block + head."""
    return 1 + 3 * len(block_specs(config)) + 3


def check_matches_geometry(config: ArchitectureConfig) -> None:
    """Fail loudly when a config disagrees with the receptive field / stride that inference assumes."""
    rf, stride = receptive_field_px(config), output_stride_px(config)
    if (rf, stride) != (geometry.RECEPTIVE_FIELD_PX, geometry.OUTPUT_STRIDE_PX):
        raise ValueError(
            f"architecture has receptive field {rf} px / stride {stride} px, "
            f"geometry expects {geometry.RECEPTIVE_FIELD_PX} / {geometry.OUTPUT_STRIDE_PX}"
        )
    if spatial_sizes(config, rf)[-1] != 1:
        raise ValueError("a receptive-field-sized input must produce exactly one output cell")


def architecture(name: str) -> ArchitectureConfig:
    """The paper's 70-layer net, or a narrow twin with the same layers and receptive field (CI smoke runs only)."""
    if name == "paper":
        return ArchitectureConfig()
    if name == "narrow":
        paper = ArchitectureConfig()
        stages = tuple(StageConfig(4, stage.kernels, stage.strided) for stage in paper.stages)
        return ArchitectureConfig(stem_fields=4, stages=stages, head_channels=8)
    raise ValueError(f"unknown architecture {name!r} (paper or narrow)")
