"""Hard-negative mining as a searched hyper-parameter (the pipeline's stages 2 and 3, and the final negatives).

The base model scores every training negative site (`score_sites`, in the precision inference runs in, so the ranking
is the one that ships). A trial trains the policy-A model on the K highest-scoring sites ("hard"), on K random sites
("random", the control) or on all sites, plus all positives, and records its validation AP (`search_metric`); the
search runs a grid of K and one refinement round around the best, in parallel workers when asked. Sites of unlabeled
images that the base model scores like real mitoses are dropped first (`drop_suspects`): they may be unannotated
mitoses. The final models train on the selected K hardest sites (`final_negatives`) plus the enrichment negatives.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm import tqdm

from model.architecture import architecture
from model.bundle import POLICY_NAMES
from model.plain import PlainP4ResNet
from model.precision import autocast_dtype
from training.augment import centre_windows
from training.config import Config
from training.data.sources import NegativeSites, TrainingData
from training.train import BEST_MODEL, predict, train_model

logger = logging.getLogger("training.hnm")
BASE_POLICY = POLICY_NAMES[0]


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
        return "field_ap", f"challenge AP on {fields} whole validation fields (training.validation.field_validation)"
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
