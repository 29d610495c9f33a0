"""Whole-slide mitotic counting: slides in; every mitotic figure, the hotspot and its score out.

    python -m wsi.count SLIDE [SLIDE ...] --out DIR

One job per module: `wsi.slide` reads a slide through OpenSlide, `wsi.tissue` finds tissue at low resolution,
`wsi.tiles` cuts the tissue into tiles whose seams are exact, `wsi.detect` runs the project's detector
(`model.Detector`, the same one `process.py` runs) on one tile, `wsi.hotspot` finds the densest circle and the
mitotic score, `wsi.report` writes the outputs, `wsi.count` is the command (one process, or a Dask cluster).
Its dependencies (requirements-wsi.txt) stay out of the container's runtime.
"""
