"""Log finished run directories to MLflow from one process, idempotently.

The fold jobs log their own runs while they train (agiqa.track.live); this module, called by the
aggregation, logs every run from its result files again, so the store is complete even where a
job could not reach it, and adds what only the aggregation knows. Layout in the experiment:

- one parent run per (protocol, dataset, model, config hash, split-file hash, commit), tagged
  ``agiqa.key`` = those joined by ``/``, named "model · dataset · protocol", with
  ``test/<dim>/<metric>_mean|_std`` and ``n_splits``, the params its children share and, under
  ``report/``, the tables and figures of its dataset and the experiment-wide ones;
- one child run per split (``mlflow.parentRunId`` = parent, ``agiqa.key`` = parent key +
  ``/split{k}``, named "model · dataset · split k · protocol") with the flattened config as
  params (the protocol settings, and the provenance: commit, library versions, split-file and
  manifest sha256), ``test/...`` and ``val/...`` metrics (recomputed from the prediction files,
  as in the tables), the per-epoch history (step = epoch), the manifest as dataset input, and
  the result files and the checkpoint (``checkpoint/``) as artifacts.

Runs are found again by their ``agiqa.key`` tag, so logging the same directories twice (or after
the fold jobs logged them live) reuses the runs; a value already stored is not logged again, and
a new split file or code version never overwrites an older run. The experiment is tagged as model
training (``mlflow.experimentKind``).

Metric timestamps come from the result files' modification times. A recomputed metric that
differs from what the job logged (another logistic mapping) is logged one millisecond after the
job's value, so it is the run's latest. A child run created here starts ``seconds`` (the job's
wall time) before its ``metrics.json`` was written; its parent spans its children.

The store itself (lock, experiment, relative artifact URIs) is agiqa.track.store's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from agiqa.evaluate.metrics import METRICS, summarize
from agiqa.report.results import RunResult
from agiqa.track.live import find_run, log_manifest, log_params, log_result_files, run_tags
from agiqa.track.store import (
    child_name,
    ensure_experiment,
    flatten_config,
    has_artifact,
    local_artifact_dir,
    log_artifact,
    parent_name,
    quiet_loggers,
    relocate_artifacts,
    sqlite_path,
    store_lock,
    valid_metric_key,
)

_logger = logging.getLogger(__name__)

_BATCH_METRICS = 1000
#: Two values closer than this are the same number (a CSV round trip, another summation order).
_SAME = 1e-9
__all__ = ["flatten_config", "log_to_mlflow", "relocate_artifacts", "shared_params", "sqlite_path"]


def log_to_mlflow(
    runs: Sequence[RunResult],
    per_split: pd.DataFrame,
    tracking_uri: str,
    experiment: str = "agiqa",
    report: Mapping[str, Sequence[Path]] | None = None,
) -> dict[str, Any]:
    """Log runs as parent/child MLflow runs; safe to call again on the same inputs.

    Args:
        runs: The finished runs (agiqa.report.results.load_runs).
        per_split: Their recomputed metrics (agiqa.report.aggregate.collect_runs).
        tracking_uri: MLflow tracking URI, e.g. ``sqlite:////abs/results/mlflow/mlflow.db``.
            It is used by a dedicated client only; the global tracking URI is left alone.
        experiment: Experiment name, created on first use.
        report: Tables and figures for the parent runs: dataset -> files, and ``""`` -> files
            every parent carries.

    Returns:
        ``{"parents": n, "children": m, "experiment_id": id, "created": runs new this call}``.
    """
    groups = _group(runs)
    # The lock is taken per parent and its children, so live fold jobs of another experiment
    # in the same store wait seconds, not the whole aggregation.
    with store_lock(tracking_uri), quiet_loggers():
        relocate_artifacts(tracking_uri)
        client = MlflowClient(tracking_uri=tracking_uri)
        experiment_id = ensure_experiment(client, experiment, tracking_uri)
    logger = _RunLogger(client, tracking_uri, experiment_id, per_split, report or {})
    for key, members in groups.items():
        with store_lock(tracking_uri), quiet_loggers():
            parent_id = logger.log_parent(key, members)
            for run in members:
                logger.log_child(run, parent_id)
    return {
        "parents": len(groups),
        "children": len(runs),
        "experiment_id": experiment_id,
        "created": logger.created,
    }


def _group(runs: Sequence[RunResult]) -> dict[str, list[RunResult]]:
    groups: dict[str, list[RunResult]] = {}
    for run in runs:
        groups.setdefault(run.key, []).append(run)
    for key, members in groups.items():
        splits = [r.split for r in members]
        if len(set(splits)) != len(splits):
            raise ValueError(f"{key}: split reported twice in {[str(r.path) for r in members]}")
        members.sort(key=lambda r: r.split)
    return groups


def _read_config(run_dir: Path) -> dict[str, str]:
    path = run_dir / "config.yaml"
    if not path.exists():
        return {}
    loaded = yaml.safe_load(path.read_text()) or {}
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return flatten_config(loaded)


def shared_params(configs: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """The flattened params every child agrees on (all but the split): the parent's params."""
    if not configs:
        return {}
    first, rest = configs[0], configs[1:]
    return {k: v for k, v in first.items() if all(c.get(k) == v for c in rest)}


# --- run logging -----------------------------------------------------------------------------


def _mtime_ms(path: Path) -> int:
    return int(path.stat().st_mtime * 1000)


def _start_ms(run: RunResult) -> int:
    """When the job started: its metrics.json time minus its wall time (never negative)."""
    seconds = run.info.get("seconds", 0.0)
    seconds = seconds if math.isfinite(seconds) and seconds > 0 else 0.0
    return _mtime_ms(run.path / "metrics.json") - int(seconds * 1000)


def _score_metrics(prefix: str, scores: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    return {f"{prefix}/{dim}/{m}": v for dim, values in scores.items() for m, v in values.items()}


def _history_metrics(run_dir: Path, timestamp: int) -> list[Metric]:
    path = run_dir / "history.csv"
    if not path.exists():
        return []
    history = pd.read_csv(path)
    if "epoch" not in history.columns:
        _logger.warning("%s has no 'epoch' column; history not logged", path)
        return []
    metrics = []
    for column in history.columns.drop("epoch"):
        values = pd.to_numeric(history[column], errors="coerce")
        for epoch, value in zip(history["epoch"], values, strict=True):
            if pd.notna(value) and pd.notna(epoch):
                metrics.append(Metric(str(column), float(value), timestamp, int(epoch)))
    return metrics


class _RunLogger:
    """Finds or creates runs by their ``agiqa.key`` tag and logs into them."""

    def __init__(
        self,
        client: MlflowClient,
        tracking_uri: str,
        experiment_id: str,
        per_split: pd.DataFrame,
        report: Mapping[str, Sequence[Path]],
    ) -> None:
        self.client = client
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.per_split = per_split
        self.report = report
        self.created = 0
        self.manifests: dict[Path, pd.DataFrame] = {}

    def scores(self, run: RunResult, part: str) -> dict[str, dict[str, float]]:
        """dimension -> metric -> value of one run's part, from the recomputed metrics."""
        frame = self.per_split
        rows = frame[(frame["run_dir"] == str(run.path)) & (frame["part"] == part)]
        return {r["dimension"]: {m: float(r[m]) for m in METRICS} for _, r in rows.iterrows()}

    def find_or_create(
        self, key: str, name: str, tags: dict[str, str], start_time: int | None = None
    ) -> str:
        run_id = find_run(self.client, self.experiment_id, key)
        if run_id is not None:
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            if self.client.get_run(run_id).info.run_name != name:
                self.client.update_run(run_id, name=name)  # named by an older agiqa
            return run_id
        self.created += 1
        created = self.client.create_run(
            self.experiment_id, start_time=start_time, tags=tags, run_name=name
        )
        return created.info.run_id

    def log_parent(self, key: str, members: Sequence[RunResult]) -> str:
        first = members[0]
        start = min(_start_ms(r) for r in members)
        run_id = self.find_or_create(
            key, parent_name(first.protocol, first.dataset, first.model), _tags(first), start
        )
        timestamp = max(_mtime_ms(r.path / "metrics.json") for r in members)
        values: dict[str, float] = {"n_splits": float(len(members))}
        tests = [self.scores(r, "test") for r in members]
        dims = list(dict.fromkeys(dim for scores in tests for dim in scores))
        for dim in dims:
            for metric in METRICS:
                splits = [scores.get(dim, {}).get(metric, math.nan) for scores in tests]
                mean, std = summarize(splits)
                values[f"test/{dim}/{metric}_mean"] = mean
                values[f"test/{dim}/{metric}_std"] = std
        self._log_values(run_id, values, timestamp)
        log_params(self.client, run_id, shared_params([_read_config(r.path) for r in members]))
        run = self.client.get_run(run_id)
        for path in map(Path, [*self.report.get("", ()), *self.report.get(first.dataset, ())]):
            if path.is_file():
                folder = f"report/{path.parent.name}"
                log_artifact(self.client, self.tracking_uri, run, path, folder)
        self.client.set_terminated(run_id, end_time=timestamp)
        return run_id

    def log_child(self, run: RunResult, parent_id: str) -> str:
        key = f"{run.key}/split{run.split}"
        tags = {
            **_tags(run),
            "mlflow.parentRunId": parent_id,
            "agiqa.key": key,
            "agiqa.parent_key": run.key,
            "agiqa.split": str(run.split),
            "agiqa.run_dir": str(run.path),
        }
        name = child_name(run.protocol, run.dataset, run.model, run.split)
        existing = find_run(self.client, self.experiment_id, key)
        if existing is not None and self._stale(existing, run):
            # An older attempt of this split whose rerun could not reach the store: its
            # history and files are not this run's.
            self.client.delete_run(existing)
        run_id = self.find_or_create(key, name, tags, _start_ms(run))
        log_params(self.client, run_id, _read_config(run.path))
        timestamp = _mtime_ms(run.path / "metrics.json")
        values = {
            **_score_metrics("test", self.scores(run, "test")),
            **_score_metrics("val", self.scores(run, "val")),
        }
        values.update({f"info/{k}": v for k, v in run.info.items() if not math.isnan(v)})
        self._log_values(run_id, values, timestamp)
        history = run.path / "history.csv"
        if history.exists():
            self._log_history(run_id, _history_metrics(run.path, _mtime_ms(history)))
        self._log_manifest(run_id, run)
        stored = self.client.get_run(run_id)
        if not has_artifact(self.tracking_uri, stored, "metrics.json"):  # the job could not
            log_result_files(self.client, self.tracking_uri, stored, run.path)
        self.client.set_terminated(run_id, end_time=timestamp)
        return run_id

    def _stale(self, run_id: str, run: RunResult) -> bool:
        """The stored run carries another ``metrics.json`` than the run folder's."""
        uri = self.client.get_run(run_id).info.artifact_uri
        folder = local_artifact_dir(self.tracking_uri, uri)
        stored = None if folder is None else folder / "metrics.json"
        if stored is None or not stored.is_file():
            return False
        return stored.read_bytes() != (run.path / "metrics.json").read_bytes()

    def _log_values(self, run_id: str, values: Mapping[str, float], timestamp: int) -> None:
        """Step-0 metrics, except those whose latest stored value is already this one."""
        latest = self.client.get_run(run_id).data.metrics
        metrics = []
        for key, value in values.items():
            if key in latest and _same(latest[key], value):
                continue
            stamp = timestamp
            if key in latest:  # the job logged another value: this one must be the latest
                history = self.client.get_metric_history(run_id, key)
                stamp = max(timestamp, *(m.timestamp + 1 for m in history))
            metrics.append(Metric(key, value, stamp, 0))
        self._log_metrics(run_id, metrics)

    def _log_history(self, run_id: str, metrics: list[Metric]) -> None:
        """Per-epoch metrics of the steps not stored yet (the job logs them as it trains)."""
        stored: dict[str, set[int]] = {}
        for key in {m.key for m in metrics}:
            stored[key] = {m.step for m in self.client.get_metric_history(run_id, key)}
        self._log_metrics(run_id, [m for m in metrics if m.step not in stored[m.key]])

    def _log_manifest(self, run_id: str, run: RunResult) -> None:
        """The manifest as dataset input, where the job could not log it."""
        stored = self.client.get_run(run_id)
        if stored.inputs is not None and stored.inputs.dataset_inputs:
            return
        config_path = run.path / "config.yaml"  # absent from a run made elsewhere (tests)
        config = yaml.safe_load(config_path.read_text()) or {} if config_path.is_file() else {}
        manifest = Path(str((config.get("dataset") or {}).get("manifest", "")))
        if manifest.is_file():
            if manifest not in self.manifests:
                self.manifests[manifest] = pd.read_csv(manifest, dtype={"image": str})
            log_manifest(self.client, run_id, self.manifests[manifest], str(manifest), run.dataset)

    def _log_metrics(self, run_id: str, metrics: list[Metric]) -> None:
        valid = [m for m in metrics if valid_metric_key(m.key)]
        if len(valid) < len(metrics):
            _logger.warning(
                "run %s: skipped %d invalid metric keys", run_id, len(metrics) - len(valid)
            )
        for start in range(0, len(valid), _BATCH_METRICS):
            self.client.log_batch(run_id, metrics=valid[start : start + _BATCH_METRICS])


def _tags(run: RunResult) -> dict[str, str]:
    return run_tags(
        {
            "key": run.key,
            "protocol": run.protocol,
            "dataset": run.dataset,
            "model": run.model,
            "config_hash": run.config_hash,
            "split_sha256": run.split_sha256,
            "commit": run.commit,
        }
    )


def _same(stored: float, value: float) -> bool:
    if math.isnan(stored) or math.isnan(value):
        return math.isnan(stored) and math.isnan(value)
    return abs(stored - value) <= _SAME * max(1.0, abs(value))
