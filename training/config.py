"""Training configurations as TOML files (`configs/*.toml`), read into typed, validated settings.

Why files: a run is reproduced from its config alone (`paper` = the published recipe for GPUs, `cpu-small` = what
fits a few CPU hours, `smoke` / `tiny` = minutes, for CI). Unknown keys are errors, so a typo cannot silently fall
back to a default. Every run folder gets a copy of the resolved config (`config.json`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from model.bundle import POLICY_NAMES
from model.precision import PRECISIONS
from training.data.sources import NEGATIVE_MIN_DISTANCE_UM, TrainingData, load_training_data
from training.data.split import VALIDATION_FRACTION

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


@dataclass(frozen=True)
class DataSettings:
    grid_step_px: int = 32  # spacing of negative grid sites
    min_distance_um: float = NEGATIVE_MIN_DISTANCE_UM  # grid sites this close to a mitotic figure are not negatives
    validation_fraction: float = VALIDATION_FRACTION
    split_seed: int = 0

    def load(self, root: Path) -> TrainingData:
        """The training data of `root` (the real offline folder or a MIDOG-format one) under these settings: the one
        place the settings are handed to `training.data.sources.load_training_data`, so no caller drops one."""
        return load_training_data(
            root, self.grid_step_px, self.min_distance_um, self.validation_fraction, self.split_seed
        )


@dataclass(frozen=True)
class TrainSettings:
    iterations: int = 150_000
    cycle: int = 10_000  # period of the cyclic (cosine, warm-restart) learning rate
    batch_size: int = 128  # half positives (oversampled), half negatives
    lr: float = 0.03
    weight_decay: float = 1e-4
    momentum: float = 0.9
    eval_every: int = 1000
    val_negatives: int = 20_000  # cap on validation negative sites (a fixed random subset when there are more)
    precision: str = "auto"  # model.precision's rule: auto = fp16 on CUDA, bf16 on a CPU with native bf16, else fp32
    threads: int = 0  # torch CPU threads; 0 = torch's choice
    architecture: str = "paper"  # "paper" (70 layers) or "narrow" (the same 70 layers, fewer fields: for CI only)
    lab_transfer_p: float = 0.0  # LAB colour transfer (Reinhard) added to the policy with this probability
    snapshots: bool = False  # export every evaluated iteration and keep the last (the caller chooses out of fold)


@dataclass(frozen=True)
class HnmSettings:
    k: tuple[int, ...] = (1000, 10_000, 100_000)  # subset sizes of the grid (capped at the number of negatives)
    seeds: tuple[int, ...] = (0, 1, 2)
    refine: bool = True  # add the geometric midpoints around the best K (one refinement round)
    random_control: bool = True  # random subsets of the same sizes
    iterations: int = 30_000  # per trial
    init: str = "scratch"  # "scratch" (paper) or "base" (fine-tune the base model: what CPUs can afford)
    lr: float = 0.03
    suspect_positive_quantile: float = 0.1  # "unlabeled" negatives scoring above this quantile of held-out mitoses


@dataclass(frozen=True)
class EnrichmentSettings:
    quantile: float = 0.999  # residual optical density above this per-image quantile makes a candidate
    max_per_image: int = 50
    min_distance_px: int = 40
    min_residual_fraction: float = 0.12  # below: dark hematoxylin (possibly a mitosis), not pigment / ink


@dataclass(frozen=True)
class FinalSettings:
    policies: tuple[str, ...] = POLICY_NAMES
    iterations: int = 150_000
    init: str = "scratch"  # or "base"
    lr: float = 0.03
    seed: int = 0


@dataclass(frozen=True)
class ThresholdSettings:
    f1_tolerance: float = 0.01  # the lowest threshold within this of the best F1 is chosen (favours recall)


@dataclass(frozen=True)
class ScreenSettings:
    """The fast first stage (`training.screen`): distillation of the ensemble, threshold for `survival`."""

    iterations: int = 2000
    batch_size: int = 16  # crops of crop_cells^2 screen cells, plus batch_size // 4 positive crops
    crop_cells: int = 16  # 336 px crops
    lr: float = 2e-3
    max_pages: int = 200  # 1024 px pages of the training images the teacher scores
    positive_crops: int = 1000
    survival: float = 0.995  # share of the exact path's points (above the candidate floor) the screen must keep
    threads: int = 0


@dataclass(frozen=True)
class Config:
    name: str = "paper"
    data: DataSettings = field(default_factory=DataSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    hnm: HnmSettings = field(default_factory=HnmSettings)
    enrichment: EnrichmentSettings = field(default_factory=EnrichmentSettings)
    final: FinalSettings = field(default_factory=FinalSettings)
    threshold: ThresholdSettings = field(default_factory=ThresholdSettings)
    screen: ScreenSettings = field(default_factory=ScreenSettings)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _build(cls: type, values: dict, where: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(known)}")
    converted = {}
    for name, value in values.items():
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ValueError(f"{where}.{name} must be a table")
            converted[name] = _build(type(default), value, f"{where}.{name}")
        elif isinstance(default, tuple):
            converted[name] = tuple(value)
        elif isinstance(default, float) and isinstance(value, int):
            converted[name] = float(value)
        elif not isinstance(value, type(default)):
            raise ValueError(f"{where}.{name}: expected {type(default).__name__}, got {value!r}")
        else:
            converted[name] = value
    return cls(**converted)


def load_config(name_or_path: str | Path) -> Config:
    """A config by name (`configs/<name>.toml`) or by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        available = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.toml")))
        raise FileNotFoundError(f"config {name_or_path} not found (available: {available})")
    with open(path, "rb") as handle:
        values = tomllib.load(handle)
    config = _build(Config, {"name": path.stem} | values, path.name)
    if config.train.precision not in PRECISIONS:
        raise ValueError(f"{path.name}: train.precision must be one of {', '.join(PRECISIONS)}")
    if config.hnm.init not in ("scratch", "base") or config.final.init not in ("scratch", "base"):
        raise ValueError(f"{path.name}: init must be 'scratch' or 'base'")
    return config
