"""wsi.report: the files a whole-slide count leaves behind read back as written, and a failed write leaves none."""

from __future__ import annotations

import csv
import json
import pathlib

import numpy as np
import pytest
from conftest import assert_drawn_png
from PIL import Image

from wsi import report


def slide_summary(name: str = "case 1.svs") -> dict:
    return {
        "slide": name,
        "mpp_um": [0.25, 0.25],
        "tissue_mm2": 123.4567,
        "mitotic_figures": 42,
        "density_per_mm2": 0.3402,
        "hotspot": {"center_px": [4000.0, 2000.0], "center_mm": [1.0, 0.5], "area_mm2": 2.0, "count": 17},
        "mitotic_score": 3,
        "veterinary_2_37_mm2": {"count": 19, "center_mm": [1.01, 0.5]},
        "heatmap": "case 1/heatmap.png",
    }


def failed_summary(name: str = "broken.ndpi") -> dict:
    return {"slide": name, "error": "cannot read level 0: truncated file"}


def leftovers(folder) -> list[str]:
    return [path.name for path in folder.iterdir() if path.name.startswith(".tmp-")]


def test_geojson_holds_one_qupath_point_detection_per_point(tmp_path):
    xy_px = np.array([[10.123, 20.987], [30000.5, 40000.25]])
    probability = np.array([0.91234567, 0.5])
    path = tmp_path / "mitoses.geojson"

    report.write_geojson(path, xy_px, probability)
    document = json.loads(path.read_text())

    assert document["type"] == "FeatureCollection"
    assert len(document["features"]) == 2
    first = document["features"][0]
    assert first["type"] == "Feature"
    assert first["geometry"] == {"type": "Point", "coordinates": [10.12, 20.99]}
    assert first["properties"] == {
        "objectType": "detection",
        "classification": {"name": "Mitotic figure"},
        "probability": 0.912346,
        "measurements": {"probability": 0.912346},
    }
    assert document["features"][1]["geometry"]["coordinates"] == [30000.5, 40000.25]

    report.write_geojson(path, np.zeros((0, 2)), np.zeros(0), classification="Candidate")
    assert json.loads(path.read_text()) == {"type": "FeatureCollection", "features": []}


def test_geojson_refuses_mismatched_probabilities(tmp_path):
    with pytest.raises(ValueError, match="probability"):
        report.write_geojson(tmp_path / "x.geojson", np.zeros((3, 2)), np.zeros(2))


def test_geojson_classifies_atypical_figures_for_qupath(tmp_path):
    """With the classifier: "Mitotic figure (atypical)" or "Mitotic figure", P(atypical) as property and measurement,
    so that QuPath can filter and colour the two classes."""
    path = tmp_path / "mitoses.geojson"
    report.write_geojson(
        path,
        np.array([[1.0, 2.0], [3.0, 4.0]]),
        np.array([0.9, 0.8]),
        "Mitotic figure",
        np.array([0.71234567, 0.1]),
        np.array([True, False]),
    )
    first, second = (feature["properties"] for feature in json.loads(path.read_text())["features"])
    assert first["classification"] == {"name": "Mitotic figure (atypical)"}
    assert first["atypical_probability"] == 0.712346 and first["probability"] == 0.9
    assert first["measurements"] == {"probability": 0.9, "atypical_probability": 0.712346}
    assert second["classification"] == {"name": "Mitotic figure"} and second["atypical_probability"] == 0.1
    with pytest.raises(ValueError, match="one per point"):
        report.write_geojson(path, np.zeros((2, 2)), np.zeros(2), "Mitotic figure", np.zeros(1), np.zeros(1, bool))
    with pytest.raises(ValueError, match="come together"):
        report.write_geojson(path, np.zeros((2, 2)), np.zeros(2), "Mitotic figure", np.zeros(2))


def atypical_summary() -> dict:
    summary = slide_summary() | {"atypical_figures": 7, "atypical_share": 0.1667}
    summary["hotspot"] = summary["hotspot"] | {"atypical_figures": 4, "atypical_share": 0.2353}
    return summary


def unknown_atypical_summary() -> dict:
    summary = slide_summary("plain.svs") | {"atypical_figures": None, "atypical_share": None}
    summary["hotspot"] = summary["hotspot"] | {"atypical_figures": None, "atypical_share": None}
    return summary | {"atypical_unavailable": "the bundle has no atypical classifier"}


def test_the_atypical_share_in_the_csv_and_the_report(tmp_path):
    report.write_summary_csv(tmp_path / "summary.csv", [atypical_summary(), unknown_atypical_summary()])
    known, unknown = csv.DictReader(open(tmp_path / "summary.csv", newline=""))
    assert (known["atypical_figures"], known["atypical_share"]) == ("7", "0.1667")
    assert (known["hotspot_atypical_figures"], known["hotspot_atypical_share"]) == ("4", "0.2353")
    assert known["atypical_unavailable"] == ""
    columns = ("atypical_figures", "atypical_share", "hotspot_atypical_figures", "hotspot_atypical_share")
    assert [unknown[column] for column in columns] == [""] * 4  # unknown, not 0
    assert unknown["atypical_unavailable"] == "the bundle has no atypical classifier"
    report.write_report_html(tmp_path / "report.html", [atypical_summary(), unknown_atypical_summary()])
    page = (tmp_path / "report.html").read_text()
    assert "<td>7 (16.7%)</td><td>4 (23.5%)</td>" in page
    assert ">unknown: the bundle has no atypical classifier</td>" in page and ">unknown</td>" in page


def test_summary_json_round_trip(tmp_path):
    report.write_summary(tmp_path / "summary.json", slide_summary())
    assert json.loads((tmp_path / "summary.json").read_text()) == slide_summary()


def test_csv_round_trip_with_a_failed_slide(tmp_path):
    path = tmp_path / "summary.csv"
    no_hotspot = slide_summary("empty.svs") | {"hotspot": None, "veterinary_2_37_mm2": None, "mitotic_figures": 0}

    report.write_summary_csv(path, [slide_summary(), failed_summary(), no_hotspot])
    with open(path, newline="") as stream:
        reader = csv.DictReader(stream)
        rows = list(reader)

    assert tuple(reader.fieldnames) == report.CSV_COLUMNS
    assert [row["slide"] for row in rows] == ["case 1.svs", "broken.ndpi", "empty.svs"]
    good, failed, empty = rows
    assert float(good["mpp_um"]) == pytest.approx(0.25)
    assert float(good["tissue_mm2"]) == pytest.approx(123.4567)
    assert int(good["mitotic_figures"]) == 42
    assert float(good["density_per_mm2"]) == pytest.approx(0.3402)
    assert int(good["hotspot_count"]) == 17 and float(good["hotspot_area_mm2"]) == pytest.approx(2.0)
    assert float(good["hotspot_center_x_mm"]) == pytest.approx(1.0)
    assert float(good["hotspot_center_y_mm"]) == pytest.approx(0.5)
    assert int(good["mitotic_score"]) == 3 and int(good["count_2_37_mm2"]) == 19
    assert good["error"] == ""
    assert failed["error"] == "cannot read level 0: truncated file"
    assert all(failed[column] == "" for column in report.CSV_COLUMNS if column not in ("slide", "error"))
    assert empty["hotspot_count"] == "" and empty["count_2_37_mm2"] == "" and empty["mitotic_figures"] == "0"


def test_html_report_escapes_every_name(tmp_path):
    path = tmp_path / "report.html"
    hostile = slide_summary("<script>alert(1)</script>&.svs")
    report.write_report_html(path, [hostile, failed_summary("bad <b>name</b>.svs")])
    page = path.read_text()

    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;.svs" in page
    assert "bad &lt;b&gt;name&lt;/b&gt;.svs" in page
    assert 'class="error">cannot read level 0: truncated file<' in page
    assert '<img src="case%201/heatmap.png"' in page  # relative, the only asset
    assert "http" not in page and "<link" not in page
    assert ">17 in 2.00 mm&sup2;<" in page


def test_heatmap_has_the_thumbnail_size_and_the_hotspot_circle(tmp_path):
    height, width, downsample = 300, 400, 32.0
    thumbnail = np.full((height, width, 3), 200, dtype=np.uint8)
    rng = np.random.default_rng(0)
    xy_px = rng.normal((250 * downsample, 150 * downsample), 15 * downsample, size=(60, 2))
    centre_px, radius_px = (250 * downsample, 150 * downsample), 50 * downsample
    tissue = np.zeros((height // 2, width // 2), dtype=bool)  # another resolution than the thumbnail
    tissue[:, width // 4 :] = True
    path = tmp_path / "heatmap.png"

    report.draw_heatmap(path, thumbnail, downsample, xy_px, centre_px, radius_px, tissue_mask=tissue)

    assert_drawn_png(path)
    with Image.open(path) as image:
        assert image.size == (width, height)
        picture = np.asarray(image.convert("RGB")).astype(int)
    on_circle = picture[150, 250 + 50]
    assert np.abs(on_circle - 200).sum() > 60
    assert np.abs(picture[290, 10] - 200).sum() == 0  # off tissue, far from every point: the thumbnail itself
    assert np.abs(picture[150, 230] - 200).sum() > 30  # the density is drawn where the points are


def test_heatmap_without_points_or_hotspot(tmp_path):
    thumbnail = np.full((50, 80, 3), 230, dtype=np.uint8)
    report.draw_heatmap(tmp_path / "heatmap.png", thumbnail, 16.0, np.zeros((0, 2)), None, None)
    with Image.open(tmp_path / "heatmap.png") as image:
        assert image.size == (80, 50)


def _fail_midway(original):
    """Wrap a writer so that it writes part of its output, then fails like a full disk."""

    def failing(*args, **kwargs):
        original(*args, **kwargs)
        raise OSError("No space left on device")

    return failing


@pytest.mark.parametrize(
    ("name", "write", "owner", "method"),
    [
        ("mitoses.geojson", lambda p: report.write_geojson(p, np.ones((3, 2)), np.ones(3)), json, "dump"),
        ("summary.json", lambda p: report.write_summary(p, slide_summary()), json, "dump"),
        ("summary.csv", lambda p: report.write_summary_csv(p, [slide_summary()] * 3), csv.DictWriter, "writerow"),
        ("report.html", lambda p: report.write_report_html(p, [slide_summary()]), pathlib.Path, "write_text"),
        (
            "heatmap.png",
            lambda p: report.draw_heatmap(p, np.zeros((20, 30, 3), np.uint8), 1.0, np.ones((2, 2)), None, None),
            Image.Image,
            "save",
        ),
    ],
)
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, name, write, owner, method):
    path = tmp_path / name
    path.write_bytes(b"the previous run's file")
    monkeypatch.setattr(owner, method, _fail_midway(getattr(owner, method)))

    with pytest.raises(OSError, match="No space left"):
        write(path)

    assert path.read_bytes() == b"the previous run's file"
    assert leftovers(tmp_path) == []


def test_density_window_follows_the_hotspot(tmp_path):
    """Without a window the density is smoothed over about one hotspot diameter: a lone point's colour reaches
    about one radius away, not the far side of the slide."""
    thumbnail = np.full((200, 200, 3), 200, dtype=np.uint8)
    path = tmp_path / "heatmap.png"
    report.draw_heatmap(path, thumbnail, 10.0, np.array([[1000.0, 1000.0]]), (1000.0, 1000.0), 200.0)
    with Image.open(path) as image:
        picture = np.asarray(image.convert("RGB")).astype(int)
    assert np.abs(picture[100, 100 + 10] - 200).sum() > 30  # half a radius away: coloured
    assert np.abs(picture[100, 100 + 80] - 200).sum() == 0  # four radii away: untouched


def withheld_summary() -> dict:
    return slide_summary("skin.svs") | {
        "mitotic_score": None,
        "mitotic_score_withheld": "withheld: the hotspot (472 per mm2) is denser than any annotated region",
        "warning": "472 mitotic figures per mm2 of tissue in the hotspot",
        "note": "the 2 mm2 hotspot is larger than the slide's 0.61 mm2 of tissue",
    }


def test_a_withheld_score_and_a_note_in_the_csv(tmp_path):
    report.write_summary_csv(tmp_path / "summary.csv", [withheld_summary(), slide_summary()])
    withheld, scored = list(csv.DictReader(open(tmp_path / "summary.csv", newline="")))
    assert withheld["mitotic_score"] == "" and withheld["mitotic_score_withheld"].startswith("withheld: the hotspot")
    assert withheld["note"].startswith("the 2 mm2 hotspot") and withheld["warning"].startswith("472")
    assert scored["mitotic_score"] == "3" and scored["mitotic_score_withheld"] == "" and scored["note"] == ""


def test_a_withheld_score_and_a_note_in_the_report(tmp_path):
    report.write_report_html(tmp_path / "report.html", [withheld_summary()])
    page = (tmp_path / "report.html").read_text()
    assert ">withheld: the hotspot (472 per mm2) is denser than any annotated region</td>" in page
    assert '<td class="note">the 2 mm2 hotspot is larger than the slide&#x27;s 0.61 mm2 of tissue</td>' in page
    assert "<th>Note</th>" in page


def test_a_long_legend_is_wrapped_inside_the_heatmap(tmp_path):
    """The warning in the heatmap's title is a long line: it is broken between words, not cut off at the edge."""
    thumbnail = np.full((200, 300, 3), 200, dtype=np.uint8)
    legend = "12 mitotic figures\nWARNING: " + "denser than any region the MIDOG datasets annotate " * 4
    path = tmp_path / "heatmap.png"
    report.draw_heatmap(path, thumbnail, 10.0, np.zeros((0, 2)), None, None, legend=legend)
    with Image.open(path) as image:
        picture = np.asarray(image.convert("RGB")).astype(int)
    white_rows = (picture == 255).all(axis=2).any(axis=1)
    assert white_rows[:100].sum() > 60  # several lines of text on white, at the top
    assert (picture[:, -2] == 200).all()  # the legend's box stops before the right edge
