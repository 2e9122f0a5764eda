"""Fake finished run directories (what a fold job leaves behind) for the reporting tests."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from agiqa.data.splits import Protocol

SPLIT_SHA = "ab" * 32
Part = Mapping[str, tuple[np.ndarray, np.ndarray]]  # dimension -> (pred, target)


def prediction_table(images: list[str], split: int, part: Part) -> pd.DataFrame:
    table = pd.DataFrame({"image": images, "split": split})
    for dim, (pred, target) in part.items():
        table[f"pred_{dim}"] = pred
        table[f"target_{dim}"] = target
    return table


def write_run(
    root: Path,
    model: str,
    split: int,
    test: Part,
    *,
    val: Part | None = None,
    images: list[str] | None = None,
    protocol: str = "kfold_grouped",
    protocol_type: str | None = None,
    dataset: str = "synthetic",
    folds: int = 5,
    commit: str = "c" * 40,
    seconds: float = 3.5,
    config: str | None = None,
) -> Path:
    """A run directory with metrics.json, predictions, history and config."""
    run_dir = root / "runs" / protocol / dataset / model / f"split{split}"
    run_dir.mkdir(parents=True)
    n_test = len(next(iter(test.values()))[0])
    images = images or [f"img{split}_{i:04d}.jpg" for i in range(n_test)]
    settings = Protocol(type=protocol_type or protocol, folds=folds).settings()
    metrics = {
        "dataset": dataset,
        "model": model,
        "protocol": protocol,
        "protocol_settings": settings,
        "split": split,
        "n_train": 100,
        "n_val": 0 if val is None else len(next(iter(val.values()))[0]),
        "n_test": n_test,
        "best_epoch": 1,
        "epochs_run": 2,
        "seconds": seconds,
        "config_hash": "abc123",
        "provenance": {
            "commit": commit,
            "versions": {"torch": "2.14.1"},
            "split_sha256": SPLIT_SHA,
            "manifest_sha256": "cd" * 32,
        },
        "test": {},
        "val": {},
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    prediction_table(images, split, test).to_csv(run_dir / "predictions.csv", index=False)
    if val is None:
        empty = {dim: (np.zeros(0), np.zeros(0)) for dim in test}
        prediction_table([], split, empty).to_csv(run_dir / "val_predictions.csv", index=False)
    else:
        n_val = len(next(iter(val.values()))[0])
        val_images = [f"val{split}_{i:04d}.jpg" for i in range(n_val)]
        prediction_table(val_images, split, val).to_csv(
            run_dir / "val_predictions.csv", index=False
        )
    (run_dir / "config.yaml").write_text(config or f"model:\n  type: {model}\nseed: 0\n")
    (run_dir / "history.csv").write_text(
        "epoch,train_loss,val_srcc_mean,lr,seconds\n1,0.9,0.5,0.001,1.0\n2,0.7,,0.0005,1.1\n"
    )
    return run_dir


def noisy(target: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Predictions = target + Gaussian noise (smaller noise, better model)."""
    return target + rng.normal(0, noise, size=target.shape)
