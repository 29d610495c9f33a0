"""Does LAB colour transfer (Reinhard, as Akram et al. 2018 use it) help? The final-model stage of a pipeline run,
with and without it.

    python -m benchmarks.lab_transfer_comparison --run runs/gpu-short --data ../shared/data/real --out runs/lab-compare

Both arms fine-tune the run's base model (its exported `base/best.safetensors`) on exactly the final stage's negatives
(the K hardest + enrichment) with the same policy, seed, iterations and batch; the only difference is the LAB
transfer probability. Each arm keeps its best checkpoint by held-out field AP, as the pipeline does, and the script
prints the challenge AP / best F1 of each on the validation fields. Runs on CPU or GPU; resumable like any training.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from model.bundle import POLICY_NAMES
from training.config import load_config
from training.enrichment import load_enrichment
from training.hnm import drop_suspects, final_negatives
from training.train import train_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a finished pipeline run folder")
    parser.add_argument("--data", type=Path, required=True, help="the data the run was trained on")
    parser.add_argument("--out", type=Path, required=True, help="folder of the two arms")
    parser.add_argument(
        "--policy", default=POLICY_NAMES[0], choices=POLICY_NAMES, help="augmentation policy of both arms (default: A)"
    )
    parser.add_argument("--probability", type=float, default=0.5, help="LAB transfer probability (default: 0.5)")
    parser.add_argument("--iterations", type=int, default=300, help="per arm (default: 300)")
    parser.add_argument("--batch-size", type=int, default=128, help="(default: 128)")
    parser.add_argument("--eval-every", type=int, default=100, help="(default: 100)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    saved = json.loads((args.run / "config.json").read_text())
    config = load_config(saved["_config_path"])
    data = config.data.load(args.data)  # every data setting of the run, its split included
    scores, _ = drop_suspects(config, data, args.run, np.load(args.run / "scores.npz")["score"])
    k = json.loads((args.run / "hnm_search.json").read_text())["k_selected"]
    negatives = final_negatives(data, scores, k, load_enrichment(args.run / "enrichment.npz"))
    settings = replace(
        config.train,
        iterations=args.iterations,
        cycle=args.iterations,
        lr=config.final.lr,
        batch_size=args.batch_size,
        eval_every=args.eval_every,
    )
    results = {}
    for name, probability in (("without", 0.0), ("with", args.probability)):
        result = train_model(
            data,
            replace(settings, lab_transfer_p=probability),
            args.out / f"lab_{name}",
            args.policy,
            config.final.seed,
            negatives,
            args.run / "base" / "best.safetensors",
            f"LAB transfer {name}",
        )
        results[name] = {
            "lab_transfer_p": probability,
            "field_ap": result.field_ap,
            "field_f1": result.field_f1,
            "best_iteration": result.best_iteration,
        }
    summary = {"policy": args.policy, "iterations": args.iterations, "batch_size": args.batch_size, **results}
    (args.out / "comparison.json").write_text(json.dumps(summary, indent=2) + "\n")
    for name, record in results.items():
        print(
            f"{name:8} LAB transfer (p={record['lab_transfer_p']}): held-out field AP {record['field_ap']:.3f}, "
            f"best F1 {record['field_f1']:.3f} (iteration {record['best_iteration']})"
        )


if __name__ == "__main__":
    main()
