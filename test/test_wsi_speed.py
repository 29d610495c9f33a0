"""benchmarks.wsi_speed's measurement on a small slide: wsi.count runs in a subprocess and the minutes per cm2 of
tissue come from its own summary. No timing is asserted."""

from __future__ import annotations

import json

import pytest
from conftest import REPO
from test_wsi import stained_blotches, write_pyramid

from benchmarks import wsi_speed


def test_count_slide_reads_the_summary_and_divides_by_the_tissue(tmp_path):
    slide = write_pyramid(tmp_path / "blotches.tiff", stained_blotches(700, 640))
    result = wsi_speed.count_slide(REPO, slide, tmp_path / "out", threads=2)
    summary = json.loads((tmp_path / "out" / "blotches" / "summary.json").read_text())
    assert result["tissue_mm2"] == summary["tissue_mm2"] > 0
    assert result["mitotic_figures"] == summary["mitotic_figures"]
    expected = summary["detect_seconds"] / 60 / (summary["tissue_mm2"] / 100)
    assert result["minutes_per_cm2"] == pytest.approx(expected)
    assert result["wall_s"] > 0 and result["peak_rss_gib"] > 0
