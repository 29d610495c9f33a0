"""The paper's whole training recipe as one resumable command: base model, hard-negative search, enrichment, final
models A and B, threshold of their agreement, and a bundle `process.py` can load.

    python -m training.pipeline --config cpu-small --data ../shared/data/real --out runs/cpu-small
    python -m training.pipeline --config paper --data /data/midog2022 --out runs/paper --workers 4   # 4 GPUs

Stages (each skips when its output exists, so rerunning the same command after an interruption continues; a
training run that was cut short resumes from its own checkpoint):
1. base/        one model (policy A) on every training negative site;
2. scores.npz   the base model's probability for every training negative site (the hard-negative ranking);
3. search/      for each subset size K (and seed): train on the top-K sites ("hard") or K random sites ("random"),
                plus all positives, and measure validation AP; also all sites ("all"). One refinement round adds
                the geometric midpoints around the best K. -> hnm_search.json, figure2_hnm_search.png. Trials are
                independent: `--workers N` runs N at once (one GPU each when there are GPUs). (`training.hnm`)
4. enrichment.npz  Macenko unmixing of every unlabeled training image; windows of high residual optical density
                that pass the same selection rule (base score >= the K-th highest training-negative score) become
                extra negatives. -> figure3_enrichment.png (`training.enrichment`)
5. final_A/, final_B/  the final models on the top-K sites + enrichment + all positives.
6. threshold.json  threshold of the agreement ensemble (and of A and B alone) tuned on validation F1.
7. bundle/      weights, bundle.json (threshold, hnm, enrichment, validation, provenance), threshold.png; written
                once, with the tuned threshold.
8. screen/      the fast first stage distilled from the final models, its threshold and report, added to the bundle
                (`training.screen`; skipped when the config's screen.iterations is 0).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from model import Detector
from model.architecture import ArchitectureConfig, architecture
from model.atomic_files import write_json_atomically
from model.bundle import Bundle, write_bundle
from model.command_line import command_parser
from training.config import Config, load_config
from training.data.sources import NegativeSites, TrainingData
from training.enrichment import enrich, load_enrichment
from training.figures import plot_hnm_search, plot_threshold_curves
from training.hnm import BASE_POLICY, drop_suspects, final_negatives, score_sites, search
from training.screen import run_screen_stage
from training.threshold import summary, tune
from training.train import BEST_MODEL, train_model
from training.validation_metrics import patch_metrics

logger = logging.getLogger("training.pipeline")


def git_commit() -> str:
    try:
        root = Path(__file__).resolve().parents[1]
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def run_pipeline(config_path: str | Path, data_dir: Path, out: Path, workers: int = 1) -> Path:
    """Run (or continue) every stage; returns the bundle folder."""
    config = prepare_run(config_path, data_dir, out)
    started = time.time()
    data = config.data.load(data_dir)
    scores, n_suspects = base_model_and_scores(config, data, out)
    hnm, k, cutoff = hard_negative_search(config, data, out, scores, workers, n_suspects)
    enrichment = enrichment_negatives(config, data, out, cutoff)
    logger.info("stage 5/8: final models on %d hard + %d enrichment negatives", k, len(enrichment))
    finals = final_models(config, data, out, final_negatives(data, scores, k, enrichment))
    arch = architecture(config.train.architecture)
    state_dicts = {policy: load_file(str(result.weights)) for policy, result in finals.items()}
    threshold = tuned_threshold(config, data, out, arch, state_dicts)

    logger.info("stage 7/8: bundle")
    bundle_dir = out / "bundle"
    bundle = Bundle(architecture=arch, models=[], threshold=threshold["variants"]["ensemble"]["threshold"])
    bundle.extra = {
        "hnm": {"k_selected": k, "selection_cutoff": cutoff, "search": hnm},
        "enrichment": {
            "n_selected": len(enrichment),
            "n_candidates": int(np.load(out / "enrichment.npz")["candidates"]),
            "unlabeled_images": len(data.unlabeled),
        },
        "validation": {k_: v for k_, v in threshold.items()} | {"ap": ensemble_patch_ap(out, config.final.policies)},
        "provenance": provenance(config, config_path, data_dir, out, data, finals),
    }
    write_bundle(bundle, state_dicts, bundle_dir)
    shutil.copy(out / "threshold.png", bundle_dir / "threshold.png")
    if config.screen.iterations > 0:
        logger.info("stage 8/8: screen (distillation of the ensemble)")
        run_screen_stage(bundle_dir, data, config.screen, out / "screen")
    logger.info(
        "done in %.0f s: K=%d, %d enrichment negatives, threshold %.4f, validation F1 A %.3f / B %.3f / ensemble %.3f",
        time.time() - started,
        k,
        len(enrichment),
        bundle.threshold,
        threshold["f1_a"],
        threshold["f1_b"],
        threshold["f1_ensemble"],
    )
    return bundle_dir


def prepare_run(config_path: str | Path, data_dir: Path, out: Path) -> Config:
    """The config, checked against the one `out` was started with (a run folder is never continued under another
    config); a new run folder gets its `config.json`."""
    config = load_config(config_path)
    out.mkdir(parents=True, exist_ok=True)
    config_file = out / "config.json"
    resolved = config.to_json() | {"_config_path": str(config_path), "_data": str(data_dir)}
    if config_file.exists():
        previous = json.loads(config_file.read_text())
        if {k: v for k, v in previous.items() if not k.startswith("_")} != json.loads(json.dumps(config.to_json())):
            raise ValueError(f"{out} was made with another config; use a new --out folder or delete {config_file}")
    else:
        config_file.write_text(json.dumps(resolved, indent=2))
    return config


def base_model_and_scores(config: Config, data: TrainingData, out: Path) -> tuple[np.ndarray, int]:
    """Stages 1 and 2: the base model on every negative site, then its score of each (the hard-negative ranking);
    returns the scores with suspected unannotated mitoses dropped, and how many were."""
    logger.info("stage 1/8: base model on all %d negative sites", len(data.negatives_train))
    train_model(data, config.train, out / "base", BASE_POLICY, seed=0, description="base")
    if not (out / "scores.npz").exists():
        logger.info("stage 2/8: scoring every training negative site with the base model")
        scores = score_sites(out / "base" / "best.safetensors", config.train.architecture, data, data.negatives_train)
        np.savez(out / "scores.npz", score=scores)
    return drop_suspects(config, data, out, np.load(out / "scores.npz")["score"])


def hard_negative_search(
    config: Config, data: TrainingData, out: Path, scores: np.ndarray, workers: int, n_suspects: int
) -> tuple[dict, int, float]:
    """Stage 3: the search over K (`training.hnm`) and its Figure 2; returns the search, the chosen K and the score
    of the K-th hardest negative (the selection rule enrichment candidates must pass too)."""
    if not (out / "hnm_search.json").exists():
        logger.info("stage 3/8: hard-negative search")
        write_json_atomically(search(config, data, out, scores, workers, n_suspects), out / "hnm_search.json")
    hnm = json.loads((out / "hnm_search.json").read_text())
    plot_hnm_search(hnm, out / "figure2_hnm_search.png")
    k = hnm["k_selected"]
    return hnm, k, float(np.sort(scores)[::-1][k - 1])


def enrichment_negatives(config: Config, data: TrainingData, out: Path, cutoff: float) -> NegativeSites:
    """Stage 4: the stain-unmixing enrichment of the unlabeled images (`training.enrichment`)."""
    if not (out / "enrichment.npz").exists():
        logger.info("stage 4/8: stain-unmixing enrichment of %d unlabeled images", len(data.unlabeled))
        enrich(config, data, out, cutoff)
    return load_enrichment(out / "enrichment.npz")


def final_models(config: Config, data: TrainingData, out: Path, selected: NegativeSites) -> dict:
    """Stage 5: one final model per policy on the selected negatives and every positive; policy -> its result."""
    finals = {}
    for policy in config.final.policies:
        settings = replace(config.train, iterations=config.final.iterations, lr=config.final.lr)
        init = out / "base" / BEST_MODEL if config.final.init == "base" else None
        finals[policy] = train_model(
            data, settings, out / f"final_{policy}", policy, config.final.seed, selected, init, f"final {policy}"
        )
    return finals


def tuned_threshold(config: Config, data: TrainingData, out: Path, arch: ArchitectureConfig, state_dicts: dict) -> dict:
    """Stage 6: the thresholds of A, B and their agreement tuned on validation (`training.threshold`) ->
    threshold.json and threshold.png. The detector that is tuned loads the final models from a scratch bundle in a
    temporary folder (its threshold plays no part in tuning), so `bundle/` is written once, with the tuned
    threshold."""
    if not (out / "threshold.json").exists():
        logger.info("stage 6/8: threshold tuning on validation")
        with tempfile.TemporaryDirectory(dir=out, prefix="threshold-") as scratch:
            write_bundle(Bundle(architecture=arch, models=[], threshold=0.5), state_dicts, Path(scratch))
            result = tune(Detector(Path(scratch)), data, config.threshold.f1_tolerance)
        plot_threshold_curves(result, out / "threshold.png")
        write_json_atomically(summary(result), out / "threshold.json")
    return json.loads((out / "threshold.json").read_text())


def provenance(
    config: Config, config_path: str | Path, data_dir: Path, out: Path, data: TrainingData, finals: dict
) -> dict:
    """How the bundle was made: the command, config, data summary, commit, machine and final models."""
    return {
        "command": f"python -m training.pipeline --config {config_path} --data {data_dir} --out {out}",
        "config": config.to_json(),
        "data": data.summary(),
        "git_commit": git_commit(),
        "machine": f"{platform.machine()} {os.cpu_count()} CPU(s)"
        + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""),
        "final_models": {p: r.__dict__ | {"weights": str(r.weights)} for p, r in finals.items()},
    }


def ensemble_patch_ap(out: Path, policies: tuple[str, ...]) -> dict:
    """Calibrated patch AP of each final model and of their agreement score (the lower probability)."""
    saved = {p: np.load(out / f"final_{p}" / "best_validation.npz") for p in policies}
    labels, weights = saved[policies[0]]["labels"], saved[policies[0]]["weights"]
    result = {p: patch_metrics(labels, s["probability"], weights)["val_ap_calibrated"] for p, s in saved.items()}
    if len(policies) == 2:
        both = np.minimum(*(s["probability"] for s in saved.values()))
        result["ensemble"] = patch_metrics(labels, both, weights)["val_ap_calibrated"]
    return {name: round(value, 4) for name, value in result.items()}


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = command_parser("training.pipeline", __doc__, add_help, argparse.RawTextHelpFormatter)
    parser.add_argument("--config", default="cpu-small", help="configs/<name>.toml or a path (default: cpu-small)")
    parser.add_argument("--data", type=Path, default=None, help="MIDOG-format dataset folder or ../shared/data/real")
    parser.add_argument("--out", type=Path, required=True, help="output folder (rerun the same command to resume)")
    parser.add_argument("--workers", type=int, default=1, help="search trials run at once (default: 1)")
    parser.add_argument(
        "--retune-threshold",
        action="store_true",
        help="redo the threshold stage (6) and the bundle of the finished run in --out, with the config and data it\n"
        "was made with (no --config / --data needed)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.retune_threshold:
        made_with = json.loads((args.out / "config.json").read_text())
        (args.out / "threshold.json").unlink(missing_ok=True)
        run_pipeline(made_with["_config_path"], Path(made_with["_data"]), args.out, args.workers)
        return 0
    if args.data is None:
        raise SystemExit("error: --data is required (or --retune-threshold for a finished run)")
    run_pipeline(args.config, args.data, args.out, args.workers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
