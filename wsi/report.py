"""What `python -m wsi.count` leaves behind: per slide a QuPath GeoJSON of the points, a JSON summary and a heatmap
PNG; per run a CSV with one row per slide and one self-contained HTML page. Every file is written through
`app.output.atomic_output`, so an interrupted run never leaves a half-written file in place of an older one.
"""

from __future__ import annotations

import csv
import html
import json
import math
import urllib.parse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from model.atomic_files import atomic_output, write_json_atomically

CSV_COLUMNS = (
    "slide",
    "mpp_um",
    "tissue_mm2",
    "mitotic_figures",
    "density_per_mm2",
    "atypical_figures",
    "atypical_share",
    "hotspot_count",
    "hotspot_area_mm2",
    "hotspot_center_x_mm",
    "hotspot_center_y_mm",
    "hotspot_atypical_figures",
    "hotspot_atypical_share",
    "atypical_unavailable",
    "mitotic_score",
    "mitotic_score_withheld",
    "count_2_37_mm2",
    "warning",
    "note",
    "error",
)
"""Columns of `summary.csv`, one row per slide."""

_DENSITY_COLOURS = np.array([[255, 255, 178], [254, 204, 92], [253, 141, 60], [240, 59, 32], [189, 0, 38]], float)
"""Yellow to dark red (ColorBrewer YlOrRd): low to high density, readable over pink H&E."""
_DENSITY_MAX_ALPHA = 0.6
"""Opacity of the densest area: the tissue underneath stays visible."""
_DENSITY_FLOOR = 0.01
"""Densities below this fraction of the slide's highest are not coloured."""
_SMOOTHING_CELLS = 4.0
"""The density is smoothed on a grid whose cells are a quarter of the Gaussian's sd: cheap for any thumbnail."""
_DOT_COLOUR, _DOT_OUTLINE = (20, 20, 120), (255, 255, 255)
_CIRCLE_COLOUR = (0, 170, 0)


ATYPICAL_SUFFIX = " (atypical)"
"""Appended to the class of a figure the atypical classifier calls atypical: "Mitotic figure (atypical)"."""


def _feature(x: float, y: float, name: str, measurements: dict[str, float]) -> dict:
    """One QuPath Point detection: its class, and its numbers both as properties and as QuPath measurements."""
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [round(x, 2), round(y, 2)]},
        "properties": {
            "objectType": "detection",
            "classification": {"name": name},
            **measurements,
            "measurements": measurements,  # what QuPath shows as the detection's measurements
        },
    }


def write_geojson(
    path: Path,
    xy_px: np.ndarray,
    probability: np.ndarray,
    classification: str = "Mitotic figure",
    atypical_probability: np.ndarray | None = None,
    is_atypical: np.ndarray | None = None,
) -> None:
    """A GeoJSON FeatureCollection that QuPath imports (File > Import objects): one Point detection per point, at
    level-0 pixel coordinates [x, y] (2 decimals), classified as `classification`, with its probability (6
    decimals) in `properties` and as a QuPath measurement. With `atypical_probability` and `is_atypical` (the
    classifier's P(atypical) and decision per point), a point called atypical is classified as `classification`
    + " (atypical)" and every point carries its `atypical_probability` too, so that a pathologist can filter and
    colour the two classes in QuPath."""
    xy_px = np.asarray(xy_px, dtype=np.float64).reshape(-1, 2)
    probability = np.asarray(probability, dtype=np.float64).reshape(-1)
    if len(probability) != len(xy_px):
        raise ValueError(f"probability has {len(probability)} values for {len(xy_px)} points")
    if not (np.isfinite(xy_px).all() and np.isfinite(probability).all()):
        raise ValueError("xy_px and probability must be finite")
    names, measurements = [classification] * len(xy_px), [{"probability": round(p, 6)} for p in probability.tolist()]
    if (atypical_probability is None) != (is_atypical is None):
        raise ValueError("atypical_probability and is_atypical come together")
    if atypical_probability is not None:
        atypical_p = np.asarray(atypical_probability, dtype=np.float64).reshape(-1)
        if atypical_p.shape != probability.shape or np.shape(is_atypical) != probability.shape:
            raise ValueError(f"atypical_probability and is_atypical need {len(xy_px)} values, one per point")
        if not np.isfinite(atypical_p).all():
            raise ValueError("atypical_probability must be finite")
        names = [classification + ATYPICAL_SUFFIX if a else classification for a in np.asarray(is_atypical, bool)]
        for values, p in zip(measurements, atypical_p.tolist(), strict=True):
            values["atypical_probability"] = round(p, 6)
    features = [
        _feature(x, y, name, values) for (x, y), name, values in zip(xy_px.tolist(), names, measurements, strict=True)
    ]
    with atomic_output(path) as temporary, open(temporary, "w", encoding="utf-8") as stream:
        json.dump({"type": "FeatureCollection", "features": features}, stream, separators=(",", ":"))
        stream.write("\n")


def write_summary(path: Path, summary: dict) -> None:
    """One slide's summary as JSON (see `write_summary_csv` for its keys)."""
    write_json_atomically(summary, path)


def _density_overlay(
    shape: tuple[int, int], xy_thumbnail_px: np.ndarray, sigma_thumbnail_px: float
) -> np.ndarray | None:
    """(H, W) density of points smoothed by a Gaussian of the given sd, scaled to a maximum of 1; None without
    points. Smoothed on a coarser grid and enlarged bilinearly, so a large sd on a large thumbnail stays cheap."""
    height, width = shape
    inside = (
        (xy_thumbnail_px[:, 0] >= 0)
        & (xy_thumbnail_px[:, 0] < width)
        & (xy_thumbnail_px[:, 1] >= 0)
        & (xy_thumbnail_px[:, 1] < height)
    )
    if not inside.any():
        return None
    cell_px = max(1, int(sigma_thumbnail_px / _SMOOTHING_CELLS))
    grid = np.zeros((-(-height // cell_px), -(-width // cell_px)), dtype=np.float64)
    cells = (xy_thumbnail_px[inside] // cell_px).astype(np.int64)
    np.add.at(grid, (cells[:, 1], cells[:, 0]), 1.0)
    grid = ndimage.gaussian_filter(grid, sigma_thumbnail_px / cell_px, mode="constant")
    density = np.asarray(Image.fromarray(grid.astype(np.float32)).resize((width, height), Image.Resampling.BILINEAR))
    peak = float(density.max())
    return density / peak if peak > 0 else None


def _density_lookup() -> tuple[np.ndarray, np.ndarray]:
    """(256, 3) colours and (256,) opacities of the density levels 0..255: along `_DENSITY_COLOURS`, opacity the
    square root of the level above `_DENSITY_FLOOR` (low densities show too; below the floor nothing, or Gaussian
    tails would tint the whole slide)."""
    level = np.linspace(0.0, 1.0, 256)
    anchors = np.linspace(0.0, 1.0, len(_DENSITY_COLOURS))
    colours = np.stack([np.interp(level, anchors, _DENSITY_COLOURS[:, channel]) for channel in range(3)], axis=-1)
    opacity = _DENSITY_MAX_ALPHA * np.sqrt(np.clip((level - _DENSITY_FLOOR) / (1 - _DENSITY_FLOOR), 0, 1))
    return colours.astype(np.float32), opacity.astype(np.float32)


def draw_heatmap(
    path: Path,
    thumbnail_rgb: np.ndarray,
    px_per_thumbnail_px: float,
    xy_px: np.ndarray,
    hotspot_center_px: tuple[float, float] | None,
    hotspot_radius_px: float | None,
    tissue_mask: np.ndarray | None = None,
    density_window_px: float | None = None,
    legend: str | None = None,
) -> None:
    """The slide's thumbnail with the density of mitotic figures over it (yellow to red, only on tissue when
    `tissue_mask` is given), every figure as a small dark dot and the hotspot circle in green; a PNG the size of
    the thumbnail, written atomically.

    Positions and lengths are level-0 pixels; `px_per_thumbnail_px` is the thumbnail's downsample. The density is
    a Gaussian-smoothed histogram whose sd is half `density_window_px` (default: the hotspot's diameter, so the
    red area is about one hotspot wide; without a hotspot 1/40 of the slide's longer side). `tissue_mask` (any
    shape; resized to the thumbnail) hides the colour off tissue. `legend` replaces the corner text (by default the
    number of figures; the hotspot's own count is the caller's, as counting again in thumbnail pixels could
    differ by the figures on its boundary).
    """
    thumbnail = np.asarray(thumbnail_rgb)
    if thumbnail.ndim != 3 or thumbnail.shape[2] != 3:
        raise ValueError(f"thumbnail_rgb must have shape (H, W, 3), got {thumbnail.shape}")
    if not (math.isfinite(px_per_thumbnail_px) and px_per_thumbnail_px > 0):
        raise ValueError(f"px_per_thumbnail_px must be positive, got {px_per_thumbnail_px}")
    height, width = thumbnail.shape[:2]
    xy_thumbnail = np.asarray(xy_px, dtype=np.float64).reshape(-1, 2) / px_per_thumbnail_px
    has_hotspot = hotspot_center_px is not None and hotspot_radius_px is not None
    if density_window_px is None:
        density_window_px = 2 * hotspot_radius_px if has_hotspot else max(height, width) * px_per_thumbnail_px / 40
    sigma_thumbnail_px = max(1.0, density_window_px / 2 / px_per_thumbnail_px)

    picture = _coloured_by_density(thumbnail, xy_thumbnail, sigma_thumbnail_px, tissue_mask)
    image = Image.fromarray(np.clip(np.rint(picture), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    dot_px = max(1.5, max(height, width) / 1000)
    for x, y in xy_thumbnail.tolist():
        draw.ellipse((x - dot_px, y - dot_px, x + dot_px, y + dot_px), fill=_DOT_COLOUR, outline=_DOT_OUTLINE)
    if has_hotspot:
        centre_x, centre_y = (v / px_per_thumbnail_px for v in hotspot_center_px)
        radius = hotspot_radius_px / px_per_thumbnail_px
        line_px = max(2, round(max(height, width) / 500))
        draw.ellipse(
            (centre_x - radius, centre_y - radius, centre_x + radius, centre_y + radius),
            outline=_CIRCLE_COLOUR,
            width=line_px,
        )
    if legend is None:
        legend = f"{len(xy_thumbnail)} mitotic figures" + ("\nhotspot: green circle" if has_hotspot else "")
    _draw_legend(draw, legend, (height, width))
    with atomic_output(path) as temporary:
        image.save(temporary, format="PNG")


def _coloured_by_density(
    thumbnail: np.ndarray, xy_thumbnail_px: np.ndarray, sigma_thumbnail_px: float, tissue_mask: np.ndarray | None
) -> np.ndarray:
    """(H, W, 3) float picture: the thumbnail with the points' density over it (`_density_lookup`'s colours), only
    on `tissue_mask` (any shape, resized) when given."""
    height, width = thumbnail.shape[:2]
    picture = thumbnail.astype(np.float32)
    density = _density_overlay((height, width), xy_thumbnail_px, sigma_thumbnail_px)
    if density is None:
        return picture
    level = np.rint(density * 255).astype(np.uint8)
    colours, opacity = _density_lookup()
    alpha = opacity[level]
    if tissue_mask is not None:
        mask = Image.fromarray(np.asarray(tissue_mask, dtype=bool).astype(np.uint8) * 255)
        alpha *= np.asarray(mask.resize((width, height), Image.Resampling.NEAREST)) > 0
    return picture + (colours[level] - picture) * alpha[..., None]


def _wrapped(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width_px: float) -> str:
    """`text` with its lines broken between words so that each fits in `width_px` (a word longer stays whole)."""
    lines = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            longer = f"{line} {word}" if line else word
            if line and draw.textlength(longer, font=font) > width_px:
                lines.append(line)
                longer = word
            line = longer
        lines.append(line)
    return "\n".join(lines)


def _draw_legend(draw: ImageDraw.ImageDraw, legend: str, shape: tuple[int, int]) -> None:
    """The legend in the top-left corner on white, its lines wrapped to the picture's width."""
    height, width = shape
    font = ImageFont.load_default(size=max(10, min(height, width) // 40))
    margin = max(2, min(height, width) // 100)
    legend = _wrapped(draw, legend, font, width - 4 * margin)
    box = draw.multiline_textbbox((margin, margin), legend, font=font)
    draw.rectangle((box[0] - margin, box[1] - margin, box[2] + margin, box[3] + margin), fill=(255, 255, 255))
    draw.multiline_text((margin, margin), legend, fill=(0, 0, 0), font=font)


def _cell(value: object) -> str:
    """A CSV cell: empty for missing values, floats without binary noise."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


def _csv_row(summary: dict) -> dict[str, str]:
    hotspot = summary.get("hotspot") or {}
    centre_mm = hotspot.get("center_mm") or (None, None)
    mpp_um = summary.get("mpp_um")
    veterinary = summary.get("veterinary_2_37_mm2") or {}
    row = {
        "slide": summary.get("slide"),
        # one number per slide: the mean of x and y (scanners' pixels are square; summary.json keeps both)
        "mpp_um": None if mpp_um is None else float(np.mean(mpp_um)),
        "tissue_mm2": summary.get("tissue_mm2"),
        "mitotic_figures": summary.get("mitotic_figures"),
        "density_per_mm2": summary.get("density_per_mm2"),
        "atypical_figures": summary.get("atypical_figures"),
        "atypical_share": summary.get("atypical_share"),
        "hotspot_count": hotspot.get("count"),
        "hotspot_area_mm2": hotspot.get("area_mm2"),
        "hotspot_center_x_mm": centre_mm[0],
        "hotspot_center_y_mm": centre_mm[1],
        "hotspot_atypical_figures": hotspot.get("atypical_figures"),
        "hotspot_atypical_share": hotspot.get("atypical_share"),
        "atypical_unavailable": summary.get("atypical_unavailable"),
        "mitotic_score": summary.get("mitotic_score"),
        "mitotic_score_withheld": summary.get("mitotic_score_withheld"),
        "count_2_37_mm2": veterinary.get("count"),
        "warning": summary.get("warning"),
        "note": summary.get("note"),
        "error": summary.get("error"),
    }
    return {column: _cell(value) for column, value in row.items()}


def write_summary_csv(path: Path, summaries: list[dict]) -> None:
    """One row per slide, columns `CSV_COLUMNS`; empty cells where a value is missing (a failed slide has only its
    name and `error`).

    A summary: {"slide": str, "mpp_um": [x, y], "tissue_mm2": float, "mitotic_figures": int, "density_per_mm2":
    float, "atypical_figures": int or None, "atypical_share": float or None (atypical / named; None without named
    figures), "hotspot": {"center_px": [x, y], "center_mm": [x, y], "area_mm2": float, "count": int,
    "atypical_figures": int or None, "atypical_share": float or None} or None,
    "mitotic_score": int or None, "veterinary_2_37_mm2": {"count": int, "center_mm": [x, y]} or None, "heatmap":
    path relative to the run folder, and where they apply "atypical_unavailable": str (why the atypical numbers
    are null: the bundle has no atypical classifier), "warning": str (an implausible count),
    "mitotic_score_withheld": str (why the score is null), "note": str (e.g. a hotspot larger than the tissue),
    "error": str (failed slides; one whose outputs could not all be written keeps its counts too)}.
    """
    with atomic_output(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for summary in summaries:
            writer.writerow(_csv_row(summary))


_PAGE_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; vertical-align: middle; }
th { background: #f0f0f0; }
td.name, td.error { text-align: left; }
td.error { color: #c00; font-weight: bold; }
td.note { text-align: left; }
img { max-width: 320px; max-height: 240px; display: block; }
"""


def _number(value: object, digits: int) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return html.escape(f"{value:.{digits}f}")
    return html.escape(str(value))


def _score_cell(summary: dict) -> str:
    """The mitotic score, or "withheld" and why (the reason also as the cell's tooltip)."""
    withheld = summary.get("mitotic_score_withheld")
    if withheld:
        reason = html.escape(str(withheld), quote=True)
        return f'<td class="error" title="{reason}">{reason}</td>'
    return f"<td>{_number(summary.get('mitotic_score'), 0)}</td>"


def _atypical_text(part: dict) -> str:
    """A slide's or a hotspot's atypical figures and their share of the named ones, e.g. "3 (25.0%)"."""
    share = part.get("atypical_share")
    text = _number(part.get("atypical_figures"), 0)
    return text + ("" if share is None else f" ({share:.1%})")


def _atypical_cells(summary: dict) -> list[str]:
    """The slide's and the hotspot's atypical cells; without a classifier "unknown", the slide's with the reason."""
    if summary.get("atypical_unavailable"):
        reason = html.escape(str(summary["atypical_unavailable"]), quote=True)
        return [f'<td class="note" title="{reason}">unknown: {reason}</td>', f'<td title="{reason}">unknown</td>']
    return [f"<td>{_atypical_text(summary)}</td>", f"<td>{_atypical_text(summary.get('hotspot') or {})}</td>"]


def _html_row(summary: dict) -> str:
    hotspot = summary.get("hotspot") or {}
    veterinary = summary.get("veterinary_2_37_mm2") or {}
    heatmap = summary.get("heatmap")
    picture = ""
    if heatmap and not summary.get("error"):
        source = html.escape(urllib.parse.quote(str(heatmap)), quote=True)
        picture = f'<a href="{source}"><img src="{source}" alt="heatmap"></a>'
    hotspot_text = ""
    if hotspot:
        hotspot_text = f"{_number(hotspot.get('count'), 0)} in {_number(hotspot.get('area_mm2'), 2)} mm&sup2;"
    cells = [
        f"<td>{picture}</td>",
        f'<td class="name">{html.escape(str(summary.get("slide", "")))}</td>',
        f"<td>{_number(summary.get('mitotic_figures'), 0)}</td>",
        f"<td>{_number(summary.get('tissue_mm2'), 1)}</td>",
        f"<td>{_number(summary.get('density_per_mm2'), 2)}</td>",
        f"<td>{hotspot_text}</td>",
        *_atypical_cells(summary),
        _score_cell(summary),
        f"<td>{_number(veterinary.get('count'), 0)}</td>",
        f'<td class="error">{html.escape(str(summary.get("error") or summary.get("warning") or ""))}</td>',
        f'<td class="note">{html.escape(str(summary.get("note") or ""))}</td>',
    ]
    return "<tr>" + "".join(cells) + "</tr>"


def write_report_html(path: Path, summaries: list[dict]) -> None:
    """One self-contained page (inline style, no scripts or external assets): a row per slide with its heatmap
    (linked by the summary's relative `heatmap` path, so the page sits in the run folder), its counts, density,
    hotspot count and mitotic score; failed slides show their error in red, as do a warning and a withheld score
    (the reason in place of the score), and a note has its own column. Every string is HTML-escaped."""
    header = (
        "<tr><th>Heatmap</th><th>Slide</th><th>Mitotic figures</th><th>Tissue (mm&sup2;)</th>"
        "<th>Density (/mm&sup2;)</th><th>Hotspot</th><th>Atypical (share)</th><th>Atypical in hotspot (share)</th>"
        "<th>Mitotic score</th><th>Count in 2.37 mm&sup2;</th>"
        "<th>Error or warning</th><th>Note</th></tr>"
    )
    failed = sum(1 for summary in summaries if summary.get("error"))
    page = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            "<title>Mitotic figures per slide</title>",
            f"<style>{_PAGE_STYLE}</style></head><body>",
            "<h1>Mitotic figures per slide</h1>",
            f"<p>{len(summaries)} slides, {failed} failed. Mitotic score: Nottingham mitotic component (Elston &amp; "
            "Ellis 1991) of the hotspot count scaled to 2.74 mm&sup2;; the 2.37 mm&sup2; count is the veterinary "
            "mitotic count (Meuten et al. 2016). Atypical: mitotic figures the bundle's atypical classifier calls "
            "atypical, and their share of the named figures (balanced accuracy about 0.75 on sources it never saw: "
            "model card).</p>",
            f"<table>{header}",
            *(_html_row(summary) for summary in summaries),
            "</table></body></html>",
            "",
        ]
    )
    with atomic_output(path) as temporary:
        Path(temporary).write_text(page, encoding="utf-8")
