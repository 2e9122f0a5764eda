"""Collect finished training runs into tables, MLflow and the terminal.

A run directory ``results/runs/{protocol}/{dataset}/{model}/split{k}/`` holds ``metrics.json``
(written by the training job), ``config.yaml``, ``predictions.csv``, ``history.csv`` and maybe a
checkpoint. ``metrics.json`` is the source of truth for every number reported here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from agiqa.evaluate.metrics import METRICS, summarize

GROUP_KEYS = ("protocol", "dataset", "dimension", "model")
RUN_KEYS = ("protocol", "dataset", "model", "split", "dimension")
INFO_KEYS = ("n_train", "n_val", "n_test", "best_epoch", "epochs_run", "seconds")
_REQUIRED = ("dataset", "model", "protocol", "split", "test")

# metric name -> value, per dimension
Scores = dict[str, dict[str, float]]


@dataclass(frozen=True)
class RunResult:
    """The contents of one run directory's ``metrics.json``."""

    path: Path
    protocol: str
    dataset: str
    model: str
    split: int
    config_hash: str
    test: Scores
    val: Scores = field(default_factory=dict)
    info: dict[str, float] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The identity of the experiment this split belongs to (its MLflow parent)."""
        return f"{self.protocol}/{self.dataset}/{self.model}/{self.config_hash}"


def load_run(run_dir: Path) -> RunResult:
    """Read ``run_dir/metrics.json``; raise ValueError naming the file when it is incomplete."""
    path = Path(run_dir) / "metrics.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise ValueError(f"{path}: missing (did the training job finish?)") from error
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise ValueError(f"{path}: missing keys {missing}")
    return RunResult(
        path=Path(run_dir),
        protocol=str(raw["protocol"]),
        dataset=str(raw["dataset"]),
        model=str(raw["model"]),
        split=int(raw["split"]),
        config_hash=str(raw.get("config_hash", "")),
        test=_scores(raw["test"], path, "test"),
        val=_scores(raw.get("val") or {}, path, "val"),
        info={k: _number(raw.get(k)) for k in INFO_KEYS if k in raw},
    )


def _scores(block: Any, path: Path, name: str) -> Scores:
    if not isinstance(block, dict):
        raise ValueError(f"{path}: '{name}' must map dimension -> metrics")
    return {
        str(dim): {str(m): _number(v) for m, v in values.items()} for dim, values in block.items()
    }


def _number(value: Any) -> float:
    # JSON has no NaN; writers emit null (or Python's NaN literal) for an undefined metric.
    return math.nan if value is None else float(value)


def collect_runs(run_dirs: Iterable[Path]) -> pd.DataFrame:
    """One row per (protocol, dataset, model, split, dimension) with the test metrics as columns.

    Also carries ``config_hash`` and ``run_dir``. Rows keep the order of ``run_dirs`` so tables
    list models in the order the pipeline configured them.

    Raises:
        ValueError: When two run directories report the same (protocol, dataset, model, split).
    """
    rows = []
    for run in (load_run(Path(d)) for d in run_dirs):
        for dim, values in run.test.items():
            row: dict[str, Any] = {
                "protocol": run.protocol,
                "dataset": run.dataset,
                "model": run.model,
                "split": run.split,
                "dimension": dim,
                "config_hash": run.config_hash,
                "run_dir": str(run.path),
            }
            row.update({m: values.get(m, math.nan) for m in METRICS})
            rows.append(row)
    frame = pd.DataFrame(rows, columns=[*RUN_KEYS, "config_hash", "run_dir", *METRICS])
    duplicated = frame.duplicated(list(RUN_KEYS), keep=False)
    if duplicated.any():
        dirs = sorted(set(frame.loc[duplicated, "run_dir"]))
        raise ValueError(f"the same split is reported by more than one run directory: {dirs}")
    return frame


def summarize_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std (ddof=1) over splits per (protocol, dataset, dimension, model).

    Columns: the group keys, ``n_splits``, then ``<metric>_mean`` and ``<metric>_std`` for every
    metric. A single split gets std 0.0; a NaN in any split makes that metric's mean and std NaN.
    """
    rows = []
    for keys, group in df.groupby(list(GROUP_KEYS), sort=False):
        row: dict[str, Any] = dict(zip(GROUP_KEYS, keys, strict=True))
        row["n_splits"] = int(group["split"].nunique())
        for metric in METRICS:
            row[f"{metric}_mean"], row[f"{metric}_std"] = summarize(group[metric].tolist())
        rows.append(row)
    columns = [*GROUP_KEYS, "n_splits"] + [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
    return pd.DataFrame(rows, columns=columns)


def aggregate(
    run_dirs: Sequence[Path],
    tables_dir: Path,
    tracking_uri: str,
    experiment: str,
    metrics: Sequence[str] = ("srcc", "plcc_logistic"),
    precision: int = 3,
) -> None:
    """Collect, summarize, write the tables, log everything to MLflow, print the Markdown table."""
    from agiqa.report.tables import render_tables
    from agiqa.track.mlflow_log import log_to_mlflow  # lazy: importing mlflow takes seconds

    summary = summarize_runs(collect_runs(run_dirs))
    paths = render_tables(summary, Path(tables_dir), metrics=metrics, precision=precision)
    logged = log_to_mlflow(run_dirs, tracking_uri, experiment)
    print(paths["md"].read_text())
    print(
        f"tables: {paths['tex']}, {paths['md']}, {paths['csv']}\n"
        f"mlflow: {logged['parents']} parent and {logged['children']} child runs in experiment "
        f"'{experiment}' at {tracking_uri}"
    )
