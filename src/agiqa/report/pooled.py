"""Test predictions pooled over a protocol's splits, and what is computed from them.

Used by the per-generator breakdown (table and figure) and the scatter figures. The manifests
(for the generator of each image and the dataset overview) are found through the path each run
recorded in its ``config.yaml``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import yaml

from agiqa.report.results import RunResult


def pooled_predictions(runs: Sequence[RunResult], protocol: str) -> pd.DataFrame:
    """Every test prediction of one protocol: dataset, model, dimension, split, image, pred,
    target (a K-fold protocol's test parts cover each image once per repeat)."""
    frames = []
    for run in runs:
        if run.protocol != protocol:
            continue
        table = run.predictions("test")
        for dim in run.dimensions():
            frames.append(
                pd.DataFrame(
                    {
                        "dataset": run.dataset,
                        "model": run.model,
                        "dimension": dim,
                        "split": run.split,
                        "image": table["image"].astype(str),
                        "pred": table[f"pred_{dim}"].to_numpy(float),
                        "target": table[f"target_{dim}"].to_numpy(float),
                    }
                )
            )
    columns = ["dataset", "model", "dimension", "split", "image", "pred", "target"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


#: A generator needs this many pooled test images for its correlations to be reported.
MIN_GENERATOR_IMAGES = 10


def generator_scores(pooled: pd.DataFrame, generators: Mapping[str, pd.Series]) -> pd.DataFrame:
    """SRCC and PLCC per (dataset, dimension, model, generator) on pooled test predictions.

    Args:
        pooled: ``pooled_predictions`` of one protocol.
        generators: dataset -> generator per image (a Series indexed by image).

    Generators with fewer than ``MIN_GENERATOR_IMAGES`` images get NaN (too few to rank).
    """
    from agiqa.evaluate.metrics import plcc, srcc

    rows = []
    for dataset, block in pooled.groupby("dataset", sort=False):
        if dataset not in generators:
            continue
        block = block.assign(generator=block["image"].map(generators[dataset]))
        keys = ["dimension", "model", "generator"]
        for (dim, model, generator), group in block.groupby(keys, sort=False):
            enough = len(group) >= MIN_GENERATOR_IMAGES
            pred, target = group["pred"].to_numpy(), group["target"].to_numpy()
            rows.append(
                {
                    "dataset": dataset,
                    "dimension": dim,
                    "model": model,
                    "generator": generator,
                    "n_images": len(group),
                    "srcc": srcc(pred, target) if enough else math.nan,
                    "plcc": plcc(pred, target) if enough else math.nan,
                }
            )
    columns = ["dataset", "dimension", "model", "generator", "n_images", "srcc", "plcc"]
    return pd.DataFrame(rows, columns=columns)


def load_manifests(runs: Sequence[RunResult]) -> dict[str, tuple[pd.DataFrame, list]]:
    """dataset -> (manifest frame, dimensions), from the manifest each run's config names.

    Runs whose manifest is gone (or that record none) are skipped: the outputs that need it
    (dataset overview, per-generator breakdown) then say so instead.
    """
    from agiqa.data.manifest import Manifest

    found: dict[str, tuple[pd.DataFrame, list]] = {}
    for run in runs:
        if run.dataset in found:
            continue
        config_path = run.path / "config.yaml"
        config = yaml.safe_load(config_path.read_text()) if config_path.exists() else {}
        path = ((config or {}).get("dataset") or {}).get("manifest")
        if path and Path(path).is_file():
            manifest = Manifest.load(path)
            found[run.dataset] = (manifest.frame, list(manifest.dimensions))
    return found
