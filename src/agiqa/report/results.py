"""What the report layers share: the report settings and one finished run's results.

``RunResult`` is one fold job's output folder (``metrics.json`` and the prediction files) and
``ReportSettings`` the config's ``report`` section. The aggregation (agiqa.report.aggregate) and
every module it calls (tables, comparisons, figures, the paper, MLflow logging) import them from
here, so the report modules import downwards only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from agiqa.data.splits import Protocol
from agiqa.evaluate.significance import SplitScores

INFO_KEYS = ("n_train", "n_val", "n_test", "best_epoch", "epochs_run", "seconds")
PARTS = ("test", "val")
PREDICTION_FILES = {
    "test": "predictions.csv",
    "val": "val_predictions.csv",
    "best_plcc": "predictions_best_plcc.csv",
}
#: Metrics taken from the best-PLCC epoch's test predictions when a run selected PLCC separately.
SEPARATE_PLCC_METRICS = ("plcc", "plcc_logistic")
_REQUIRED = ("dataset", "model", "protocol", "split", "protocol_settings", "provenance")


def run_key(
    protocol: str, dataset: str, model: str, config_hash: str, split_sha256: str, commit: str
) -> str:
    """The MLflow parent key of a configuration's splits (tag ``agiqa.key``).

    The fold job (agiqa.track.live) and the aggregation compute the same key, so they log into
    the same runs; a new split file, config or code version never reuses an older run.
    """
    return "/".join((protocol, dataset, model, config_hash, split_sha256[:12], commit[:12]))


@dataclass(frozen=True)
class ReportSettings:
    """The config's ``report`` section: how numbers are computed and marked."""

    precision: int = 3
    logistic: str = "logistic4"
    alpha: float = 0.05
    #: The test behind best/tie marks: ``corrected_t`` (counts training variance) or
    #: ``bootstrap`` (over prompt groups; treats the trained models as fixed).
    significance_test: str = "corrected_t"
    resamples: int = 2000
    seed: int = 0
    reference_protocol: str | None = None
    #: Metrics shown in the tables (the CSV files carry every metric).
    metrics: tuple[str, ...] = ("srcc", "plcc", "plcc_logistic")
    #: Draw the figures (seconds; off for the quickest runs).
    figures: bool = True
    #: Compile the paper PDF as part of the workflow's default target.
    pdf: bool = False
    #: Dimension (or protocol) identifier -> the name readers see in the paper's outputs.
    display_names: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: dict | None) -> ReportSettings:
        config = dict(config or {})
        unknown = set(config) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown report settings {sorted(unknown)}")
        if "metrics" in config:
            config["metrics"] = tuple(config["metrics"])
        if "display_names" in config:
            config["display_names"] = {str(k): str(v) for k, v in config["display_names"].items()}
        return cls(**config)


@dataclass(frozen=True)
class RunResult:
    """One finished split: its identity from ``metrics.json`` and access to its predictions."""

    path: Path
    protocol: str
    dataset: str
    model: str
    split: int
    config_hash: str
    protocol_settings: dict
    provenance: dict
    info: dict[str, float] = field(default_factory=dict)
    _frames: dict[str, pd.DataFrame] = field(default_factory=dict, compare=False, repr=False)

    @property
    def split_sha256(self) -> str:
        return str(self.provenance.get("split_sha256", ""))

    @property
    def commit(self) -> str:
        return str(self.provenance.get("commit", "unknown"))

    @property
    def key(self) -> str:
        """The identity of the experiment this split belongs to (its MLflow parent)."""
        identity = (self.protocol, self.dataset, self.model, self.config_hash)
        return run_key(*identity, self.split_sha256, self.commit)

    @cached_property
    def protocol_spec(self) -> Protocol:
        return Protocol.from_config(self.protocol_settings)

    def predictions(self, part: str) -> pd.DataFrame:
        if part not in self._frames:
            path = self.path / PREDICTION_FILES[part]
            try:
                self._frames[part] = pd.read_csv(path, dtype={"image": str})
            except FileNotFoundError as error:
                raise ValueError(f"{path}: missing (did the training job finish?)") from error
        return self._frames[part]

    def dimensions(self) -> list[str]:
        columns = self.predictions("test").columns
        return [c.removeprefix("pred_") for c in columns if c.startswith("pred_")]

    def scores(self, part: str, dimension: str) -> SplitScores | None:
        """Predictions and targets of a part, sorted by image; None when the part is empty."""
        frame = self.predictions(part).sort_values("image", kind="stable")
        if frame.empty:
            return None
        pred_column, target_column = f"pred_{dimension}", f"target_{dimension}"
        for column in (pred_column, target_column):
            if column not in frame.columns:
                raise ValueError(f"{self.path / PREDICTION_FILES[part]}: no column '{column}'")
        return SplitScores(
            self.split,
            frame["image"].to_numpy(),
            frame[pred_column].to_numpy(float),
            frame[target_column].to_numpy(float),
        )


def metric_part(run: RunResult, part: str, metric: str) -> str:
    """The prediction part ``metric`` of ``part`` is computed from: ``best_plcc`` for the PLCC
    metrics of a run that selected PLCC separately (SCVA-AGIQA's rule), else ``part``."""
    if part != "test" or metric not in SEPARATE_PLCC_METRICS:
        return part
    separate = "best_plcc" in run._frames or (run.path / PREDICTION_FILES["best_plcc"]).is_file()
    return "best_plcc" if separate else part


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
        raise ValueError(f"{path}: missing keys {missing} (written by an older agiqa: rerun it)")
    return RunResult(
        path=Path(run_dir),
        protocol=str(raw["protocol"]),
        dataset=str(raw["dataset"]),
        model=str(raw["model"]),
        split=int(raw["split"]),
        config_hash=str(raw.get("config_hash", "")),
        protocol_settings=dict(raw["protocol_settings"]),
        provenance=dict(raw["provenance"]),
        info={k: _number(raw.get(k)) for k in INFO_KEYS if k in raw},
    )


def _number(value: Any) -> float:
    # JSON has no NaN; writers emit null (or Python's NaN literal) for an undefined value.
    return math.nan if value is None else float(value)


def load_runs(run_dirs: Iterable[Path]) -> list[RunResult]:
    """The runs in input order; two directories reporting the same split are refused."""
    runs = [load_run(Path(d)) for d in dict.fromkeys(Path(d) for d in run_dirs)]
    seen: dict[tuple, Path] = {}
    for run in runs:
        identity = (run.protocol, run.dataset, run.model, run.split)
        if identity in seen:
            raise ValueError(
                "the same split is reported by more than one run directory: "
                f"{sorted([str(seen[identity]), str(run.path)])}"
            )
        seen[identity] = run.path
    return runs
