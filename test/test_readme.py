"""The README's promises to a newcomer hold: its Python snippet runs as written, and `pip install -e .` finds every
package (checked by building the project's wheel offline, from a copy of its sources)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile

import pytest
from conftest import REPO


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


def test_readme_snippet_runs_as_written():
    """The one Python block, run from the repository root in a fresh interpreter, finds the sample's mitoses."""
    (snippet,) = readme_python_blocks()
    result = subprocess.run([sys.executable, "-c", snippet], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    count = re.match(r"(\d+) mitotic figures at \(x, y\) mm: (\[.*\])$", result.stdout.strip())
    assert count is not None, result.stdout
    assert int(count.group(1)) >= 1 and count.group(2).startswith("[["), result.stdout


def test_project_is_installable(tmp_path):
    """What `pip install -e .` installs: every package of the house and process.py (a package left out of
    pyproject.toml's list would make `from app import ...` fail outside the repository)."""
    pytest.importorskip("setuptools", minversion="70.1")  # builds wheels without the `wheel` package
    source = tmp_path / "src"
    skip = shutil.ignore_patterns(".*", "runs", "out", "weights", "test", "docs", "*.png")
    shutil.copytree(REPO, source, ignore=skip)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), "."],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {path.parent.name for path in REPO.glob("*/__init__.py")}
    assert {"model", "app", "evaluation", "training", "wsi"} <= packages
    assert {f"{package}/__init__.py" for package in packages} <= names and "process.py" in names
