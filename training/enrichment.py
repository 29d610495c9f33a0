"""Stain-unmixing enrichment (the pipeline's stage 4): extra negatives from the unlabeled training images.

Macenko unmixing (`training.stain`) of every unlabeled training image; windows of high residual optical density that
pass the same selection rule as the hard negatives (base score >= the K-th highest training-negative score) become
extra negatives of the final models. -> enrichment.npz, figure3_enrichment.png
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training import stain
from training.config import Config
from training.data.sources import NegativeSites, TrainingData
from training.figures import write_montage
from training.hnm import score_sites

logger = logging.getLogger("training.enrichment")


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
    write_montage(
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
