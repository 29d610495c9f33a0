"""Cross-validation by field over all 35 MiDeSeC fields: the number that says whether a recipe carries to unseen
fields, and the checkpoint and threshold that ship.

    python -m training.validation.field_cv --data ../shared/data/real --out runs/field-cv

Why: a threshold tuned on 10 fields holding 35 mitoses did not carry to other fields of the same kind (0.91 chosen,
0.97 best there). Here every field is held out once, in 5 folds of 7 (fixed by the SHA-256 of the file names), and
every reported number is out of fold (`training.validation.cv_report`: nested choice of checkpoint and threshold,
bootstrap interval by field).

Per fold (resumable: each finished step is skipped when rerun):
1. the training data with the fold's fields held out (`training.data.sources.from_real`), border-strip negatives
   included (kind "border");
2. hard negatives, the paper's mining done where it matters: every training negative site (field nuclei, tissue grid,
   border strip, MITOS 2012 fields, canine tiles) is ranked by the *start* model, which never saw a MiDeSeC field
   (the shipped weights of commit 74eb21b, trained without them; they name nearly every dark nucleus), and the K
   highest are kept, plus every border-strip site; sites of unlabeled images that score like mitoses are dropped
   first (they may be unannotated mitoses: `training.hnm.drop_suspects`'s rule);
3. A and B fine-tuned from the start weights on those negatives and every positive, a snapshot every
   `--snapshot-every` iterations;
4. the held-out fields scored as `process.py` scores an image (exact dense maps of A and B, local maxima, agreement),
   at every snapshot and at the start (iteration 0) -> fold_<k>/oof.json.
Then `cv_report.json` (`training.validation.cv_report.cross_validated`) and, with `--final`, the same training on all
35 fields;
the checkpoint is the one the nested choice picked most often, the threshold the pooled out-of-fold best at it ->
bundle/ (the screen of `--screen-from` re-attached; rechoose its threshold with `training.screen`).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import logging
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm import tqdm

from model.architecture import architecture
from model.atomic_files import write_json_atomically
from model.bundle import DEFAULT_BUNDLE_DIR, POLICY_NAMES, Bundle, load_networks, read_bundle, write_bundle
from model.command_line import command_parser
from model.precision import autocast_dtype
from training.augment import centre_windows
from training.config import TrainSettings
from training.data import real_data
from training.data.sources import (
    NEGATIVE_MIN_DISTANCE_UM,
    NegativeSites,
    TrainingData,
    from_real,
    midesec_validation_names,
)
from training.hnm import BASE_POLICY, score_sites
from training.train import BEST_MODEL, predict, snapshot_path, train_model
from training.unlabeled_mining import (
    MinedPositive,
    add_mined_positives,
    agreed_candidates,
    load_models,
    mine_positives,
    without_sites_near,
)
from training.validation.cv_report import OutOfFoldField, cross_validated, iterations_of, subset_report

logger = logging.getLogger("training.validation.field_cv")

START_COMMIT = "74eb21b"
"""The last shipped bundle trained without any MiDeSeC field (cpu-small, November 2026): a start every fold may use."""


@dataclass(frozen=True)
class CvSettings:
    folds: int = 5
    iterations: int = 400  # per model and fold (fine-tuning from the start weights)
    snapshot_every: int = 200
    lr: float = 0.01
    batch_size: int = 128
    k: int = 4000  # hard negatives kept (the last hard-negative search's choice; not searched again here)
    suspect_positive_quantile: float = 0.1
    grid_step_px: int = 32
    min_distance_um: float = NEGATIVE_MIN_DISTANCE_UM
    architecture: str = "paper"
    border_negatives: bool = True  # every border-strip site joins the hard negatives
    bootstrap: int = 2000
    seed: int = 0


@dataclass(frozen=True)
class MiningSettings:
    """The mined stage (Akram et al. 2018), measured as two arms from the same fold models: `iterations` more without
    (off) and with (on) the mitoses mined from the fold's unlabeled images (`training.unlabeled_mining`)."""

    threshold: float = 0.95  # lowest probability over both models and all 8 views
    iterations: int = 200
    weight: float = 1.0  # factor on the mined group's square-root sampling weight
    min_distance_px: float = 64.0  # negative sites this close to a mined mitosis are dropped


def split_folds(names: Sequence[str], folds: int) -> list[list[str]]:
    """Fields dealt round-robin in the order of the SHA-256 of their names: fixed, balanced (sizes differ by at most
    one), independent of listing order."""
    if folds < 2 or folds > len(names):
        raise ValueError(f"need 2 <= folds <= {len(names)} fields, not {folds}")
    ordered = sorted(names, key=lambda n: hashlib.sha256(n.encode()).hexdigest())
    return [sorted(ordered[i::folds]) for i in range(folds)]


def start_weights(out: Path, commit: str = START_COMMIT) -> dict[str, Path]:
    """The start models' exported weights, taken out of git history into `out/start/`."""
    folder = out / "start"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for policy in POLICY_NAMES:
        path = folder / f"policy_{policy.lower()}.safetensors"
        if not path.is_file():
            blob = subprocess.run(
                ["git", "show", f"{commit}:model/weights/{path.name}"],
                cwd=Path(__file__).resolve().parents[1],
                capture_output=True,
                check=True,
            ).stdout
            path.write_bytes(blob)
        paths[policy] = path
    return paths


def site_keys(data: TrainingData, sites: NegativeSites) -> np.ndarray:
    names = np.array([image.name for image in data.images])[sites.image]
    return np.char.add(
        np.char.add(np.char.add(names.astype(str), "|"), sites.row_px.astype(str)),
        np.char.add("|", sites.col_px.astype(str)),
    )


def cached_scores(data: TrainingData, weights: Path, arch: str, cache: Path) -> np.ndarray:
    """The start model's probability of every training site; sites scored in an earlier fold are looked up (the
    start model does not change between folds)."""
    known: dict[str, float] = {}
    if cache.is_file():
        saved = np.load(cache)
        known = dict(zip(saved["keys"].tolist(), saved["scores"].tolist(), strict=True))
    keys = site_keys(data, data.negatives_train)
    missing = np.flatnonzero([key not in known for key in keys])
    if len(missing):
        fresh = score_sites(weights, arch, data, data.negatives_train.subset(missing))
        known.update(zip(keys[missing].tolist(), fresh.tolist(), strict=True))
        np.savez(cache, keys=np.array(list(known)), scores=np.array(list(known.values())))
    return np.array([known[key] for key in keys])


def suspect_cut(data: TrainingData, weights: Path, arch: str, quantile: float) -> float:
    """Score above which a site of an unlabeled image may be an unannotated mitosis: the start model's `quantile` of
    the validation positives."""
    net = load_models({BASE_POLICY: weights}, arch)[BASE_POLICY]
    dtype = autocast_dtype(torch.device("cpu"))
    probability = torch.softmax(predict(net, centre_windows(torch.from_numpy(data.positives_val)), dtype), 1)[:, 1]
    return float(np.quantile(probability.numpy(), quantile))


def fold_negatives(data: TrainingData, scores: np.ndarray, k: int, cut: float, border: bool = True) -> NegativeSites:
    """The K highest-scoring training sites (unlabeled images' sites at or above `cut` removed first) and, with
    `border`, every border-strip site."""
    sites = data.negatives_train
    suspect = np.isin(sites.image, data.unlabeled) & (scores >= cut)
    eligible = np.flatnonzero(~suspect)
    hard = eligible[np.argsort(-scores[eligible], kind="stable")[:k]]
    keep = np.union1d(hard, np.flatnonzero(sites.kind == "border")) if border else np.sort(hard)
    logger.info(
        "negatives: %d hardest (cut-off %.3f) + border strip = %d; %d suspected unannotated mitoses dropped",
        len(hard),
        float(scores[hard[-1]]) if len(hard) else float("nan"),
        len(keep),
        int(suspect.sum()),
    )
    return sites.subset(keep)


def train_fold(
    data: TrainingData, settings: CvSettings, folder: Path, start: dict[str, Path], cache: Path
) -> dict[str, Path]:
    """Steps 2-3 for one fold (or for all fields); returns each policy's run folder."""
    negatives = training_negatives(data, settings, start, cache)
    return train_pair(data, settings, negatives, folder, start, settings.iterations, settings.snapshot_every)


def training_negatives(data: TrainingData, settings: CvSettings, start: dict[str, Path], cache: Path) -> NegativeSites:
    scores = cached_scores(data, start[BASE_POLICY], settings.architecture, cache)
    cut = suspect_cut(data, start[BASE_POLICY], settings.architecture, settings.suspect_positive_quantile)
    return fold_negatives(data, scores, settings.k, cut, settings.border_negatives)


def train_pair(
    data: TrainingData,
    settings: CvSettings,
    negatives: NegativeSites,
    folder: Path,
    init: dict[str, Path],
    iterations: int,
    snapshot_every: int,
) -> dict[str, Path]:
    """A and B fine-tuned from `init` with a snapshot every `snapshot_every` iterations; returns their run folders."""
    train = TrainSettings(
        iterations=iterations,
        cycle=iterations,
        batch_size=settings.batch_size,
        lr=settings.lr,
        eval_every=snapshot_every,
        val_negatives=4000,
        architecture=settings.architecture,
        snapshots=True,
    )
    runs = {}
    for policy in POLICY_NAMES:
        runs[policy] = folder / policy
        train_model(
            data, train, runs[policy], policy, settings.seed, negatives, init[policy], f"{folder.name} {policy}"
        )
    return runs


def snapshot_iterations(settings: CvSettings) -> list[int]:
    steps = list(range(settings.snapshot_every, settings.iterations + 1, settings.snapshot_every))
    return steps if steps and steps[-1] == settings.iterations else [*steps, settings.iterations]


def run_fold(
    fold: int, names: list[str], root: Path, settings: CvSettings, out: Path, start: dict[str, Path]
) -> list[OutOfFoldField]:
    """Steps 1-4 for one fold; the out-of-fold points are kept in fold_<k>/oof.json."""
    folder = out / f"fold_{fold}"
    result = folder / "oof.json"
    if result.is_file():
        return [OutOfFoldField.from_json(r) for r in json.loads(result.read_text())]
    data = from_real(root, settings.grid_step_px, settings.min_distance_um, held_out_fields=names)
    runs = train_fold(data, settings, folder, start, out / "start_scores.npz")
    checkpoints = {0: start} | {
        it: {p: snapshot_path(runs[p], it) for p in POLICY_NAMES} for it in snapshot_iterations(settings)
    }
    fields = held_out_points(data, fold, checkpoints, settings.architecture)
    write_json_atomically([f.to_json() for f in fields], result)
    return fields


def held_out_points(
    data: TrainingData, fold: int, checkpoints: dict[int, dict[str, Path]], arch: str
) -> list[OutOfFoldField]:
    """Step 4: the agreed points of every checkpoint on every held-out field."""
    models = {it: load_models(weights, arch) for it, weights in checkpoints.items()}  # once, not per field
    fields = []
    for region in tqdm(data.field_regions, desc=f"fold {fold}: held-out fields", unit="field"):
        image = data.images[region.image]
        rgb = image.read()
        points = {}
        for it, pair in models.items():  # the agreed points process.py writes (at or above the candidate floor)
            xy, probability = agreed_candidates(pair, rgb, image.spacing_mm)
            keep = probability >= Bundle.candidate_floor
            points[it] = (xy[keep], probability[keep])
        fields.append(
            OutOfFoldField(
                name=image.name,
                fold=fold,
                shape_px=(image.height_px, image.width_px),
                spacing_mm=image.spacing_mm,
                mitoses_xy_px=np.asarray(region.mitoses_rc, dtype=float).reshape(-1, 2)[:, ::-1],
                points=points,
            )
        )
    return fields


def mined_arm_data(
    data: TrainingData, settings: CvSettings, mining: MiningSettings, folder: Path, negatives: NegativeSites
) -> tuple[NegativeSites, int]:
    """Mine the unlabeled images with the pair trained in `folder` (its last snapshot) and add the mitoses to `data`
    (in place); returns the negatives less the sites near them, and how many were mined (kept in mined.json)."""
    weights = {p: snapshot_path(folder / p, settings.iterations) for p in POLICY_NAMES}
    record = folder / "mined.json"
    if record.is_file():
        keys = MinedPositive.__dataclass_fields__
        mined = [MinedPositive(**{k: v for k, v in m.items() if k in keys}) for m in json.loads(record.read_text())]
    else:
        mined = mine_positives(data, data.unlabeled, load_models(weights, settings.architecture), mining.threshold)
        names = [data.images[m.image].name for m in mined]  # for `python -m training.figures mined`
        write_json_atomically([asdict(m) | {"image_name": n} for m, n in zip(mined, names, strict=True)], record)
    add_mined_positives(data, mined, mining.weight, mining.min_distance_px)
    return without_sites_near(negatives, mined, mining.min_distance_px), len(mined)


def run_mining_arms(
    fold: int,
    names: list[str],
    root: Path,
    settings: CvSettings,
    mining: MiningSettings,
    out: Path,
    start: dict[str, Path],
) -> dict:
    """Both arms of one fold -> fold_<k>/mining_arms.json: {"off": fields, "on": fields, "mined": count}."""
    folder = out / f"fold_{fold}"
    result = folder / "mining_arms.json"
    if result.is_file():
        return json.loads(result.read_text())
    data = from_real(root, settings.grid_step_px, settings.min_distance_um, held_out_fields=names)
    negatives = training_negatives(data, settings, start, out / "start_scores.npz")
    init = {p: folder / p / BEST_MODEL for p in POLICY_NAMES}  # snapshot runs keep their last weights as "best"
    off = train_pair(data, settings, negatives, folder / "mining_off", init, mining.iterations, mining.iterations)
    negatives_on, count = mined_arm_data(data, settings, mining, folder, negatives)
    on = train_pair(data, settings, negatives_on, folder / "mining_on", init, mining.iterations, mining.iterations)
    arms = {"mined": count}
    for arm, runs in (("off", off), ("on", on)):
        checkpoints = {0: {p: snapshot_path(runs[p], mining.iterations) for p in POLICY_NAMES}}
        arms[arm] = [f.to_json() for f in held_out_points(data, fold, checkpoints, settings.architecture)]
    write_json_atomically(arms, result)
    return arms


def mining_report(arms_by_fold: list[dict], resamples: int, seed: int) -> dict:
    """Cross-validated field F1 of each arm (nested threshold), and whether the stage stays on."""
    report = {"mined_per_fold": [a["mined"] for a in arms_by_fold]}
    for arm in ("off", "on"):
        fields = [OutOfFoldField.from_json(f) for a in arms_by_fold for f in a[arm]]
        report[arm] = cross_validated(fields, resamples, seed)["nested"]
    report["keep_on"] = report["on"]["f1"] > report["off"]["f1"]
    return report


def bundle_weights(bundle_dir: Path) -> dict[str, Path]:
    """A bundle's A and B weights as start weights (checksums verified)."""
    bundle = read_bundle(bundle_dir)
    load_networks(bundle, bundle_dir)  # raises on a checksum mismatch
    return {m.policy: bundle_dir / m.file for m in bundle.models}


def shipped_split(names: list[str], root: Path, settings: CvSettings, out: Path, start: dict[str, Path]) -> dict:
    """The 10 fields the shipped bundle never saw, held out; everything else trains. Each checkpoint (iteration 0 is
    the start weights themselves) is measured with its threshold chosen on the other half of the 10 fields."""
    held_out = sorted(midesec_validation_names(names))
    fields = run_fold(0, held_out, root, settings, out, start)
    halves = {name: half for half, part in enumerate(split_folds(held_out, 2)) for name in part}
    fields = [replace(f, fold=halves[f.name]) for f in fields]
    per_checkpoint = {
        str(it): cross_validated(
            [replace(f, points={it: f.points[it]}) for f in fields], settings.bootstrap, settings.seed
        )["nested"]
        for it in iterations_of(fields)
    }
    return {"held_out": held_out, "per_checkpoint": per_checkpoint, "all": cross_validated(fields)}


def most_chosen_iteration(choice: dict[str, dict]) -> int:
    """The checkpoint the folds' nested choices picked most often (ties: the later one, the longer training)."""
    counts = collections.Counter(c["iteration"] for c in choice.values())
    return max(counts, key=lambda it: (counts[it], it))


def final_bundle(
    root: Path, settings: CvSettings, out: Path, start: dict[str, Path], report: dict, screen_from: Path
) -> Path:
    """The same training on all 35 fields; the bundle takes the CV's checkpoint and pooled out-of-fold threshold."""
    iteration = most_chosen_iteration(report["choice"])
    threshold = report["pooled_best_per_checkpoint"][str(iteration)]["threshold"]
    data = from_real(root, settings.grid_step_px, settings.min_distance_um, held_out_fields=())
    runs = train_fold(data, settings, out / "all_fields", start, out / "start_scores.npz")
    state_dicts = {p: load_file(str(snapshot_path(runs[p], iteration))) for p in POLICY_NAMES}
    bundle_dir = out / "bundle"
    bundle = Bundle(architecture=architecture(settings.architecture), models=[], threshold=float(threshold))
    previous = read_bundle(screen_from)
    bundle.screen = previous.screen
    bundle.extra = {
        "validation": {
            "method": "5-fold cross-validation by field over the 35 MiDeSeC fields (training.validation.field_cv); "
            "nested choice",
            "cross_validated": report["nested"],
            "checkpoint_iteration": iteration,
            "threshold_pooled_out_of_fold": threshold,
        },
        "provenance": {
            "command": f"python -m training.validation.field_cv --data {root} --out {out} --final",
            "settings": asdict(settings),
            "start": START_COMMIT,
            "data": data.summary(),
        },
    }
    write_bundle(bundle, state_dicts, bundle_dir)
    if previous.screen is not None:
        shutil.copy(screen_from / previous.screen.file, bundle_dir / previous.screen.file)
    return bundle_dir


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = command_parser("training.validation.field_cv", __doc__, add_help, argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the real offline folder (../shared/data/real)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (rerun the same command to resume)")
    parser.add_argument("--folds", type=int, default=CvSettings.folds)
    parser.add_argument("--iterations", type=int, default=CvSettings.iterations)
    parser.add_argument("--snapshot-every", type=int, default=CvSettings.snapshot_every)
    parser.add_argument("--k", type=int, default=CvSettings.k, help="hard negatives kept")
    parser.add_argument("--architecture", default=CvSettings.architecture, help="paper, or narrow (CI only)")
    parser.add_argument(
        "--no-border-negatives", action="store_true", help="hard negatives only (the ablation of the border sites)"
    )
    parser.add_argument("--only-folds", type=int, nargs="*", help="run these folds only (no report)")
    parser.add_argument("--final", action="store_true", help="after the report, train on all fields and bundle")
    parser.add_argument(
        "--mined-positives",
        action="store_true",
        help="measure the mined stage (Akram et al. 2018) per fold (off vs on, same start and iterations) "
        "-> mining_report.json",
    )
    parser.add_argument("--mining-threshold", type=float, default=MiningSettings.threshold)
    parser.add_argument("--mining-iterations", type=int, default=MiningSettings.iterations)
    parser.add_argument(
        "--start-bundle",
        type=Path,
        help="start from this bundle's weights instead of commit 74eb21b's (they rank the hard negatives too)",
    )
    parser.add_argument(
        "--shipped-split",
        action="store_true",
        help="one fold only: hold out the 10 fields the shipped bundle never saw (with --start-bundle model/weights:\n"
        "the shipped models fine-tuned on the fields they were trained on, compared with themselves, iteration 0, on\n"
        "fields neither saw; checkpoint and threshold chosen by 2-fold nested choice among the 10)\n"
        "-> shipped_split.json",
    )
    parser.add_argument("--screen-from", type=Path, default=DEFAULT_BUNDLE_DIR, help="bundle whose screen is reused")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    settings = CvSettings(
        folds=args.folds,
        iterations=args.iterations,
        snapshot_every=args.snapshot_every,
        k=args.k,
        architecture=args.architecture,
        border_negatives=not args.no_border_negatives,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    saved = args.out / "settings.json"
    defaults = asdict(CvSettings())  # settings added since a run started take their default
    if saved.is_file() and defaults | json.loads(saved.read_text()) != json.loads(json.dumps(asdict(settings))):
        raise SystemExit(f"error: {args.out} was made with other settings ({saved}); use a new --out")
    saved.write_text(json.dumps(asdict(settings), indent=2))
    started = time.time()
    names = [f.path.name for f in real_data.load_midesec_fields(args.data)]
    folds = split_folds(names, settings.folds)
    write_json_atomically({str(k): v for k, v in enumerate(folds)}, args.out / "folds.json")
    start = start_weights(args.out) if args.start_bundle is None else bundle_weights(args.start_bundle)
    if args.shipped_split:
        report = shipped_split(names, args.data, settings, args.out, start) | {"start": str(args.start_bundle)}
        write_json_atomically(report, args.out / "shipped_split.json")
        for iteration, nested in report["per_checkpoint"].items():
            print(
                f"iteration {iteration}: F1 {nested['f1']:.3f} (95% CI {nested['f1_ci95'][0]:.3f}-"
                f"{nested['f1_ci95'][1]:.3f}), FP/mm2 strip {nested['fp_per_mm2_strip']:.1f} vs interior "
                f"{nested['fp_per_mm2_interior']:.1f}"
            )
        return 0
    fields = []
    for fold, held_out in enumerate(folds):
        if args.only_folds and fold not in args.only_folds:
            continue
        logger.info("fold %d/%d: %s", fold + 1, len(folds), held_out)
        fields += run_fold(fold, held_out, args.data, settings, args.out, start)
    mining = MiningSettings(threshold=args.mining_threshold, iterations=args.mining_iterations)
    if args.only_folds:
        if args.mined_positives:
            for fold in args.only_folds:
                run_mining_arms(fold, folds[fold], args.data, settings, mining, args.out, start)
        return 0
    report = cross_validated(fields, settings.bootstrap, settings.seed)
    report["never_seen_by_shipped_bundle"] = subset_report(report, sorted(midesec_validation_names(names)))
    report["folds"] = {str(k): v for k, v in enumerate(folds)}
    report["seconds"] = round(time.time() - started, 1)
    write_json_atomically(report, args.out / "cv_report.json")
    nested = report["nested"]
    print(
        f"cross-validated field F1 {nested['f1']:.3f} (95% CI {nested['f1_ci95'][0]:.3f}-{nested['f1_ci95'][1]:.3f}),"
        f" precision {nested['precision']:.3f}, recall {nested['recall']:.3f}; FP/mm2 strip "
        f"{nested['fp_per_mm2_strip']:.1f} vs interior {nested['fp_per_mm2_interior']:.1f}"
    )
    if args.mined_positives:
        arms = [
            run_mining_arms(fold, held_out, args.data, settings, mining, args.out, start)
            for fold, held_out in enumerate(folds)
        ]
        mined = mining_report(arms, settings.bootstrap, settings.seed) | {"settings": asdict(mining)}
        write_json_atomically(mined, args.out / "mining_report.json")
        print(
            f"mined stage (Akram et al. 2018): field F1 off {mined['off']['f1']:.3f}, on {mined['on']['f1']:.3f} "
            f"({sum(mined['mined_per_fold'])} mitoses mined over the folds): "
            f"stage {'on' if mined['keep_on'] else 'off'}"
        )
    if args.final:
        print(f"bundle: {final_bundle(args.data, settings, args.out, start, report, args.screen_from)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
