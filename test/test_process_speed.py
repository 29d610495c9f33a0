"""benchmarks/process_speed.py's machinery on a tiny image with random weights: the stage probe observes the real
detection path (same output, every stage present, windows counted from what the networks scored), the measured
subprocess reports its own wall time and memory, and the report says what it should. No timing is asserted."""

from __future__ import annotations

import json
import sys

import numpy as np
import tifffile
from conftest import REPO

from benchmarks import process_speed
from model import Detector
from model.geometry import map_shape
from model.image_io import read_rgb
from model.spacing import DEFAULT_SPACING_MM

SPACING_UM = DEFAULT_SPACING_MM * 1000.0


def write_tiff(path, height_px: int = 300, width_px: int = 260, spacing_um: float = SPACING_UM, seed: int = 0):
    rgb = np.random.default_rng(seed).integers(120, 255, size=(height_px, width_px, 3), dtype=np.uint8)
    per_cm = 1e4 / spacing_um
    tifffile.imwrite(path, rgb, photometric="rgb", resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")
    return path


def test_stages_follow_the_detection_path_and_count_every_window(tmp_path, random_bundle_dir):
    image = write_tiff(tmp_path / "001.tiff", 200, 180)
    output = tmp_path / "stages.json"
    stages = process_speed.measure_stages(image, random_bundle_dir, output=output)
    seconds = stages["seconds"]
    assert set(seconds) == set(process_speed.STAGES), "no dense-map call went unattributed"
    assert seconds["screen"] is None and seconds["resample"] is None
    for stage in ("read", "load models", "P4 A dense map", "P4 B dense map", "candidates + agreement", "write"):
        assert seconds[stage] is not None and seconds[stage] >= 0
    rows, cols = map_shape(200, 180)
    assert stages["windows_per_map"] == rows * cols
    # random weights: candidates everywhere, so A scores every window once (no screen) and B needs every window too;
    # B's tiles are fitted to its two requests, whose rounded sides may score a window twice (counted twice)
    assert stages["windows_scored"]["P4 A"] == rows * cols
    assert rows * cols <= stages["windows_scored"]["P4 B"] < 1.5 * rows * cols
    fractions = process_speed.window_fractions(stages)
    assert fractions["P4 A"] == 1.0 and fractions["P4 B"] == stages["windows_scored"]["P4 B"] / (rows * cols)
    # observing changes nothing: the probe's run writes what an unobserved detector finds, and the hooks are gone
    detector = Detector(random_bundle_dir)
    detections = detector.detect(read_rgb(image)[0])
    assert len(json.loads(output.read_text())["points"]) == stages["points"] == len(detections.probability)
    assert all(not net._forward_hooks for net in detector.networks)


def test_resampled_image_times_resampling_and_counts_windows_at_model_spacing(tmp_path, random_bundle_dir):
    stages = process_speed.measure_stages(write_tiff(tmp_path / "001.tiff", 100, 90, 0.5), random_bundle_dir)
    assert stages["seconds"]["resample"] is not None
    assert stages["model_px"] == [180, 200]
    assert process_speed.window_fractions(stages)["P4 A"] == 1.0  # denominator: windows at the model's spacing


def test_end_to_end_child_is_measured_alone(tmp_path, random_bundle_dir):
    input_dir = tmp_path / "input"
    input_dir.mkdir()
    write_tiff(input_dir / "001.tiff")
    output = tmp_path / "out.json"
    run = process_speed.run_process(REPO, input_dir, output, threads=1, bundle=random_bundle_dir)
    assert run.returncode == 0 and run.wall_s > 0
    assert run.peak_rss_bytes > 50 * 2**20, "the child's own peak (torch loaded), in bytes"
    summary = process_speed.summarise_runs("current", [run], output)
    assert summary.points == len(json.loads(output.read_text())["points"])


def test_failed_child_is_reported_with_its_stderr(tmp_path):
    command = [sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"]
    run = process_speed.run_measured(command, process_speed.thread_env(1), cwd=tmp_path)
    assert run.returncode == 3 and "boom" in run.stderr_tail and run.peak_rss_bytes > 0


def test_report_names_absent_stages_and_the_ratio():
    stages = {
        "image_px": [7215, 5412],
        "device": "cpu",
        "autocast": "bfloat16",
        "torch_threads": 2,
        "seconds": dict.fromkeys(process_speed.STAGES, 1.0) | {"screen": None, "resample": None},
        "windows_per_map": 600_000,
        "windows_scored": {"P4 A": 600_000, "P4 B": 150_000},
        "peak_rss_bytes": 2**30,
    }
    run = {"wall_s": 10.0, "peak_rss_bytes": 2**30, "points": 3, "mitotic_figures": 1}
    result = {
        "image": "tile.jpg",
        "cpu": "Some CPU",
        "cpus": 2,
        "threads": 2,
        "repeats": 1,
        "current": run | {"label": "new"},
        "compare": run | {"label": "old", "wall_s": 40.0},
        "stages": stages,
    }
    report = process_speed.format_report(result)
    assert "Some CPU" in report and "threads 2" in report
    assert "screen" in report and "not run" in report
    assert "ratio old/new: wall 4.00x, peak RSS 1.00x" in report
    assert "P4 A 100.0%, P4 B 25.0%" in report and "-> 62.5%" in report
