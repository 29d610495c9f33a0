"""Shared fixtures: small random-weight bundles for plumbing tests (the shipped weights are tested separately)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from model.architecture import ArchitectureConfig
from model.atypical import CROP_PX, AtypicalHead, crops_around, descriptors
from model.bundle import Bundle, load_networks, read_bundle, write_atypical, write_bundle
from model.plain import PlainP4ResNet

REPO = Path(__file__).resolve().parents[1]


def assert_drawn_png(path: Path) -> None:
    """A figure is a PNG with something drawn on it (more than a few colours), not an empty canvas."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        colours = np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)
    assert len(colours) > 20, f"{Path(path).name} looks blank"


REAL_DATA = REPO.parent / "shared" / "data" / "real"


def random_plain_state(seed: int) -> dict[str, torch.Tensor]:
    """A plain network with random weights and non-trivial batch-norm statistics (test plumbing only)."""
    torch.manual_seed(seed)
    net = PlainP4ResNet(ArchitectureConfig())
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return net.state_dict()


@pytest.fixture(scope="session")
def random_bundle_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("bundle")
    write_bundle(
        Bundle(architecture=ArchitectureConfig(), models=[], threshold=0.5, candidate_floor=0.0),
        {"A": random_plain_state(1), "B": random_plain_state(2)},
        directory,
    )
    return directory


@pytest.fixture(scope="session")
def random_verifier_bundle_dir(random_bundle_dir, tmp_path_factory) -> Path:
    """The random bundle with a random verifier that reads every feature (96 px crops) and names by both thresholds:
    for plumbing and exactness tests (tiled == whole) of the second stage."""
    import json
    import shutil

    from model.bundle import BUNDLE_FILE
    from model.verifier import VerifierEntry, VerifierModel, feature_names, save_verifier

    directory = tmp_path_factory.mktemp("verifier-bundle")
    shutil.copytree(random_bundle_dir, directory, dirs_exist_ok=True)
    names = feature_names(96)
    weights = {
        "logit_min": 1.0,
        "logit_a_3x3": 0.5,
        "edge_distance": 0.5,
        "h_disk_minus_ring": 20.0,
        "blob_solidity": 1.0,
    }
    coef = np.array([weights.get(name, 0.0) for name in names])  # nets, neighbourhood, edge and pixels all count
    model = VerifierModel("logistic", 96, np.zeros(len(names)), np.ones(len(names)), np.array([1.0, -1.0]), coef)
    sha256 = save_verifier(model, directory / "verifier.safetensors")
    payload = json.loads((directory / BUNDLE_FILE).read_text())
    payload["verifier"] = VerifierEntry("verifier.safetensors", sha256, "logistic", 96, 0.5, 0.7).to_json()
    (directory / BUNDLE_FILE).write_text(json.dumps(payload))
    return directory


SAMPLE = REPO / "test" / "container" / "input" / "001.tiff"


def sample_crops(count: int, seed: int = 0) -> np.ndarray:
    """128 px crops of the shipped sample field at random places (real H&E pixels)."""
    image = tifffile.imread(SAMPLE)[..., :3]
    rng = np.random.default_rng(seed)
    xy = rng.integers(CROP_PX, min(image.shape[:2]) - CROP_PX, size=(count, 2))
    return crops_around(image, xy)


@pytest.fixture(scope="module")
def atypical_bundle_dir(random_bundle_dir, tmp_path_factory):
    """The random bundle with an atypical head whose threshold splits the sample crops' probabilities."""
    directory = tmp_path_factory.mktemp("atypical-bundle")
    shutil.copytree(random_bundle_dir, directory, dirs_exist_ok=True)
    bundle = read_bundle(directory)
    networks = load_networks(bundle, directory)
    features = descriptors(networks, sample_crops(6))
    rng = np.random.default_rng(1)
    head = AtypicalHead(features.mean(0), features.std(0) + 1e-6, rng.normal(0, 0.05, features.shape[1]), 0.0)
    threshold = float(np.median(head.probability(features)))
    write_atypical(bundle, head, threshold, {"note": "random head for tests"}, directory)
    return directory
