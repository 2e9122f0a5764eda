"""Log finished run directories to MLflow from one process, idempotently.

Training jobs never talk to MLflow (parallel writers and SQLite do not mix); this module reads their
result files afterwards. Layout in the experiment:

- one parent run per (protocol, dataset, model, config hash, split-file hash, commit), tagged
  ``agiqa.key`` = those joined by ``/``, with ``test/<dim>/<metric>_mean|_std`` and ``n_splits``;
- one child run per split (``mlflow.parentRunId`` = parent, ``agiqa.key`` = parent key +
  ``/split{k}``) with the flattened config as params (the protocol settings, and the provenance:
  commit, library versions, split-file and manifest sha256), ``test/...`` and ``val/...`` metrics
  (recomputed from the prediction files, as in the tables), the per-epoch history (step = epoch)
  and the small result files as artifacts.

Parent runs also carry the params their children share (everything but the split) and, under
``report/``, the tables and figures of their dataset and the experiment-wide ones. The experiment
is tagged as model training (``mlflow.experimentKind``).

Runs are found again by their ``agiqa.key`` tag, so logging the same directories twice reuses the
runs, and a new split file or code version never overwrites an older run.

Artifact locations are relocatable: MLflow stores absolute ``file://`` URIs, so an experiment
records its artifact root relative to the database (tag ``agiqa.artifact_root``), and every call
first rewrites the stored URIs when the store has been moved or copied (``relocate_artifacts``).

Metric timestamps come from the result files' modification times, which makes re-logged points
identical to the stored ones (MLflow drops exact duplicates). A child run starts ``seconds`` (the
job's wall time) before its ``metrics.json`` was written; its parent spans its children.

Creating a fresh sqlite store runs database migrations that two processes must not run at once
(``table _alembic_tmp_... already exists`` breaks the store for good), so every call holds an
inter-process file lock beside the database.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from filelock import FileLock
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from agiqa.evaluate.metrics import METRICS, summarize
from agiqa.report.results import RunResult

_logger = logging.getLogger(__name__)

#: Tag value of the experiment kind MLflow's UI shows as model training (not GenAI).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
ARTIFACT_ROOT_TAG = "agiqa.artifact_root"
ARTIFACTS = ("metrics.json", "config.yaml", "predictions.csv", "val_predictions.csv", "history.csv")
PARAM_VALUE_LIMIT = 6000
PARAM_KEY_LIMIT = 250
_BATCH_PARAMS = 100
_BATCH_METRICS = 1000
_VALID_KEY = re.compile(r"^[\w\-./ :]+$")
_NOISY_LOGGERS = ("alembic", "mlflow.store.db.utils", "mlflow.store.sqlalchemy_store")


def log_to_mlflow(
    runs: Sequence[RunResult],
    per_split: pd.DataFrame,
    tracking_uri: str,
    experiment: str = "agiqa",
    artifact_root: Path | None = None,
    report: Mapping[str, Sequence[Path]] | None = None,
) -> dict[str, Any]:
    """Log runs as parent/child MLflow runs; safe to call again on the same inputs.

    Args:
        runs: The finished runs (agiqa.report.aggregate.load_runs).
        per_split: Their recomputed metrics (agiqa.report.aggregate.collect_runs).
        tracking_uri: MLflow tracking URI, e.g. ``sqlite:////abs/results/mlflow/mlflow.db``.
            It is used by a dedicated client only; the global tracking URI is left alone.
        experiment: Experiment name, created on first use.
        artifact_root: Artifact location for a new experiment. Defaults to ``artifacts/`` beside a
            SQLite database file (MLflow's default for other backends).
        report: Tables and figures for the parent runs: dataset -> files, and ``""`` -> files
            every parent carries.

    Returns:
        ``{"parents": n, "children": m, "experiment_id": id, "created": runs new this call}``.
    """
    with _store_lock(tracking_uri), _quiet_loggers():
        relocate_artifacts(tracking_uri)
        client = MlflowClient(tracking_uri=tracking_uri)
        root = artifact_root if artifact_root is not None else default_artifact_root(tracking_uri)
        experiment_id = ensure_experiment(client, experiment, root, sqlite_path(tracking_uri))
        logger = _RunLogger(client, experiment_id, per_split, report or {})
        groups = _group(runs)
        for key, members in groups.items():
            parent_id = logger.log_parent(key, members)
            for run in members:
                logger.log_child(run, parent_id)
    return {
        "parents": len(groups),
        "children": len(runs),
        "experiment_id": experiment_id,
        "created": logger.created,
    }


@contextmanager
def _store_lock(tracking_uri: str) -> Iterator[None]:
    """Hold ``<db>.lock`` beside a sqlite store (no lock for other backends)."""
    db = sqlite_path(tracking_uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(db) + ".lock", timeout=600):
        yield


@contextmanager
def _quiet_loggers() -> Iterator[None]:
    """Hide database-migration INFO chatter for the duration of the call, then restore levels."""
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


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


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (four slashes for an absolute path), else None."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    return Path(tracking_uri[len(prefix) :].split("?", 1)[0])


def default_artifact_root(tracking_uri: str) -> Path | None:
    """``artifacts/`` beside a SQLite database (created with the folder of the database)."""
    db = sqlite_path(tracking_uri)
    if db is None:
        return None
    db.parent.mkdir(parents=True, exist_ok=True)
    return db.parent / "artifacts"


def ensure_experiment(
    client: MlflowClient, name: str, artifact_root: Path | None, database: Path | None = None
) -> str:
    """Get or create (or restore, if deleted) the experiment; tolerate a concurrent creator.

    The experiment is tagged as model training, and, with a SQLite ``database``, with its
    artifact root relative to the database's folder (what ``relocate_artifacts`` reads).
    """
    found = client.get_experiment_by_name(name)
    if found is None:
        location = None
        if artifact_root is not None:
            Path(artifact_root).mkdir(parents=True, exist_ok=True)
            location = Path(artifact_root).resolve().as_uri()
        try:
            experiment_id = client.create_experiment(name, artifact_location=location)
        except MlflowException:
            found = client.get_experiment_by_name(name)  # another process created it first
            if found is None:
                raise
            experiment_id = found.experiment_id
    else:
        experiment_id = found.experiment_id
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(experiment_id)
    client.set_experiment_tag(experiment_id, *EXPERIMENT_KIND)
    if database is not None and artifact_root is not None:
        relative = os.path.relpath(Path(artifact_root).resolve(), database.resolve().parent)
        client.set_experiment_tag(experiment_id, ARTIFACT_ROOT_TAG, Path(relative).as_posix())
    return experiment_id


def relocate_artifacts(tracking_uri: str) -> int:
    """Point a moved or copied SQLite store's artifact URIs at the artifacts beside it.

    MLflow keeps absolute ``file://`` URIs. For each experiment tagged with ``agiqa.artifact_root``
    (its root relative to the database folder), the experiment's location and its runs' artifact
    URIs are rewritten when they point elsewhere. Returns the number of experiments rewritten.
    """
    db = sqlite_path(tracking_uri)
    if db is None or not db.is_file():
        return 0
    moved = 0
    with sqlite3.connect(db) as connection:
        tagged = connection.execute(
            "SELECT e.experiment_id, e.artifact_location, t.value FROM experiments e "
            "JOIN experiment_tags t ON t.experiment_id = e.experiment_id WHERE t.key = ?",
            (ARTIFACT_ROOT_TAG,),
        ).fetchall()
        for experiment_id, current, relative in tagged:
            expected = (db.resolve().parent / relative).resolve().as_uri()
            if current == expected:
                continue
            _rewrite(connection, experiment_id, current, expected)
            _logger.info("artifact root of experiment %s moved to %s", experiment_id, expected)
            moved += 1
    return moved


def _rewrite(connection: sqlite3.Connection, experiment_id: int, old: str, new: str) -> None:
    connection.execute(
        "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", (new, experiment_id)
    )
    # Only URIs under the old root: a run given another location by hand keeps it.
    connection.execute(
        "UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) "
        "WHERE experiment_id = ? AND substr(artifact_uri, 1, ?) = ?",
        (new, len(old) + 1, experiment_id, len(old), old),
    )


# --- config flattening -----------------------------------------------------------------------


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> ``{"a.b.c": "value"}`` with MLflow-safe keys and string values.

    Non-string values are JSON-encoded (``true``, ``null``, ``[1, 2]``); values longer than
    6000 characters are truncated; keys MLflow would reject and keys that collide after
    flattening (``{"a": {"b": 1}, "a.b": 2}``) are skipped with a warning (first one wins).
    """
    flat: dict[str, str] = {}
    for key, value in _walk(config, prefix):
        if len(key) > PARAM_KEY_LIMIT or not _VALID_KEY.match(key):
            _logger.warning("skipping config key '%s': not a valid MLflow param key", key[:80])
            continue
        if key in flat:
            _logger.warning("skipping config key '%s': clashes with an earlier key", key)
            continue
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        flat[key] = text[:PARAM_VALUE_LIMIT]
    return flat


def _walk(node: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _walk(value, f"{name}.")
        else:
            yield name, value


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
        experiment_id: str,
        per_split: pd.DataFrame,
        report: Mapping[str, Sequence[Path]],
    ) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.per_split = per_split
        self.report = report
        self.created = 0

    def scores(self, run: RunResult, part: str) -> dict[str, dict[str, float]]:
        """dimension -> metric -> value of one run's part, from the recomputed metrics."""
        frame = self.per_split
        rows = frame[(frame["run_dir"] == str(run.path)) & (frame["part"] == part)]
        return {r["dimension"]: {m: float(r[m]) for m in METRICS} for _, r in rows.iterrows()}

    def find_or_create(
        self, key: str, name: str, tags: dict[str, str], start_time: int | None = None
    ) -> str:
        if "'" in key:
            raise ValueError(f"run key {key!r} must not contain a single quote")
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`agiqa.key` = '{key}'",
            order_by=["attributes.start_time ASC"],
        )
        if len(found) > 1:
            _logger.warning("%d runs carry agiqa.key=%s; reusing the oldest", len(found), key)
        if found:
            run_id = found[0].info.run_id
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            return run_id
        self.created += 1
        created = self.client.create_run(
            self.experiment_id, start_time=start_time, tags=tags, run_name=name
        )
        return created.info.run_id

    def log_parent(self, key: str, members: Sequence[RunResult]) -> str:
        first = members[0]
        tags = {
            "agiqa.key": key,
            "agiqa.protocol": first.protocol,
            "agiqa.dataset": first.dataset,
            "agiqa.model": first.model,
            "agiqa.config_hash": first.config_hash,
            "agiqa.split_sha256": first.split_sha256,
            "agiqa.commit": first.commit,
        }
        start = min(_start_ms(r) for r in members)
        run_id = self.find_or_create(
            key, f"{first.protocol}/{first.dataset}/{first.model}", tags, start
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
        self._log_metrics(run_id, [Metric(k, v, timestamp, 0) for k, v in values.items()])
        self._log_params(run_id, shared_params([_read_config(r.path) for r in members]))
        for path in [*self.report.get("", ()), *self.report.get(first.dataset, ())]:
            if Path(path).is_file():
                self.client.log_artifact(run_id, str(path), f"report/{Path(path).parent.name}")
        self.client.set_terminated(run_id, end_time=timestamp)
        return run_id

    def log_child(self, run: RunResult, parent_id: str) -> str:
        key = f"{run.key}/split{run.split}"
        tags = {
            "mlflow.parentRunId": parent_id,
            "agiqa.key": key,
            "agiqa.parent_key": run.key,
            "agiqa.split": str(run.split),
            "agiqa.protocol": run.protocol,
            "agiqa.dataset": run.dataset,
            "agiqa.model": run.model,
            "agiqa.config_hash": run.config_hash,
            "agiqa.split_sha256": run.split_sha256,
            "agiqa.commit": run.commit,
            "agiqa.run_dir": str(run.path),
        }
        run_id = self.find_or_create(
            key, f"{run.protocol}/{run.dataset}/{run.model}/split{run.split}", tags, _start_ms(run)
        )
        self._log_params(run_id, _read_config(run.path))
        timestamp = _mtime_ms(run.path / "metrics.json")
        values = {
            **_score_metrics("test", self.scores(run, "test")),
            **_score_metrics("val", self.scores(run, "val")),
        }
        values.update({f"info/{k}": v for k, v in run.info.items() if not math.isnan(v)})
        metrics = [Metric(k, v, timestamp, 0) for k, v in values.items()]
        history = run.path / "history.csv"
        if history.exists():
            metrics += _history_metrics(run.path, _mtime_ms(history))
        self._log_metrics(run_id, metrics)
        for name in ARTIFACTS:
            if (run.path / name).exists():
                self.client.log_artifact(run_id, str(run.path / name))
        self.client.set_terminated(run_id, end_time=timestamp)
        return run_id

    def _log_params(self, run_id: str, params: dict[str, str]) -> None:
        # Params are immutable: skip those already stored and warn about changed values.
        existing = self.client.get_run(run_id).data.params
        changed = [k for k, v in params.items() if k in existing and existing[k] != v]
        if changed:
            _logger.warning("run %s: params %s changed; keeping stored values", run_id, changed)
        new = [Param(k, v) for k, v in params.items() if k not in existing]
        for start in range(0, len(new), _BATCH_PARAMS):
            self.client.log_batch(run_id, params=new[start : start + _BATCH_PARAMS])

    def _log_metrics(self, run_id: str, metrics: list[Metric]) -> None:
        valid = [m for m in metrics if len(m.key) <= PARAM_KEY_LIMIT and _VALID_KEY.match(m.key)]
        if len(valid) < len(metrics):
            _logger.warning(
                "run %s: skipped %d invalid metric keys", run_id, len(metrics) - len(valid)
            )
        for start in range(0, len(valid), _BATCH_METRICS):
            self.client.log_batch(run_id, metrics=valid[start : start + _BATCH_METRICS])
