#!/usr/bin/env python3
"""Check a container's MIDOG 2025 track 2 output against the expected one (stdlib only, any Python 3.8+).

    python3 test/container/compare_classification.py ACTUAL.json EXPECTED.json [--prob-tol P] [--threshold T]

Schema ("multiple mitotic figure classification"): a JSON list with one object per crop, in page order, each exactly
{"class": "atypical" | "normal", "confidence": P(atypical) in [0, 1]}.
Comparison: the same number of entries; each confidence within --prob-tol of the expected one (default 0.02: the
descriptors are fp32 on every device); each class the same, except where the expected confidence lies within
--prob-tol of the decision --threshold (there two CPUs may round onto either side).
Prints PASS or FAIL with the reasons; exit code 0 on PASS, 1 on FAIL, 2 if a file cannot be read.
"""

import argparse
import json
import math
import sys

CLASSES = {"atypical", "normal"}


def schema_errors(doc):
    if not isinstance(doc, list):
        return ["top level is %s, not a list" % type(doc).__name__]
    errors = []
    for i, entry in enumerate(doc):
        if not isinstance(entry, dict) or set(entry) != {"class", "confidence"}:
            errors.append("entry %d is %r, expected exactly {'class', 'confidence'}" % (i, entry))
            continue
        if entry["class"] not in CLASSES:
            errors.append("entry %d class is %r, expected one of %s" % (i, entry["class"], sorted(CLASSES)))
        value = entry["confidence"]
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)):
            errors.append("entry %d confidence is %r, not a number" % (i, value))
        elif not 0.0 <= value <= 1.0:
            errors.append("entry %d confidence %r is outside [0, 1]" % (i, value))
    return errors


def comparison_errors(actual, expected, prob_tol, threshold=None):
    if len(actual) != len(expected):
        return ["%d entries, expected %d (one per page)" % (len(actual), len(expected))]
    errors = []
    for i, (got, want) in enumerate(zip(actual, expected)):
        if abs(got["confidence"] - want["confidence"]) > prob_tol:
            errors.append("entry %d confidence %.4f, expected %.4f" % (i, got["confidence"], want["confidence"]))
        near = threshold is not None and abs(want["confidence"] - threshold) <= prob_tol
        if got["class"] != want["class"] and not near:
            errors.append("entry %d class %r, expected %r" % (i, got["class"], want["class"]))
    return errors


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("actual")
    parser.add_argument("expected")
    parser.add_argument("--prob-tol", type=float, default=0.02, help="absolute (default 0.02)")
    parser.add_argument("--threshold", type=float, default=None, help="the bundle's atypical threshold")
    args = parser.parse_args(argv)
    documents = []
    for path, what in ((args.actual, "actual"), (args.expected, "expected")):
        try:
            with open(path) as stream:
                documents.append(json.load(stream))
        except (OSError, ValueError) as error:
            print("FAIL: cannot read the %s output %s: %s" % (what, path, error))
            return 2
    actual, expected = documents
    errors = schema_errors(actual) or comparison_errors(actual, expected, args.prob_tol, args.threshold)
    for error in errors:
        print("FAIL: " + error)
    if not errors:
        print("PASS: %d crops classified as expected" % len(actual))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
