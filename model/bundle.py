"""The shipped model bundle: `bundle.json` + one safetensors file per policy model (and the screen's, the verifier's and
the atypical classifier's, when the bundle has them), checksums verified on load.

safetensors holds tensors only, so loading never executes pickled code. `bundle.json` is the single record of what
inference needs (architecture, threshold, radii) and of where the weights came from (provenance, validation).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from model.architecture import ArchitectureConfig
from model.atomic_files import write_json_atomically
from model.atypical import AtypicalClassifier, AtypicalEntry, AtypicalHead
from model.matching import MATCH_RADIUS_UM
from model.plain import PlainP4ResNet
from model.screen import ScreenNet
from model.verifier import Verifier, VerifierEntry, VerifierModel

DEFAULT_BUNDLE_DIR = Path(__file__).resolve().parent / "weights"
BUNDLE_FILE = "bundle.json"
SCREEN_FILE = "screen.safetensors"
ATYPICAL_FILE = "atypical.safetensors"
FORMAT_VERSION = 1
POLICY_NAMES: tuple[str, str] = ("A", "B")  # the paper's augmentation policies, one model each; A leads the cascade


class BundleError(RuntimeError):
    """The bundle is missing, incomplete or its weights do not match their recorded checksums."""


@dataclass(frozen=True)
class ModelEntry:
    policy: str
    file: str
    sha256: str


@dataclass(frozen=True)
class ScreenEntry:
    """The fast first stage (`model.screen`): its weights and the threshold above which the P4 models look."""

    file: str
    sha256: str
    threshold: float


@dataclass
class Bundle:
    architecture: ArchitectureConfig
    models: list[ModelEntry]
    threshold: float
    agreement_radius_um: float = MATCH_RADIUS_UM
    candidate_min_distance_um: float = 6.0
    candidate_floor: float = 0.25
    """Lowest ensemble probability written: low enough that AP sees every real mitosis's rank, high enough that the
    cascade scores few windows (`model.cascade`; how it was chosen: docs/how-it-works.md, "The candidate floor")."""
    screen: ScreenEntry | None = None
    verifier: VerifierEntry | None = None
    """The second stage (`model.verifier`): when present, it gives every point its probability and the naming."""
    verifier_extra: dict = field(default_factory=dict)  # how the verifier was chosen and measured: informative only
    atypical: AtypicalEntry | None = None
    """The atypical classifier (`model.atypical`, MIDOG 2025 track 2): P(atypical) of each named figure."""
    atypical_extra: dict = field(default_factory=dict)  # how the classifier was chosen and measured: informative only
    extra: dict = field(default_factory=dict)  # provenance, validation, hnm, enrichment: informative only

    def to_json(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "architecture": self.architecture.to_dict(),
            "threshold": self.threshold,
            "agreement_radius_um": self.agreement_radius_um,
            "candidate_min_distance_um": self.candidate_min_distance_um,
            "candidate_floor": self.candidate_floor,
            "models": [vars(entry) for entry in self.models],
            **({"screen": vars(self.screen)} if self.screen else {}),
            **({"verifier": self.verifier.to_json() | self.verifier_extra} if self.verifier else {}),
            **({"atypical": self.atypical.to_json() | self.atypical_extra} if self.atypical else {}),
            **self.extra,
        }


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_bundle(bundle_dir: Path = DEFAULT_BUNDLE_DIR) -> Bundle:
    """Parse `bundle.json` (no weights loaded yet)."""
    path = Path(bundle_dir) / BUNDLE_FILE
    if not path.is_file():
        raise BundleError(f"no model bundle at {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:  # ValueError: JSONDecodeError
        raise BundleError(f"{path} cannot be read as JSON ({error}): restore it from the repository") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: malformed bundle (a JSON object was expected)")
    known = {
        "format_version",
        "architecture",
        "threshold",
        "agreement_radius_um",
        "candidate_min_distance_um",
        "candidate_floor",
        "models",
        "screen",
        "verifier",
        "atypical",
    }
    try:
        if data["format_version"] != FORMAT_VERSION:
            raise BundleError(f"{path}: format_version {data['format_version']} is not {FORMAT_VERSION}")
        return Bundle(
            architecture=ArchitectureConfig.from_dict(data["architecture"]),
            models=[ModelEntry(m["policy"], m["file"], m["sha256"]) for m in data["models"]],
            threshold=float(data["threshold"]),
            agreement_radius_um=float(data["agreement_radius_um"]),
            candidate_min_distance_um=float(data["candidate_min_distance_um"]),
            candidate_floor=float(data["candidate_floor"]),
            screen=ScreenEntry(data["screen"]["file"], data["screen"]["sha256"], float(data["screen"]["threshold"]))
            if "screen" in data
            else None,
            verifier=_verifier_entry(data["verifier"]) if "verifier" in data else None,
            verifier_extra={
                k: v for k, v in data.get("verifier", {}).items() if k not in VerifierEntry.__dataclass_fields__
            },
            atypical=_atypical_entry(data["atypical"]) if "atypical" in data else None,
            atypical_extra={
                k: v for k, v in data.get("atypical", {}).items() if k not in AtypicalEntry.__dataclass_fields__
            },
            extra={k: v for k, v in data.items() if k not in known},
        )
    except (KeyError, TypeError, ValueError) as error:
        raise BundleError(f"{path}: malformed bundle ({error!r})") from error


def _verifier_entry(record: dict) -> VerifierEntry:
    crop_px = record["crop_px"]
    return VerifierEntry(
        str(record["file"]),
        str(record["sha256"]),
        str(record["kind"]),
        None if crop_px is None else int(crop_px),
        float(record["threshold"]),
        float(record["strip_threshold"]),
    )


def _atypical_entry(record: dict) -> AtypicalEntry:
    return AtypicalEntry(str(record["file"]), str(record["sha256"]), float(record["threshold"]), int(record["crop_px"]))


def _verified_path(bundle_dir: Path, file: str, sha256: str) -> Path:
    path = Path(bundle_dir) / file
    if not path.is_file():
        raise BundleError(f"weights file {path} listed in the bundle is missing")
    actual = sha256_of(path)
    if actual != sha256:
        raise BundleError(f"checksum mismatch for {path}: expected {sha256}, found {actual}")
    return path


def _verified_weights(bundle_dir: Path, file: str, sha256: str) -> dict[str, torch.Tensor]:
    return load_file(str(_verified_path(bundle_dir, file, sha256)))


def load_networks(bundle: Bundle, bundle_dir: Path = DEFAULT_BUNDLE_DIR) -> list[PlainP4ResNet]:
    """Plain-torch networks of the bundle in its model order, eval mode, after checking every sha256."""
    networks = []
    for entry in bundle.models:
        network = PlainP4ResNet(bundle.architecture)
        network.load_state_dict(_verified_weights(bundle_dir, entry.file, entry.sha256), strict=True)
        networks.append(network.eval().fold_batchnorms())
    if len(networks) != 2:
        raise BundleError(f"the agreement ensemble needs exactly 2 models, the bundle lists {len(networks)}")
    return networks


def load_screen(bundle: Bundle, bundle_dir: Path = DEFAULT_BUNDLE_DIR) -> ScreenNet | None:
    """The bundle's screen in eval mode after checking its sha256, or None when the bundle has none."""
    if bundle.screen is None:
        return None
    network = ScreenNet()
    network.load_state_dict(_verified_weights(bundle_dir, bundle.screen.file, bundle.screen.sha256), strict=True)
    return network.eval()


def load_verifier(bundle: Bundle, bundle_dir: Path = DEFAULT_BUNDLE_DIR) -> Verifier | None:
    """The bundle's verifier after checking its sha256, or None when the bundle has none."""
    entry = bundle.verifier
    if entry is None:
        return None
    from safetensors.numpy import load_file as load_arrays

    arrays = load_arrays(str(_verified_path(bundle_dir, entry.file, entry.sha256)))
    try:
        model = VerifierModel.from_tensors(entry.kind, entry.crop_px, arrays)
    except KeyError as error:
        raise BundleError(f"{Path(bundle_dir) / entry.file}: not a {entry.kind} verifier ({error!r} missing)") from None
    return Verifier(model, entry.threshold, entry.strip_threshold)


def load_atypical(
    bundle: Bundle, networks: list[PlainP4ResNet], bundle_dir: Path = DEFAULT_BUNDLE_DIR
) -> AtypicalClassifier | None:
    """The bundle's atypical classifier over its (loaded) networks after checking its sha256; None without one."""
    entry = bundle.atypical
    if entry is None:
        return None
    from safetensors.numpy import load_file as load_arrays

    path = _verified_path(bundle_dir, entry.file, entry.sha256)
    try:
        return AtypicalClassifier(networks, AtypicalHead.from_arrays(load_arrays(str(path))), entry.threshold)
    except (KeyError, ValueError) as error:
        raise BundleError(f"{path}: not an atypical classifier of these networks ({error})") from None


def write_atypical(bundle: Bundle, head: AtypicalHead, threshold: float, extra: dict, bundle_dir: Path) -> Bundle:
    """Add (or replace) the atypical classifier of a written bundle: its arrays, checksum, threshold and record of
    how it was made."""
    from safetensors.numpy import save_file as save_arrays

    path = Path(bundle_dir) / ATYPICAL_FILE
    save_arrays(head.to_arrays(), str(path))
    bundle.atypical = AtypicalEntry(ATYPICAL_FILE, sha256_of(path), float(threshold))
    bundle.atypical_extra = dict(extra)
    write_json_atomically(bundle.to_json(), Path(bundle_dir) / BUNDLE_FILE)
    return bundle


def write_screen(bundle: Bundle, state_dict: dict[str, torch.Tensor], threshold: float, bundle_dir: Path) -> Bundle:
    """Add (or replace) the screen of a written bundle: `screen.safetensors`, its checksum and threshold."""
    path = Path(bundle_dir) / SCREEN_FILE
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    bundle.screen = ScreenEntry(SCREEN_FILE, sha256_of(path), float(threshold))
    write_json_atomically(bundle.to_json(), Path(bundle_dir) / BUNDLE_FILE)
    return bundle


def write_bundle(bundle: Bundle, state_dicts: dict[str, dict[str, torch.Tensor]], bundle_dir: Path) -> Bundle:
    """Write weights (one file per policy, `policy_<name>.safetensors`) and `bundle.json` with their checksums.

    `bundle.models` is rebuilt from `state_dicts` (policy -> plain state dict) in its insertion order.
    """
    bundle_dir = Path(bundle_dir)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for policy, state_dict in state_dicts.items():
        file_name = f"policy_{policy.lower()}.safetensors"
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(bundle_dir / file_name))
        entries.append(ModelEntry(policy, file_name, sha256_of(bundle_dir / file_name)))
    bundle.models = entries
    write_json_atomically(bundle.to_json(), bundle_dir / BUNDLE_FILE)
    return bundle
