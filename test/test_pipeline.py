"""The whole training pipeline (`tiny` config) on a synthetic MIDOG-format dataset: every stage's output, a bundle
`process.py` can load, and a rerun after an interruption that finishes without redoing finished stages."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import assert_drawn_png

from model import Detector
from model.bundle import read_bundle
from training import hnm, pipeline
from training.data.midog_dataset import read_window
from training.data.synthetic import generate_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    generate_dataset(folder, n_images=6, seed=5, width_px=768, height_px=768, n_unlabeled=1, progress=False)
    return folder


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, dataset):
    """A run interrupted in the middle of the search, then rerun with the same command."""
    out = tmp_path_factory.mktemp("run")
    original, calls = pipeline.train_model, []  # the base model (pipeline) and the search trials (hnm) count

    def die_in_the_search(*args, **kwargs):
        calls.append(kwargs.get("description"))
        if len(calls) == 4:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    pipeline.train_model = hnm.train_model = die_in_the_search
    try:
        with pytest.raises(KeyboardInterrupt):
            pipeline.run_pipeline("tiny", dataset, out)
    finally:
        pipeline.train_model = hnm.train_model = original
    assert (out / "base" / "best.json").exists() and not (out / "hnm_search.json").exists()
    base_weights = (out / "base" / "best.safetensors").stat().st_mtime_ns
    bundle_dir = pipeline.run_pipeline("tiny", dataset, out)
    assert (out / "base" / "best.safetensors").stat().st_mtime_ns == base_weights  # finished stage not redone
    return out, bundle_dir


def test_search_summary_has_hard_and_random_points_with_seeds(finished_run):
    out, _ = finished_run
    search = json.loads((out / "hnm_search.json").read_text())
    selections = {point["selection"] for point in search["points"]}
    assert selections == {"hard", "random"}
    assert all(len(point["ap"]) == 2 for point in search["points"])
    hard_ks = sorted(point["k"] for point in search["points"] if point["selection"] == "hard")
    assert len(hard_ks) > 2  # the grid plus at least one refinement midpoint
    assert search["k_selected"] in hard_ks
    assert all(0 < point["pixel_fraction"] < 1 for point in search["points"])
    for figure in ("figure2_hnm_search.png", "figure3_enrichment.png", "threshold.png"):
        assert_drawn_png(out / figure)


def test_bundle_carries_search_enrichment_validation_and_loads(finished_run, dataset):
    out, bundle_dir = finished_run
    bundle = read_bundle(bundle_dir)
    assert bundle.extra["hnm"]["k_selected"] == json.loads((out / "hnm_search.json").read_text())["k_selected"]
    enrichment = np.load(out / "enrichment.npz")
    assert bundle.extra["enrichment"]["n_selected"] == len(enrichment["image"]) <= int(enrichment["candidates"])
    assert np.all(enrichment["score"] >= float(enrichment["cutoff"]))  # the hard-negative selection rule
    validation = bundle.extra["validation"]
    for key in ("f1_a", "f1_b", "f1_ensemble", "ap"):
        assert key in validation
    assert validation["method"].startswith("exact")
    assert bundle.threshold == validation["variants"]["ensemble"]["threshold"]
    window = read_window(dataset / "001.tiff", 0, 0, 256, 256)
    detector = Detector(bundle_dir)
    detections, again = detector.detect(window), detector.detect(window)
    assert np.array_equal(detections.xy_px, again.xy_px) and np.array_equal(detections.probability, again.probability)
    assert np.all((detections.probability >= bundle.candidate_floor) & (detections.probability <= 1))
    assert np.all((detections.xy_px >= 0) & (detections.xy_px < 256))
    assert not np.any(detections.is_mitosis & ~detections.agreed)  # named only where both models agree


def test_screen_stage_adds_a_checked_screen_with_its_report(finished_run, dataset):
    out, bundle_dir = finished_run
    bundle = read_bundle(bundle_dir)
    report = json.loads((out / "screen" / "screen_report.json").read_text())
    assert bundle.screen is not None and bundle.screen.threshold == report["threshold"]
    assert bundle.extra["screen_validation"]["survival"] >= report["required_survival"]
    assert report["named_surviving"] == report["named"]
    assert report["pages"] == 2 and report["positive_crops"] == 4
    assert Detector(bundle_dir).screen is not None  # loads, sha256 checked
    assert Detector(bundle_dir, use_screen=False).screen is None


def test_rerun_of_a_finished_run_changes_nothing(finished_run, dataset):
    out, bundle_dir = finished_run
    before = (bundle_dir / "bundle.json").read_text()
    pipeline.run_pipeline("tiny", dataset, out)
    after = json.loads((bundle_dir / "bundle.json").read_text())
    previous = json.loads(before)
    assert after["models"] == previous["models"] and after["threshold"] == previous["threshold"]


def test_another_config_in_the_same_folder_is_refused(finished_run, dataset):
    out, _ = finished_run
    with pytest.raises(ValueError, match="another config"):
        pipeline.run_pipeline("smoke", dataset, out)


def test_fine_tuning_starts_from_the_base_models_best_weights_and_search_ranks_by_field_ap(finished_run):
    """Trials and final models start from base/best_model.pt (the selected weights, not the last checkpoint), and the
    search is ranked by AP on the whole validation images."""
    out, _ = finished_run
    for run in ("final_A", "final_B", "search/all-s0"):
        assert json.loads((out / run / "run.json").read_text())["init"] == str(out / "base" / "best_model.pt")
    search = json.loads((out / "hnm_search.json").read_text())
    assert search["metric"].startswith("challenge AP on")
    record = json.loads((out / "search" / "all-s0" / "best.json").read_text())
    assert search["all_negatives"]["ap"][0] == record["field_ap"]


def test_sites_are_ranked_in_the_precision_inference_runs(finished_run):
    """score_sites (the hard-negative ranking) equals the dense map of the exported model at the site's window."""
    import torch
    from safetensors.torch import load_file

    from model.architecture import architecture
    from model.dense import probability_map, window_scorer
    from model.plain import PlainP4ResNet
    from model.precision import autocast_dtype
    from training.augment import centre_windows
    from training.config import load_config

    out, _ = finished_run
    made_with = json.loads((out / "config.json").read_text())
    data = load_config(made_with["_config_path"]).data.load(made_with["_data"])
    sites = data.negatives_train.subset(np.arange(4))
    scores = hnm.score_sites(out / "base" / "best.safetensors", "narrow", data, sites)
    net = PlainP4ResNet(architecture("narrow"))
    net.load_state_dict(load_file(str(out / "base" / "best.safetensors")))
    net.eval()
    device = torch.device("cpu")
    windows = (centre_windows(torch.from_numpy(data.crops(sites))) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    dense = [
        probability_map(w, window_scorer(net, device, autocast_dtype(device)), device, pad_px=0)[0, 0] for w in windows
    ]
    np.testing.assert_allclose(scores, dense, atol=1e-4)
