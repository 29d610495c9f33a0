"""wsi.count's bad inputs: a damaged tile cache, an unreadable tile, a full disk, Ctrl-C with workers; an implausible
count withholds its score; a hotspot larger than the tissue is noted; the command names itself.

Most tests run the real command on small pyramidal TIFFs (`test_wsi.write_pyramid`) with the slide read through
OpenSlide as always, but with a fake detector (`fake_detector`): the plumbing is under test here, not the
networks, and a fake is instant and says exactly how many points each tile has.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("openslide")
import openslide  # noqa: E402
from test_wsi import stained_blotches, write_pyramid  # noqa: E402

from model.bundle import read_bundle  # noqa: E402
from wsi import count, detect  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


class FakeDetector:
    """Names a point every `step_px` pixels of whatever it is given (probability 0.9): a known count per tile. With
    `atypical`, as a detector with the atypical classifier: the points of every other column of its grid are atypical
    (P(atypical) 0.8, the others 0.2)."""

    def __init__(self, step_px: int = 64, atypical: bool = False) -> None:
        self.step_px, self.atypical = step_px, atypical
        self.calls: list[str] = []

    def detect(self, rgb: np.ndarray, spacing_mm, source: str = "") -> SimpleNamespace:
        self.calls.append(source.split()[-1])
        ys, xs = np.mgrid[
            self.step_px // 2 : rgb.shape[0] : self.step_px, self.step_px // 2 : rgb.shape[1] : self.step_px
        ]
        xy = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
        found = SimpleNamespace(
            xy_px=xy, probability=np.full(len(xy), 0.9), is_mitosis=np.ones(len(xy), bool), atypical_probability=None
        )
        if self.atypical:
            found.is_atypical = (xy[:, 0] // self.step_px) % 2 == 1
            found.atypical_probability = np.where(found.is_atypical, 0.8, 0.2)
        return found


@pytest.fixture
def fake_detector(monkeypatch) -> FakeDetector:
    """The detector every tile of this process gets; the slide is still read through OpenSlide."""
    fake = FakeDetector()
    monkeypatch.setattr(detect, "_detector", lambda settings: fake)
    return fake


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> Path:
    """Two small slides of tissue everywhere (700 x 820 px at 0.25 um/px: 12 tiles of 256 px each)."""
    folder = tmp_path_factory.mktemp("slides")
    write_pyramid(folder / "first.tiff", stained_blotches(700, 820, seed=1))
    write_pyramid(folder / "second.tiff", stained_blotches(700, 820, seed=2))
    return folder


def run_count(out: Path, bundle: Path, *slides: Path, extra: tuple[str, ...] = ()) -> int:
    argv = [*map(str, slides), "--out", str(out), "--bundle", str(bundle), "--precision", "fp32", "--tile-px", "256"]
    return count.main([*argv, *extra])


def errors(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("error: ")]


def no_temporaries(folder: Path) -> bool:
    return not [path for path in folder.rglob(".tmp-*")]


# 1. a damaged cache


def damage_empty(path: Path) -> None:
    path.write_bytes(b"")


def damage_truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def damage_garbage(path: Path) -> None:
    path.write_bytes(b"\x93NUMPY not really" * 10)


def damage_array_missing(path: Path) -> None:
    np.savez(path.with_suffix(""), xy_px=np.zeros((3, 2)), probability=np.zeros(3))  # np.savez adds .npz


def damage_lengths(path: Path) -> None:
    np.savez(
        path.with_suffix(""), xy_px=np.zeros((3, 2)), probability=np.zeros(2), is_mitosis=np.ones(3, bool), seconds=1.0
    )


def damage_atypical_without_a_classifier(path: Path) -> None:
    """A whole tile, but with P(atypical) in a cache whose bundle has no classifier: not this cache's tile."""
    result = detect.TileResult.load(path, path.stem)
    replace(result, atypical_probability=np.full(len(result.xy_px), 0.5), is_atypical=result.is_mitosis).save(path)


@pytest.mark.parametrize(
    "damage",
    [
        damage_empty,
        damage_truncated,
        damage_garbage,
        damage_array_missing,
        damage_lengths,
        damage_atypical_without_a_classifier,
    ],
)
def test_a_damaged_cached_tile_is_detected_again(slides, random_bundle_dir, fake_detector, tmp_path, caplog, damage):
    out = tmp_path / "out"
    assert run_count(out, random_bundle_dir, slides / "first.tiff") == 0
    first = json.loads((out / "first" / "summary.json").read_text())
    damage(out / "first" / "tiles" / "r0001_c0002.npz")
    fake_detector.calls.clear()
    caplog.clear()

    assert run_count(out, random_bundle_dir, slides / "first.tiff") == 0

    assert fake_detector.calls == ["r0001_c0002"]  # only the damaged tile, once
    redone = [record.getMessage() for record in caplog.records if "damaged" in record.getMessage()]
    assert len(redone) == 1 and "r0001_c0002.npz" in redone[0] and "detecting it again" in redone[0], redone
    assert json.loads((out / "first" / "summary.json").read_text())["mitotic_figures"] == first["mitotic_figures"]


@pytest.mark.parametrize("stamp", ['{"fingerprint": "ab', "", "[1, 2]", '{"fingerprint": 3}'])
def test_a_damaged_cache_settings_json_is_redone(slides, random_bundle_dir, fake_detector, tmp_path, caplog, stamp):
    """Nothing says how the cached tiles were made: all are detected again, and settings.json is written again."""
    out = tmp_path / "out"
    assert run_count(out, random_bundle_dir, slides / "first.tiff") == 0
    tiles = len(fake_detector.calls)
    (out / "first" / "tiles" / "settings.json").write_text(stamp)
    fake_detector.calls.clear()
    caplog.clear()

    assert run_count(out, random_bundle_dir, slides / "first.tiff") == 0

    assert len(fake_detector.calls) == tiles == 12
    redone = [record.getMessage() for record in caplog.records if "settings.json" in record.getMessage()]
    assert len(redone) == 1 and "damaged" in redone[0] and "redone" in redone[0], redone
    assert "fingerprint" in json.loads((out / "first" / "tiles" / "settings.json").read_text())
    fake_detector.calls.clear()
    assert run_count(out, random_bundle_dir, slides / "first.tiff") == 0 and fake_detector.calls == []


def atypical_features(out: Path) -> list[tuple[str, float | None]]:
    """(class, P(atypical) or None) of each figure in first.tiff's mitoses.geojson."""
    features = json.loads((out / "first" / "mitoses.geojson").read_text())["features"]
    return [(f["properties"]["classification"]["name"], f["properties"].get("atypical_probability")) for f in features]


def test_the_cache_is_redone_when_the_atypical_classifier_comes_or_goes(
    slides, random_bundle_dir, atypical_bundle_dir, fake_detector, tmp_path, caplog
):
    """The cache's fingerprint names the bundle's atypical classifier (its sha256, or none): tiles cached without
    P(atypical) are not read as "none atypical" once the bundle has the classifier, nor the other way round; and a
    tile without P(atypical) in a cache that should have it is detected again."""
    plain = count.Settings("0" * 64, "fp32", None, 256)
    classifier_sha256 = read_bundle(atypical_bundle_dir).atypical.sha256
    assert plain.fingerprint() != replace(plain, atypical_sha256=classifier_sha256).fingerprint()
    out = tmp_path / "out"
    assert run_count(out, random_bundle_dir, slides / "first.tiff") == 0
    assert json.loads((out / "first" / "summary.json").read_text())["atypical_figures"] is None
    fake_detector.atypical, fake_detector.calls = True, []
    assert run_count(out, atypical_bundle_dir, slides / "first.tiff") == 0
    assert len(fake_detector.calls) == 12  # every tile again, now with P(atypical)
    assert json.loads((out / "first" / "tiles" / "settings.json").read_text())["atypical_sha256"] == classifier_sha256
    summary = json.loads((out / "first" / "summary.json").read_text())
    features = atypical_features(out)
    called = [name == "Mitotic figure (atypical)" for name, _ in features]
    assert [p for _, p in features] == [0.8 if atypical else 0.2 for atypical in called]
    assert summary["atypical_figures"] == sum(called) and 0 < sum(called) < len(called) == summary["mitotic_figures"]
    assert summary["atypical_share"] == round(sum(called) / len(called), 4)

    tile = out / "first" / "tiles" / "r0001_c0002.npz"
    replace(detect.TileResult.load(tile, tile.stem), atypical_probability=None, is_atypical=None).save(tile)
    fake_detector.calls.clear()
    caplog.clear()
    assert run_count(out, atypical_bundle_dir, slides / "first.tiff") == 0
    assert fake_detector.calls == ["r0001_c0002"]
    assert any("P(atypical) missing" in record.getMessage() for record in caplog.records)
    again = json.loads((out / "first" / "summary.json").read_text())
    assert again["atypical_figures"] == summary["atypical_figures"] and again["hotspot"] == summary["hotspot"]

    fake_detector.atypical, fake_detector.calls = False, []
    assert run_count(out, random_bundle_dir, slides / "first.tiff") == 0
    assert len(fake_detector.calls) == 12 and {p for _, p in atypical_features(out)} == {None}


def test_without_an_atypical_classifier_the_atypical_numbers_are_null_with_why(
    slides, random_bundle_dir, fake_detector, tmp_path
):
    """Null (not 0) with `atypical_unavailable`, in summary.json, summary.csv and report.html; every figure is a
    plain "Mitotic figure" without a P(atypical)."""
    out = tmp_path / "out"
    assert run_count(out, random_bundle_dir, slides / "first.tiff", extra=("--hotspot-mm2", "0.01")) == 0
    summary = json.loads((out / "first" / "summary.json").read_text())
    assert summary["atypical_figures"] is None and summary["atypical_share"] is None
    assert summary["atypical_unavailable"].startswith("the bundle has no atypical classifier")
    assert summary["hotspot"]["count"] > 0
    assert summary["hotspot"]["atypical_figures"] is None and summary["hotspot"]["atypical_share"] is None
    row = next(csv.DictReader(open(out / "summary.csv", newline="")))
    columns = ("atypical_figures", "atypical_share", "hotspot_atypical_figures", "hotspot_atypical_share")
    assert [row[column] for column in columns] == [""] * 4
    assert row["atypical_unavailable"] == summary["atypical_unavailable"]
    assert ">unknown: the bundle has no atypical classifier" in (out / "report.html").read_text()
    assert set(atypical_features(out)) == {("Mitotic figure", None)}


# 2. an unreadable tile


@pytest.fixture
def one_unreadable_tile(monkeypatch) -> None:
    """OpenSlide fails to read one region of first.tiff, as on a slide with a corrupt JPEG tile."""
    real = openslide.OpenSlide.read_region

    def read_region(self, location, level, size):
        if Path(self._filename).name == "first.tiff" and location[0] > 0 and location[1] > 0:
            raise openslide.OpenSlideError("TIFFRGBAImageGet failed")
        return real(self, location, level, size)

    monkeypatch.setattr(openslide.OpenSlide, "read_region", read_region)


def test_an_unreadable_tile_fails_its_slide_only(
    slides, random_bundle_dir, fake_detector, one_unreadable_tile, tmp_path, capsys
):
    out = tmp_path / "out"
    code = run_count(out, random_bundle_dir, slides / "first.tiff", slides / "second.tiff")

    lines = errors(capsys)
    assert code == 1 and len(lines) == 1, lines
    assert "first.tiff: tile r0001_c0001: cannot read" in lines[0] and "TIFFRGBAImageGet failed" in lines[0]
    assert json.loads((out / "second" / "summary.json").read_text())["mitotic_figures"] > 0
    assert not (out / "first" / "summary.json").exists()
    rows = {row["slide"]: row for row in csv.DictReader(open(out / "summary.csv", newline=""))}
    assert list(rows) == ["first.tiff", "second.tiff"]  # the order given
    assert "TIFFRGBAImageGet failed" in rows["first.tiff"]["error"] and rows["second.tiff"]["error"] == ""
    assert "TIFFRGBAImageGet failed" in (out / "report.html").read_text()
    assert len(list((out / "first" / "tiles").glob("*.npz"))) == 5  # the tiles read before it are kept


def test_an_unreadable_tile_on_a_dask_cluster(
    slides, random_bundle_dir, fake_detector, one_unreadable_tile, tmp_path, capsys
):
    """The same through `dask_runner` (a cluster in this process, so the fakes reach its workers)."""
    from distributed import LocalCluster

    out = tmp_path / "out"
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        extra = ("--scheduler", cluster.scheduler_address)
        code = run_count(out, random_bundle_dir, slides / "first.tiff", slides / "second.tiff", extra=extra)
    lines = errors(capsys)
    assert code == 1 and len(lines) == 1 and "first.tiff: tile r" in lines[0], lines
    assert (out / "second" / "summary.json").is_file() and not (out / "first" / "summary.json").exists()


# 3. a full disk


def disk_full(*args, **kwargs):
    """Any writer, on a full disk."""
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_while_writing_a_heatmap(slides, random_bundle_dir, fake_detector, tmp_path, monkeypatch, capsys):
    real = Image.Image.save

    def save(self, target, *args, **kwargs):
        if Path(target).parent.name == "first":
            disk_full()
        return real(self, target, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    out = tmp_path / "out"
    code = run_count(out, random_bundle_dir, slides / "first.tiff", slides / "second.tiff")

    lines = errors(capsys)
    assert code == 1 and len(lines) == 1, lines
    assert "first.tiff: cannot write" in lines[0] and "heatmap.png: No space left on device" in lines[0]
    summary = json.loads((out / "first" / "summary.json").read_text())  # the counts were complete: they stay
    assert summary["mitotic_figures"] == len(json.loads((out / "first" / "mitoses.geojson").read_text())["features"])
    assert not (out / "first" / "heatmap.png").exists() and (out / "second" / "heatmap.png").is_file()
    rows = {row["slide"]: row for row in csv.DictReader(open(out / "summary.csv", newline=""))}
    assert "No space left" in rows["first.tiff"]["error"]
    assert rows["first.tiff"]["mitotic_figures"] == str(summary["mitotic_figures"])
    assert no_temporaries(out)


@pytest.mark.parametrize(
    ("owner", "writer", "file_name"),
    [(count.report, "write_summary_csv", "summary.csv"), (detect.TileResult, "save", "r0000_c0000.npz")],
)
def test_a_full_disk_while_caching_a_tile_or_writing_the_run_summary_stops_in_one_line(
    slides, random_bundle_dir, fake_detector, tmp_path, monkeypatch, capsys, owner, writer, file_name
):
    monkeypatch.setattr(owner, writer, disk_full)
    out = tmp_path / "out"
    assert run_count(out, random_bundle_dir, slides / "first.tiff") == 1
    lines = errors(capsys)
    assert len(lines) == 1 and lines[0].startswith("error: cannot write "), lines
    assert lines[0].endswith(f"{file_name}: No space left on device"), lines
    assert no_temporaries(out)


# 4. Ctrl-C with workers


def test_workers_are_started_ignoring_ctrl_c():
    """What a local cluster's workers are started with: SIGINT ignored, inherited across exec, so Ctrl-C (sent to
    the whole process group) is the parent's alone; the parent's own handler comes back after."""
    before = signal.getsignal(signal.SIGINT)
    command = [sys.executable, "-c", "import signal; print(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)"]
    with count.sigint_ignored():
        child = subprocess.run(command, capture_output=True, text=True, check=True)
    assert child.stdout.strip() == "True"
    assert signal.getsignal(signal.SIGINT) is before
    assert subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip() == "False"


@pytest.mark.skipif(sys.platform == "win32", reason="process groups and SIGINT are POSIX")
def test_ctrl_c_with_two_workers_is_one_line(random_bundle_dir, tmp_path):
    """Ctrl-C in a terminal reaches every process of the group: the parent answers in one line with exit 130, no
    worker prints a traceback, and the tiles done are whole."""
    slide = write_pyramid(tmp_path / "big.tiff", stained_blotches(1400, 1400, seed=4))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "wsi.count", str(slide), "--out", str(out), "--bundle", str(random_bundle_dir)]
    command += ["--precision", "fp32", "--tile-px", "256", "--workers", "2"]
    process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    while not list((out / "big" / "tiles").glob("*.npz")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process.poll() is None, "the run ended before it could be interrupted"
    os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to the whole foreground group
    _, err = process.communicate(timeout=120)

    assert process.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    lines = [line for line in err.splitlines() if not line.startswith("INFO ")]  # nor a warning per cancelled tile
    assert lines == ["error: interrupted; the tiles done are kept: run the same command again to continue"], err
    assert no_temporaries(out) and not (out / "summary.csv").exists()
    for path in (out / "big" / "tiles").glob("*.npz"):
        detect.TileResult.load(path, path.stem)  # whole


# 5 and 6. an implausible count, a hotspot larger than the tissue


def test_an_implausible_hotspot_withholds_the_score(slides, random_bundle_dir, tmp_path, monkeypatch, caplog):
    """12 tiles x 16 fake points in 0.036 mm2: thousands per mm2. The score is null with its reason in
    summary.json, summary.csv and report.html, and the heatmap's title says why; the small slide (0.04 mm2 of
    tissue under a 2 mm2 hotspot) also gets its note."""
    monkeypatch.setattr(detect, "_detector", lambda settings: FakeDetector(step_px=64))
    legends = []
    real = count.report.draw_heatmap
    monkeypatch.setattr(count.report, "draw_heatmap", lambda *a, **k: legends.append(k["legend"]) or real(*a, **k))
    out = tmp_path / "out"
    assert run_count(out, random_bundle_dir, slides / "first.tiff") == 0

    summary = json.loads((out / "first" / "summary.json").read_text())
    assert "denser than any region" in summary["warning"]
    assert summary["mitotic_score"] is None and summary["mitotic_score_withheld"].startswith("withheld: the hotspot")
    assert "larger than the slide's 0.04 mm2 of tissue" in summary["note"]
    row = next(csv.DictReader(open(out / "summary.csv", newline="")))
    assert row["mitotic_score"] == "" and row["mitotic_score_withheld"] == summary["mitotic_score_withheld"]
    assert row["note"] == summary["note"]
    page = (out / "report.html").read_text()
    assert ">withheld: the hotspot" in page and "larger than the slide&#x27;s" in page
    assert "mitotic score withheld" in legends[0] and "WARNING: " in legends[0] and "denser than any" in legends[0]
    assert any("mitotic score withheld" in record.getMessage() for record in caplog.records)


def test_a_plausible_hotspot_within_the_tissue_keeps_its_score(slides, random_bundle_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(detect, "_detector", lambda settings: FakeDetector(step_px=400))  # a few points
    out = tmp_path / "out"
    assert run_count(out, random_bundle_dir, slides / "first.tiff", extra=("--hotspot-mm2", "0.01")) == 0
    summary = json.loads((out / "first" / "summary.json").read_text())
    assert summary["mitotic_score"] in (1, 2, 3)
    assert "warning" not in summary and "mitotic_score_withheld" not in summary and "note" not in summary


# 7. the command's help


def test_help_names_the_command_and_every_option():
    text = count.get_args_parser().format_help()
    assert text.startswith("usage: python -m wsi.count ")
    assert "autocast precision" in text and "fp16 on CUDA, bf16 on CPUs that support it" in text
