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
                independent: `--workers N` runs N at once (one GPU each when there are GPUs).
4. enrichment.npz  Macenko unmixing of every unlabeled training image; windows of high residual optical density
                that pass the same selection rule (base score >= the K-th highest training-negative score) become
                extra negatives. -> figure3_enrichment.png
5. final_A/, final_B/  the final models on the top-K sites + enrichment + all positives.
6. threshold.json  threshold of the agreement ensemble (and of A and B alone) tuned on validation F1.
7. bundle/      weights, bundle.json (threshold, hnm, enrichment, validation, provenance), threshold.png.
8. screen/      the fast first stage distilled from the final models, its threshold and report, added to the bundle
                (`training.screen`; skipped when the config's screen.iterations is 0).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm import tqdm

from model.architecture import architecture
from model.bundle import Bundle, write_bundle
from model.inference import Detector, autocast_dtype
from model.output import write_json_atomically
from model.plain import PlainP4ResNet
from training import stain
from training.augment import centre_windows
from training.config import Config, load_config
from training.data.sources import NegativeSites, TrainingData, load_training_data
from training.plots import plot_hnm_search
from training.screen import run_screen_stage
from training.threshold import plot_threshold_curves, summary, tune
from training.train import BEST_MODEL, predict, train_model
from training.validation_metrics import patch_metrics

logger = logging.getLogger("training.pipeline")
BASE_POLICY = "A"


def score_sites(weights: Path, arch: str, data: TrainingData, sites: NegativeSites, chunk: int = 2048) -> np.ndarray:
    """Probability of every site under a trained model (plain-torch export, eval mode, memory bounded by `chunk`)."""
    net = PlainP4ResNet(architecture(arch))
    net.load_state_dict(load_file(str(weights)))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = autocast_dtype(device)  # the precision inference runs in: the ranking is the one that ships
    net = net.to(device)
    scores = []
    for start in tqdm(range(0, len(sites), chunk), desc="scoring sites", unit="chunk"):
        crops = data.crops(sites, np.arange(start, min(start + chunk, len(sites))))
        logits = predict(net, centre_windows(torch.from_numpy(crops)), dtype)
        scores.append(torch.softmax(logits, 1)[:, 1].numpy())
    return np.concatenate(scores) if scores else np.zeros(0)


# ------------------------------------------------------------------------------------------------ search trials

_WORKER_DATA: TrainingData | None = None
"""The training data inside a forked search worker (`_init_worker`, once per worker, never in the main process):
fork shares it copy-on-write instead of pickling it into every job."""


def _init_worker(data: TrainingData) -> None:
    global _WORKER_DATA
    _WORKER_DATA = data


def _run_trial_in_worker(job: tuple) -> tuple[str, float, float]:
    return run_trial(_WORKER_DATA, job)


def trial_name(selection: str, k: int, seed: int) -> str:
    return f"all-s{seed}" if selection == "all" else f"{selection}-k{k}-s{seed}"


def trial_negatives(data: TrainingData, scores: np.ndarray, selection: str, k: int, seed: int) -> NegativeSites:
    """Top-K by base score (ties by site order), K random sites, or all sites."""
    if selection == "all":
        return data.negatives_train
    if selection == "hard":
        return data.negatives_train.subset(np.sort(np.argsort(-scores, kind="stable")[:k]))
    chosen = np.random.default_rng(10_000 + seed).choice(len(scores), size=k, replace=False)
    return data.negatives_train.subset(np.sort(chosen))


def run_trial(data: TrainingData, job: tuple) -> tuple[str, float, float]:
    """One search trial (runs in a worker process when --workers > 1)."""
    config, out, scores, selection, k, seed, worker_threads, gpu = job
    if gpu is not None:
        torch.cuda.set_device(gpu)
    if worker_threads:
        torch.set_num_threads(worker_threads)
    name = trial_name(selection, k, seed)
    settings = replace(config.train, iterations=config.hnm.iterations, lr=config.hnm.lr, cycle=config.hnm.iterations)
    if worker_threads:
        settings = replace(settings, threads=worker_threads)
    init = out / "base" / BEST_MODEL if config.hnm.init == "base" else None
    result = train_model(
        data,
        settings,
        out / "search" / name,
        BASE_POLICY,
        seed,
        trial_negatives(data, scores, selection, k, seed),
        init=init,
        description=name,
    )
    return name, result.field_ap, result.val_ap_calibrated


def run_trials(
    config: Config,
    data: TrainingData,
    out: Path,
    scores: np.ndarray,
    trials: list[tuple[str, int, int]],
    workers: int,
) -> None:
    gpus = torch.cuda.device_count()
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 and not gpus else 0
    jobs = [
        (config, out, scores, selection, k, seed, threads, (index % gpus) if gpus else None)
        for index, (selection, k, seed) in enumerate(trials)
    ]
    if workers <= 1:
        for job in tqdm(jobs, desc="HNM search trials", unit="trial"):
            run_trial(data, job)
        return
    with multiprocessing.get_context("fork").Pool(workers, initializer=_init_worker, initargs=(data,)) as pool:
        trial_results = pool.imap_unordered(_run_trial_in_worker, jobs)
        for _ in tqdm(trial_results, total=len(jobs), desc="HNM search trials", unit="trial"):
            pass


def trial_record(out: Path, selection: str, k: int, seed: int) -> dict:
    return json.loads((out / "search" / trial_name(selection, k, seed) / "best.json").read_text())


def search_metric(data: TrainingData) -> tuple[str, str]:
    """The key of `best.json` that ranks regimes, and its description: validation-field AP (the paper ranks by AP
    on real validation images); the patch-level calibrated AP only for data without validation fields."""
    if data.field_regions:
        fields = len(data.field_regions)
        return "field_ap", f"challenge AP on {fields} whole validation fields (training.field_validation)"
    return "val_ap_calibrated", (
        "patch-level validation AP, negatives weighted to the MIDOG 2022 mitosis density "
        "(training/validation_metrics.py)"
    )


def search(
    config: Config, data: TrainingData, out: Path, scores: np.ndarray, workers: int, n_suspects: int = 0
) -> dict:
    """The HNM search (stage 3): grid, one refinement round, summary JSON and Figure 2."""
    n = len(scores)
    grid = sorted({min(k, n) for k in config.hnm.k})
    selections = ("hard", "random") if config.hnm.random_control else ("hard",)

    def trials_for(ks: list[int]) -> list[tuple[str, int, int]]:
        return [
            (s, k, seed) for k in ks for s in selections for seed in config.hnm.seeds if not (s == "random" and k == n)
        ]

    metric, metric_description = search_metric(data)

    def mean_ap(selection: str, k: int) -> float:
        return float(np.mean([trial_record(out, selection, k, seed)[metric] for seed in config.hnm.seeds]))

    all_trials = [("all", n, seed) for seed in config.hnm.seeds]
    run_trials(config, data, out, scores, all_trials + trials_for(grid), workers)
    if config.hnm.refine and len(grid) > 1:
        best = int(np.argmax([mean_ap("hard", k) for k in grid]))
        # the optimum at an edge of the grid: extend beyond it (halve / double) besides the midpoints inside
        outward = []
        if best == 0 and grid[0] >= 2:
            outward = [grid[0] // 2]
        elif best == len(grid) - 1:
            outward = [min(2 * grid[-1], n)]
        neighbours = [grid[i] for i in (best - 1, best + 1) if 0 <= i < len(grid)]
        midpoints = sorted(({int(round(math.sqrt(grid[best] * k))) for k in neighbours} | set(outward)) - set(grid))
        run_trials(config, data, out, scores, trials_for(midpoints), workers)
        grid = sorted(set(grid) | set(midpoints))

    pixels_per_window = (2 * (config.data.grid_step_px // 2)) ** 2
    positives = len(data.positives_train)

    def stats(selection: str, k: int) -> dict:
        aps = [trial_record(out, selection, k, seed)[metric] for seed in config.hnm.seeds]
        f1 = [trial_record(out, selection, k, seed).get("field_f1") for seed in config.hnm.seeds]
        plain = [trial_record(out, selection, k, seed)["val_ap_calibrated"] for seed in config.hnm.seeds]
        return {
            "k": k,
            "selection": selection,
            "pixel_fraction": round((k + positives) * pixels_per_window / data.training_pixels, 5),
            "ap_mean": float(np.mean(aps)),
            "ap_std": float(np.std(aps)),
            "ap": aps,
            "field_f1": f1,
            "patch_ap_calibrated_mean": float(np.mean(plain)),
        }

    points = [stats(s, k) for k in grid for s in selections if not (s == "random" and k == n)]
    hard = [p for p in points if p["selection"] == "hard"]
    k_selected = max(hard, key=lambda p: (p["ap_mean"], -p["k"]))["k"]
    all_aps = [trial_record(out, "all", n, seed)[metric] for seed in config.hnm.seeds]
    return {
        "suspected_mitoses_dropped": int(n_suspects),
        "metric": metric_description,
        "trial_init": config.hnm.init,
        "trial_iterations": config.hnm.iterations,
        "seeds": list(config.hnm.seeds),
        "n_training_negatives": n,
        "training_pixels": data.training_pixels,
        "all_negatives": {"ap_mean": float(np.mean(all_aps)), "ap_std": float(np.std(all_aps)), "ap": all_aps},
        "points": points,
        "k_selected": int(k_selected),
    }


# ------------------------------------------------------------------------------------------------ enrichment


def enrich(config: Config, data: TrainingData, out: Path, cutoff: float) -> NegativeSites:
    """Stage 4: high-residual windows of unlabeled training images whose base score reaches `cutoff`."""
    found = NegativeSites.empty()
    residuals = []
    for index in tqdm(data.unlabeled, desc="stain unmixing", unit="image"):
        rgb = data.images[index].read()
        try:
            matrix = stain.macenko_stain_matrix(rgb)
        except ValueError as error:  # too little tissue to estimate stains: nothing to enrich from
            logger.warning("%s: %s", data.images[index].name, error)
            continue
        density = stain.residual_density(rgb, matrix)
        centres = stain.residual_candidates(
            rgb,
            matrix,
            min_distance_px=config.enrichment.min_distance_px,
            quantile=config.enrichment.quantile,
            max_candidates=config.enrichment.max_per_image,
            density=density,
        )
        fraction = stain.residual_fraction(rgb, matrix)[centres[:, 0], centres[:, 1]] if len(centres) else np.zeros(0)
        centres = centres[fraction >= config.enrichment.min_residual_fraction]
        residuals.append(density[centres[:, 0], centres[:, 1]] if len(centres) else np.zeros(0))
        on_image = data.negatives_train.source[data.negatives_train.image == index]
        source = str(on_image[0]) if len(on_image) else "enrichment"  # balanced with its image's other negatives
        found = found.concatenate(NegativeSites.build(index, centres, "enrichment", source))
    candidate_scores = score_sites(out / "base" / "best.safetensors", config.train.architecture, data, found)
    keep = candidate_scores >= cutoff
    selected = found.subset(np.flatnonzero(keep))
    order = np.argsort(-candidate_scores[keep], kind="stable")
    crops = data.crops(selected, order[:48])
    captions = [f"p={candidate_scores[keep][i]:.2f}" for i in order[:48]]
    stain.write_montage(
        crops,
        out / "figure3_enrichment.png",
        title=f"{keep.sum()} of {len(found)} high-residual windows pass the selection rule (score >= {cutoff:.3f})",
        captions=captions,
    )
    np.savez(
        out / "enrichment.npz",
        image=selected.image,
        source=selected.source,
        row_px=selected.row_px,
        col_px=selected.col_px,
        score=candidate_scores[keep],
        candidates=len(found),
        residual=np.concatenate(residuals)[keep] if residuals else np.zeros(0),
        cutoff=cutoff,
    )
    return selected


def load_enrichment(path: Path) -> NegativeSites:
    saved = np.load(path)
    count = len(saved["image"])
    sources = saved["source"] if "source" in saved else np.full(count, "enrichment")
    return NegativeSites(saved["image"], saved["row_px"], saved["col_px"], np.full(count, "enrichment"), sources)


# ------------------------------------------------------------------------------------------------ the pipeline


def drop_suspects(config: Config, data: TrainingData, out: Path, scores: np.ndarray) -> tuple[np.ndarray, int]:
    """Remove from `data.negatives_train` (and `scores`) the sites of unlabeled images (MITOS 2012 fields) that the base
    model scores like real mitoses (above the lowest tenth of held-out mitoses): they may be unannotated mitoses, so
    they are neither hard nor random negatives. Returns the remaining scores and how many were dropped."""
    held_out = np.load(out / "base" / "best_validation.npz")
    suspect_cut = float(
        np.quantile(held_out["probability"][held_out["labels"] == 1], config.hnm.suspect_positive_quantile)
    )
    suspect = np.isin(data.negatives_train.image, data.unlabeled) & (scores >= suspect_cut)
    if suspect.any():
        logger.info(
            "dropping %d suspected unannotated mitoses (score >= %.3f) from the negatives", suspect.sum(), suspect_cut
        )
        data.negatives_train = data.negatives_train.subset(np.flatnonzero(~suspect))
    return scores[~suspect], int(suspect.sum())


def final_negatives(data: TrainingData, scores: np.ndarray, k: int, enrichment: NegativeSites) -> NegativeSites:
    """What the final models train on: the K hardest training negatives plus the enrichment negatives."""
    return trial_negatives(data, scores, "hard", k, 0).concatenate(enrichment)


def git_commit() -> str:
    try:
        root = Path(__file__).resolve().parents[1]
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def run_pipeline(config_path: str | Path, data_dir: Path, out: Path, workers: int = 1) -> Path:
    """Run (or continue) every stage; returns the bundle folder."""
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
    started = time.time()
    data = load_training_data(
        data_dir,
        config.data.grid_step_px,
        config.data.min_distance_um,
        config.data.validation_fraction,
        config.data.split_seed,
    )

    logger.info("stage 1/8: base model on all %d negative sites", len(data.negatives_train))
    train_model(data, config.train, out / "base", BASE_POLICY, seed=0, description="base")

    if not (out / "scores.npz").exists():
        logger.info("stage 2/8: scoring every training negative site with the base model")
        scores = score_sites(out / "base" / "best.safetensors", config.train.architecture, data, data.negatives_train)
        np.savez(out / "scores.npz", score=scores)
    scores, n_suspects = drop_suspects(config, data, out, np.load(out / "scores.npz")["score"])

    if not (out / "hnm_search.json").exists():
        logger.info("stage 3/8: hard-negative search")
        write_json_atomically(search(config, data, out, scores, workers, n_suspects), out / "hnm_search.json")
    hnm = json.loads((out / "hnm_search.json").read_text())
    plot_hnm_search(hnm, out / "figure2_hnm_search.png")
    k = hnm["k_selected"]
    cutoff = float(np.sort(scores)[::-1][k - 1])

    if not (out / "enrichment.npz").exists():
        logger.info("stage 4/8: stain-unmixing enrichment of %d unlabeled images", len(data.unlabeled))
        enrich(config, data, out, cutoff)
    enrichment = load_enrichment(out / "enrichment.npz")

    selected = final_negatives(data, scores, k, enrichment)
    logger.info("stage 5/8: final models on %d hard + %d enrichment negatives", k, len(enrichment))
    finals = {}
    for policy in config.final.policies:
        settings = replace(config.train, iterations=config.final.iterations, lr=config.final.lr)
        init = out / "base" / BEST_MODEL if config.final.init == "base" else None
        finals[policy] = train_model(
            data, settings, out / f"final_{policy}", policy, config.final.seed, selected, init, f"final {policy}"
        )

    bundle_dir = out / "bundle"
    arch = architecture(config.train.architecture)
    state_dicts = {policy: load_file(str(result.weights)) for policy, result in finals.items()}
    if not (out / "threshold.json").exists():
        logger.info("stage 6/8: threshold tuning on validation")
        write_bundle(Bundle(architecture=arch, models=[], threshold=0.5), state_dicts, bundle_dir)
        result = tune(Detector(bundle_dir), data, config.threshold.f1_tolerance)
        plot_threshold_curves(result, out / "threshold.png")
        write_json_atomically(summary(result), out / "threshold.json")
    threshold = json.loads((out / "threshold.json").read_text())

    logger.info("stage 7/8: bundle")
    ensemble_ap = ensemble_patch_ap(out, config.final.policies)
    bundle = Bundle(architecture=arch, models=[], threshold=threshold["variants"]["ensemble"]["threshold"])
    bundle.extra = {
        "hnm": {"k_selected": k, "selection_cutoff": cutoff, "search": hnm},
        "enrichment": {
            "n_selected": len(enrichment),
            "n_candidates": int(np.load(out / "enrichment.npz")["candidates"]),
            "unlabeled_images": len(data.unlabeled),
        },
        "validation": {k_: v for k_, v in threshold.items()} | {"ap": ensemble_ap},
        "provenance": {
            "command": f"python -m training.pipeline --config {config_path} --data {data_dir} --out {out}",
            "config": config.to_json(),
            "data": data.summary(),
            "git_commit": git_commit(),
            "machine": f"{platform.machine()} {os.cpu_count()} CPU(s)"
            + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""),
            "final_models": {p: r.__dict__ | {"weights": str(r.weights)} for p, r in finals.items()},
        },
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
    parser = argparse.ArgumentParser(
        description=__doc__, add_help=add_help, formatter_class=argparse.RawTextHelpFormatter
    )
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
