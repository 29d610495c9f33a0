#!/usr/bin/env python3
"""Check a container's /output/mitotic-figures.json against the expected one (stdlib only, any Python 3.8+).

    python3 test/container/compare_output.py ACTUAL.json EXPECTED.json [--coord-tol MM] [--prob-tol P]

Schema (grand-challenge "Multiple points", MIDOG 2022 and 2025 track 1): exactly the top-level keys name, type,
points, version; every point exactly name, point, probability; point = 3 finite numbers in mm, none above 10 (pixel
coordinates by mistake); probability in [0, 1]; name "mitotic figure" or "non-mitotic figure".
Comparison: same number of points; every expected point matched one-to-one by an actual point of the same name whose
coordinates all differ by at most --coord-tol mm (default 2e-4 mm, under a pixel at 0.25 um/px) and whose probability
differs by at most --prob-tol (default 0.04: bf16 and fp32 dense maps of the shipped models differ by up to ~0.04).
What a user relies on is compared strictly, the rest is information: with --compare-above P, only "mitotic figure"
points and candidates with probability >= P (on either side) must match; differences among lower candidates (a local
maximum that moves by one map cell or appears at the floor when bf16 and fp32, or two CPUs, round differently) are
printed as INFO and do not fail. With --threshold T [T ...], a point within --prob-tol of a naming threshold may
carry either name (a bundle with a verifier has two: inside the image and in its border strip).
Prints PASS or FAIL with the reasons; exit code 0 on PASS, 1 on FAIL, 2 if a file cannot be read.
"""

import argparse
import json
import math
import sys

TOP_KEYS = {"name", "type", "points", "version"}
POINT_KEYS = {"name", "point", "probability"}
POINT_NAMES = {"mitotic figure", "non-mitotic figure"}
MAX_COORD_MM = 10.0
MAX_LISTED = 20


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def schema_errors(doc):
    """Return a list of human-readable schema violations (empty if the document is valid)."""
    if not isinstance(doc, dict):
        return ["top level is %s, not an object" % type(doc).__name__]
    errors = []
    if set(doc) != TOP_KEYS:
        missing, extra = sorted(TOP_KEYS - set(doc)), sorted(set(doc) - TOP_KEYS)
        errors.append("top-level keys must be exactly %s (missing %s, extra %s)" % (sorted(TOP_KEYS), missing, extra))
    if doc.get("name") != "Points of interest":
        errors.append("top-level name is %r, expected 'Points of interest'" % (doc.get("name"),))
    if doc.get("type") != "Multiple points":
        errors.append("type is %r, expected 'Multiple points'" % (doc.get("type"),))
    version = doc.get("version")
    if not (
        isinstance(version, dict)
        and set(version) == {"major", "minor"}
        and all(is_number(v) and not isinstance(v, float) for v in version.values())
    ):
        errors.append("version is %r, expected {'major': int, 'minor': int}" % (version,))
    points = doc.get("points")
    if not isinstance(points, list):
        errors.append("points is %s, not a list" % type(points).__name__)
        return errors
    point_errors = []
    for i, p in enumerate(points):
        where = "points[%d]" % i
        if not isinstance(p, dict):
            point_errors.append("%s is not an object" % where)
            continue
        if set(p) != POINT_KEYS:
            point_errors.append("%s keys are %s, expected exactly %s" % (where, sorted(p), sorted(POINT_KEYS)))
        if p.get("name") not in POINT_NAMES:
            point_errors.append("%s name is %r, expected one of %s" % (where, p.get("name"), sorted(POINT_NAMES)))
        xyz = p.get("point")
        if not (isinstance(xyz, list) and len(xyz) == 3 and all(is_number(c) for c in xyz)):
            point_errors.append("%s point is %r, expected 3 finite numbers" % (where, xyz))
        elif any(c > MAX_COORD_MM for c in xyz):
            point_errors.append(
                "%s point %r has a coordinate above %g mm (pixel coordinates?)" % (where, xyz, MAX_COORD_MM)
            )
        prob = p.get("probability")
        if not (is_number(prob) and 0.0 <= prob <= 1.0):
            point_errors.append("%s probability is %r, expected a number in [0, 1]" % (where, prob))
    errors.extend(point_errors[:MAX_LISTED])
    if len(point_errors) > MAX_LISTED:
        errors.append("... and %d more point errors" % (len(point_errors) - MAX_LISTED))
    return errors


def near_a_threshold(probability, thresholds, prob_tol):
    """Is `probability` within `prob_tol` of a naming threshold (one number, a list of them, or None)?"""
    if thresholds is None:
        return False
    if not isinstance(thresholds, (list, tuple)):
        thresholds = [thresholds]
    return any(abs(probability - t) <= prob_tol for t in thresholds)


def comparison_errors(actual, expected, coord_tol, prob_tol, compare_above=None, threshold=None, info=None):
    """Match expected points one-to-one to actual ones; return the differences (see the module docstring).
    Differences that do not count are appended to `info` (a list) when given."""
    a_points, e_points = actual["points"], expected["points"]
    errors = []

    def informational(point):
        near_threshold = near_a_threshold(point["probability"], threshold, prob_tol)
        return (
            compare_above is not None
            and point["probability"] < compare_above - prob_tol
            and point["name"] != "mitotic figure"
            and not near_threshold
        )

    def same_name(a, e):
        near_threshold = near_a_threshold(e["probability"], threshold, prob_tol)
        return a["name"] == e["name"] or near_threshold

    if compare_above is None and len(a_points) != len(e_points):
        errors.append("number of points: actual %d, expected %d" % (len(a_points), len(e_points)))
    used = [False] * len(a_points)
    unmatched = []
    for i, e in enumerate(e_points):
        best, best_dist = None, None
        for j, a in enumerate(a_points):
            if used[j] or not same_name(a, e):
                continue
            dist = max(abs(x - y) for x, y in zip(a["point"], e["point"]))
            if (
                dist <= coord_tol
                and abs(a["probability"] - e["probability"]) <= prob_tol
                and (best_dist is None or dist < best_dist)
            ):
                best, best_dist = j, dist
        if best is None:
            if informational(e):
                if info is not None:
                    info.append("expected low-probability point %s has no exact match" % json.dumps(e))
            else:
                unmatched.append((i, e))
        else:
            used[best] = True
    for i, e in unmatched[:MAX_LISTED]:
        near = [a for a in a_points if max(abs(x - y) for x, y in zip(a["point"], e["point"])) <= 10 * coord_tol]
        hint = ("; nearest actual: %s" % json.dumps(near[0])) if near else "; no actual point nearby"
        errors.append("expected points[%d] %s has no match%s" % (i, json.dumps(e), hint))
    if len(unmatched) > MAX_LISTED:
        errors.append("... and %d more unmatched expected points" % (len(unmatched) - MAX_LISTED))
    extra = [a for j, a in enumerate(a_points) if not used[j] and not informational(a)]
    if info is not None:
        info.extend(
            "actual low-probability point %s has no exact match" % json.dumps(a)
            for j, a in enumerate(a_points)
            if not used[j] and informational(a)
        )
    for a in extra[:MAX_LISTED]:
        errors.append("actual point %s matches no expected point" % json.dumps(a))
    if len(extra) > MAX_LISTED:
        errors.append("... and %d more unmatched actual points" % (len(extra) - MAX_LISTED))
    return errors


def load(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        print("FAIL: cannot read %s output %s: %s" % (what, path, error))
        sys.exit(2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("actual")
    parser.add_argument("expected")
    parser.add_argument("--coord-tol", type=float, default=2e-4, help="mm, per coordinate (default 2e-4)")
    parser.add_argument("--prob-tol", type=float, default=0.04, help="absolute (default 0.04)")
    parser.add_argument(
        "--compare-above",
        type=float,
        default=None,
        help="candidates below this probability (and not named) are compared for information only",
    )
    parser.add_argument(
        "--threshold", type=float, nargs="+", default=None, help="naming threshold(s) of the bundle (optional)"
    )
    args = parser.parse_args(argv)

    actual = load(args.actual, "actual")
    expected = load(args.expected, "expected")
    errors = ["actual: " + e for e in schema_errors(actual)]
    expected_errors = schema_errors(expected)
    if expected_errors:
        errors += ["expected file itself is invalid: " + e for e in expected_errors]
    if not errors:
        info = []
        errors = comparison_errors(
            actual, expected, args.coord_tol, args.prob_tol, args.compare_above, args.threshold, info
        )
        for line in info[:MAX_LISTED]:
            print("INFO: " + line)

    if errors:
        print("FAIL: %s does not match %s" % (args.actual, args.expected))
        for e in errors:
            print("  - " + e)
        return 1
    n_mitotic = sum(p["name"] == "mitotic figure" for p in actual["points"])
    print(
        "PASS: %d points (%d mitotic figures) match %s within %g mm and %g probability; schema valid"
        % (len(actual["points"]), n_mitotic, args.expected, args.coord_tol, args.prob_tol)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
