"""requirements.txt is exactly what the container imports: process.py, app/ and model/ need nothing from
requirements-train.txt, and everything they import is pinned in requirements.txt."""

from __future__ import annotations

import ast
import re
import sys

from conftest import REPO

DISTRIBUTION_OF = {"PIL": "pillow", "skimage": "scikit-image", "sklearn": "scikit-learn", "SimpleITK": "simpleitk"}
TRAINING_ONLY_MODULES = {"p4resnet.py"}  # the e2cnn network: training builds it, inference loads its export


def pinned(path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        match = re.match(r"\s*([A-Za-z0-9_.-]+)==", line)
        if match:
            names.add(match.group(1).lower())
    return names


def third_party_imports(paths) -> set[str]:
    found = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    own = ("app", "model", "torch", "__future__")
    return {name for name in found if name not in sys.stdlib_module_names and name not in own}


def test_runtime_requirements_cover_the_detector_and_nothing_else():
    runtime = [REPO / "process.py", *(REPO / "app").glob("*.py")]
    runtime += [p for p in (REPO / "model").glob("*.py") if p.name not in TRAINING_ONLY_MODULES]
    needed = {DISTRIBUTION_OF.get(name, name).lower() for name in third_party_imports(runtime)}
    runtime_pins = pinned(REPO / "requirements.txt")
    assert needed <= runtime_pins, f"imported by the detector but not in requirements.txt: {needed - runtime_pins}"
    training_pins = pinned(REPO / "requirements-train.txt")
    assert {"e2cnn", "matplotlib"} <= training_pins and not training_pins & runtime_pins
    assert not {"e2cnn", "matplotlib"} & runtime_pins


def test_dockerfile_installs_the_runtime_set_only():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert (
        "requirements.txt" in dockerfile
        and "requirements-train" not in dockerfile
        and "requirements-dev" not in dockerfile
    )


def test_wsi_requirements_cover_the_slide_counter_and_stay_out_of_the_container():
    needed = {DISTRIBUTION_OF.get(name, name).lower() for name in third_party_imports((REPO / "wsi").glob("*.py"))}
    pins = pinned(REPO / "requirements-wsi.txt") | pinned(REPO / "requirements.txt")
    needed = {"openslide-python" if name == "openslide" else name for name in needed} - {"wsi"}
    assert needed <= pins, f"imported by wsi/ but not pinned: {needed - pins}"
    assert "requirements-wsi" not in (REPO / "Dockerfile").read_text()
    assert not pinned(REPO / "requirements-wsi.txt") & pinned(REPO / "requirements.txt")
