"""How much the held-out field scores depend on where the 8 px window grid falls: AP and best F1 per grid phase.

    python benchmarks/grid_phase.py [--bundle model/weights] [--data ../shared/data/real] [--json OUT]

The P4 models score one window every 8 px. `process.py` mirrors the image by `BORDER_PAD_PX` (32 px, a multiple of
the stride), so the windows sit where they would without mirroring: phase 0. Mirroring by 32 + k px instead shifts
every window by k px (k = 1..7), which is all a different crop of the same slide would do. For each phase this
scores the 10 held-out MiDeSeC fields with both models everywhere (the exact dense path, the default precision of
this machine) and reports the agreement ensemble's challenge AP and its best F1 over thresholds (agreed points only,
as `training.validation.field_validation` does). The spread says how much of a field-level difference between two
models or two settings is grid luck.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from evaluation.metrics import average_precision, best_threshold, f1_by_threshold  # noqa: E402
from model import Detector  # noqa: E402
from model.bundle import DEFAULT_BUNDLE_DIR  # noqa: E402
from model.cascade import cascade_points  # noqa: E402
from model.dense import probability_map  # noqa: E402
from model.geometry import BORDER_PAD_PX, OUTPUT_STRIDE_PX  # noqa: E402
from model.spacing import mm_from_px  # noqa: E402
from training.data import real_data  # noqa: E402
from training.validation.field_validation import held_out_fields  # noqa: E402


def phase_scores(detector: Detector, fields: list, shift_px: int) -> dict:
    """Ensemble AP and best F1 on the fields with the window grid shifted by `shift_px`."""
    targets, predictions, scores = [], [], []
    for field in fields:
        rgb = real_data.read_image(field.path)
        spacing = (field.spacing_mm, field.spacing_mm)
        maps = [
            probability_map(rgb, detector.scorer(net), detector.device, pad_px=BORDER_PAD_PX + shift_px)
            for net in detector.networks
        ]
        merged = cascade_points(
            detector.bundle, spacing, lambda _, m=maps[0]: (m, None), lambda _, m=maps[1]: (m, None), None, True
        )[2]
        xy_px = merged.xy_px[merged.agreed] - shift_px  # positions assume the default margin
        targets.append(mm_from_px(field.mitoses_xy_px, spacing))
        predictions.append(mm_from_px(xy_px, spacing))
        scores.append(merged.probability[merged.agreed])
    best = best_threshold(*f1_by_threshold(targets, predictions, scores))
    return {
        "shift_px": shift_px,
        "ap": float(average_precision(targets, predictions, scores).ap or 0.0),
        "best_f1": float(best["f1"]) if best else 0.0,
        "best_threshold": float(best["threshold"]) if best else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE_DIR)
    parser.add_argument("--data", type=Path, default=real_data.DEFAULT_ROOT)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    detector = Detector(args.bundle, use_screen=False)
    fields = held_out_fields(args.data)
    rows = []
    print(f"{len(fields)} held-out fields; ensemble, agreed points; shift of the 8 px window grid in px")
    print(f"{'shift':>6}{'AP':>8}{'best F1':>9}")
    for shift_px in range(OUTPUT_STRIDE_PX):
        row = phase_scores(detector, fields, shift_px)
        rows.append(row)
        print(f"{shift_px:>6}{row['ap']:>8.3f}{row['best_f1']:>9.3f}", flush=True)
    aps = [row["ap"] for row in rows]
    print(f"AP over the phases: {min(aps):.3f}-{max(aps):.3f}, mean {np.mean(aps):.3f}")
    if args.json:
        args.json.write_text(json.dumps({"bundle": str(args.bundle), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
