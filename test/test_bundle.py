"""Bundle loading: weights verified against bundle.json before use."""

from __future__ import annotations

import json
import shutil

import pytest

from model.bundle import BundleError, load_networks, read_bundle


def test_round_trip(random_bundle_dir):
    bundle = read_bundle(random_bundle_dir)
    assert [entry.policy for entry in bundle.models] == ["A", "B"]
    assert len(load_networks(bundle, random_bundle_dir)) == 2


def test_checksum_mismatch_is_refused(random_bundle_dir, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(random_bundle_dir, copy)
    weights = copy / read_bundle(copy).models[0].file
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum mismatch"):
        load_networks(read_bundle(copy), copy)


def test_missing_and_malformed_bundle(tmp_path):
    with pytest.raises(BundleError, match="no model bundle"):
        read_bundle(tmp_path)
    (tmp_path / "bundle.json").write_text(json.dumps({"format_version": 1}))
    with pytest.raises(BundleError, match="malformed"):
        read_bundle(tmp_path)
