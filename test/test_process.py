"""process.py end to end: platform schema in millimetres, spacing handling, and clear errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from conftest import REPO

import process
from model.spacing import DEFAULT_SPACING_MM

SPACING_UM = DEFAULT_SPACING_MM * 1000.0


def write_tiff(path, rgb, spacing_um: float | None = SPACING_UM):
    """TIFF with resolution tags in pixels per centimetre, as scanners' exports and MIDOG's files have."""
    if spacing_um is None:
        tifffile.imwrite(path, rgb, photometric="rgb" if rgb.ndim == 3 else None)
    else:
        per_cm = 1e4 / spacing_um
        tifffile.imwrite(path, rgb, photometric="rgb", resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")
    return path


def tissue_like(height_px: int = 300, width_px: int = 260, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(120, 255, size=(height_px, width_px, 3), dtype=np.uint8)


def run(tmp_path, bundle_dir, *extra):
    out = tmp_path / "out" / "mitotic-figures.json"
    code = process.main(["--input", str(tmp_path / "in"), "--output", str(out), "--bundle", str(bundle_dir), *extra])
    return code, out


def validate_schema(document: dict) -> None:
    assert set(document) == {"name", "type", "points", "version"}
    assert document["type"] == "Multiple points" and document["version"] == {"major": 1, "minor": 0}
    for point in document["points"]:
        assert set(point) == {"name", "point", "probability"}
        assert point["name"] in ("mitotic figure", "non-mitotic figure")
        assert len(point["point"]) == 3 and point["point"][2] == 0
        assert all(0 <= value <= 10 for value in point["point"][:2])
        assert 0 <= point["probability"] <= 1


def test_writes_schema_valid_millimetres(tmp_path, random_bundle_dir):
    (tmp_path / "in").mkdir()
    write_tiff(tmp_path / "in" / "001.tiff", tissue_like())
    code, out = run(tmp_path, random_bundle_dir, "--overlay", str(tmp_path / "overlay.png"))
    assert code == 0
    document = json.loads(out.read_text())
    validate_schema(document)
    assert document["points"], "random weights with floor 0 still yield candidates"
    xs = [p["point"][0] for p in document["points"]]
    assert max(xs) <= 260 * SPACING_UM / 1000 and min(xs) >= 0
    assert (tmp_path / "overlay.png").stat().st_size > 0


def test_missing_resolution_assumes_quarter_micron(tmp_path, random_bundle_dir, caplog):
    (tmp_path / "in").mkdir()
    rgb = tissue_like()
    write_tiff(tmp_path / "in" / "001.tiff", rgb, spacing_um=None)
    code, out = run(tmp_path, random_bundle_dir)
    assert code == 0
    assert "assuming 0.25 um/px" in caplog.text
    with_tags = tmp_path / "tagged"
    (with_tags / "in").mkdir(parents=True)
    write_tiff(with_tags / "in" / "001.tiff", rgb)
    _, tagged_out = run(with_tags, random_bundle_dir)
    assert json.loads(out.read_text()) == json.loads(tagged_out.read_text())


def test_rgba_equals_rgb(tmp_path, random_bundle_dir):
    rgb = tissue_like(seed=3)
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    outputs = []
    for name, pixels in (("rgb", rgb), ("rgba", rgba)):
        (tmp_path / name / "in").mkdir(parents=True)
        per_cm = 1e4 / SPACING_UM
        tifffile.imwrite(
            tmp_path / name / "in" / "001.tiff",
            pixels,
            photometric="rgb",
            resolution=(per_cm, per_cm),
            resolutionunit="CENTIMETER",
            extrasamples=[2] if name == "rgba" else None,
        )
        code, out = run(tmp_path / name, random_bundle_dir)
        assert code == 0
        outputs.append(json.loads(out.read_text()))
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize(
    "make_input, message",
    [
        (lambda d: (d / "001.tiff").write_bytes(b"II*\x00 this is not a tiff"), "not a readable image"),
        (lambda d: write_tiff(d / "001.tiff", np.zeros((200, 200), np.uint8), spacing_um=None), "channel"),
        (lambda d: write_tiff(d / "001.tiff", tissue_like(60, 300)), "smaller than the 78 px"),
        (lambda d: (d / "notes.txt").write_text("hello"), "no .tif/.tiff/.mha image"),
        (lambda d: None, "no .tif/.tiff/.mha image"),
    ],
    ids=["corrupt", "grayscale", "too-small", "no-image", "empty"],
)
def test_bad_input_fails_clearly_without_output(tmp_path, random_bundle_dir, capsys, make_input, message):
    (tmp_path / "in").mkdir()
    make_input(tmp_path / "in")
    code, out = run(tmp_path, random_bundle_dir)
    assert code != 0
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
    assert not out.exists()


def test_command_line_exit_code(tmp_path, random_bundle_dir):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "process.py"),
            "--input",
            str(tmp_path / "missing"),
            "--output",
            str(tmp_path / "o.json"),
            "--bundle",
            str(random_bundle_dir),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "does not exist" in result.stderr


def test_container_entrypoint_shell_name_is_ignored(tmp_path, random_bundle_dir, monkeypatch):
    """`ENTRYPOINT python -m process $0 $@` without arguments runs `python -m process /bin/sh`."""
    monkeypatch.setattr(sys, "argv", ["process.py", "/bin/sh"])
    parser = process.get_args_parser
    monkeypatch.setattr(
        process,
        "get_args_parser",
        lambda: _with_defaults(parser(), tmp_path, random_bundle_dir),
    )
    (tmp_path / "in").mkdir()
    write_tiff(tmp_path / "in" / "001.tiff", tissue_like())
    assert process.main() == 0
    validate_schema(json.loads((tmp_path / "out.json").read_text()))


def _with_defaults(parser, tmp_path, bundle_dir):
    parser.set_defaults(input=tmp_path / "in", output=tmp_path / "out.json", bundle=bundle_dir)
    return parser


def test_batch_mode_writes_one_file_per_image_and_reports_bad_ones(tmp_path, random_bundle_dir, capsys):
    (tmp_path / "in").mkdir()
    write_tiff(tmp_path / "in" / "001.tiff", tissue_like(seed=1))
    write_tiff(tmp_path / "in" / "002.tiff", tissue_like(seed=2))
    (tmp_path / "in" / "003.tiff").write_bytes(b"broken")
    out_dir = tmp_path / "out"
    code = process.main(
        ["--input", str(tmp_path / "in"), "--output-dir", str(out_dir), "--bundle", str(random_bundle_dir)]
    )
    assert code == 1 and "003.tiff" in capsys.readouterr().err
    assert sorted(p.name for p in out_dir.iterdir()) == ["001.json", "002.json"]
    for path in out_dir.iterdir():
        validate_schema(json.loads(path.read_text()))


def test_no_verifier_writes_the_dense_nets_output_exactly(tmp_path, random_bundle_dir, random_verifier_bundle_dir):
    """`--no-verifier` on a bundle with a verifier writes byte for byte what the same bundle without one writes; by
    default the verifier's probabilities are written instead."""
    (tmp_path / "in").mkdir()
    write_tiff(tmp_path / "in" / "001.tiff", tissue_like(400, 380))
    outputs = {}
    for label, bundle, extra in (
        ("none", random_bundle_dir, ()),
        ("off", random_verifier_bundle_dir, ("--no-verifier",)),
        ("on", random_verifier_bundle_dir, ()),
    ):
        code, out = run(tmp_path, bundle, "--precision", "fp32", *extra)
        assert code == 0
        outputs[label] = out.read_bytes()
        validate_schema(json.loads(outputs[label]))
    assert outputs["off"] == outputs["none"]
    assert outputs["on"] != outputs["none"]


def test_single_image_mode_says_where_it_wrote(tmp_path, random_bundle_dir, caplog):
    (tmp_path / "in").mkdir()
    write_tiff(tmp_path / "in" / "001.tiff", tissue_like())
    with caplog.at_level("INFO"):
        code, out = run(tmp_path, random_bundle_dir)
    assert code == 0 and out.is_file()
    assert f"written to {out}" in caplog.text
