"""The MLflow store both writers share: the fold jobs' live runs (agiqa.track.live) and the
aggregation (agiqa.track.mlflow_log).

**One writer at a time.** Parallel fold jobs write to one SQLite database, and SQLite with many
writers gives "database is locked" errors, while a fresh store's migrations must never run twice
at once (``table _alembic_tmp_... already exists`` breaks it for good). Every write holds an
inter-process file lock beside the database (``<db>.lock``) for as long as one batch takes.

**Artifacts relative to the store.** MLflow would record absolute ``file://`` paths, so a copied
or moved project would serve the old folder's files. Experiments are created with the artifact
location ``mlflow-artifacts:/<experiment>``: the path after the scheme is relative to the artifact
root beside the database (``artifacts/``), which the tracking server is told with
``--artifacts-destination``::

    mlflow server --backend-store-uri sqlite:///results/mlflow/mlflow.db \\
        --artifacts-destination results/mlflow/artifacts --workers 1

(``make mlflow-ui``). agiqa writes the artifact files into that folder itself (a client talking
to the database directly cannot upload to ``mlflow-artifacts:`` URIs); ``local_artifact_dir``
gives a run's folder. Stores written by older agiqa versions, with absolute ``file://`` URIs, are
rewritten to the relative form on first use (``relocate_artifacts``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from filelock import FileLock

from agiqa.fileops import place

_logger = logging.getLogger(__name__)

#: Tag value of the experiment kind MLflow's UI shows as model training (not GenAI).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
#: Experiment tag: the artifact root, relative to the database's folder.
ARTIFACT_ROOT_TAG = "agiqa.artifact_root"
PROXY_SCHEME = "mlflow-artifacts"
PARAM_VALUE_LIMIT = 6000
PARAM_KEY_LIMIT = 250
VALID_KEY = re.compile(r"^[\w\-./ :]+$")
_NOISY_LOGGERS = ("alembic", "mlflow.store.db.utils", "mlflow.store.sqlalchemy_store")
#: Files larger than this are hard-linked into the artifact store when the file system allows.
LINK_ABOVE_BYTES = 16 << 20


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


@contextmanager
def store_lock(tracking_uri: str, timeout: float = 600) -> Iterator[None]:
    """Hold ``<db>.lock`` beside a sqlite store (no lock for other backends).

    Raises:
        filelock.Timeout: Another writer held the lock for ``timeout`` seconds.
    """
    db = sqlite_path(tracking_uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(db) + ".lock", timeout=timeout):
        yield


@contextmanager
def quiet_loggers() -> Iterator[None]:
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


def experiment_location(name: str) -> str:
    """The artifact location of a new experiment: relative to the store's artifact root."""
    return f"{PROXY_SCHEME}:/{re.sub(r'[^A-Za-z0-9_.-]+', '_', name).strip('._') or 'default'}"


def ensure_experiment(client: Any, name: str, tracking_uri: str) -> str:
    """Get or create (or restore, if deleted) the experiment; tolerate a concurrent creator.

    In a SQLite store a new experiment's artifacts live under ``artifacts/`` beside the database,
    with relative ``mlflow-artifacts:`` URIs, and the experiment is tagged with that folder
    relative to the database's. Every experiment is tagged as model training.
    """
    from mlflow.exceptions import MlflowException

    database, root = sqlite_path(tracking_uri), default_artifact_root(tracking_uri)
    found = client.get_experiment_by_name(name)
    if found is None:
        location = None
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)
            location = experiment_location(name)
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
    if database is not None and root is not None:
        relative = os.path.relpath(root.resolve(), database.resolve().parent)
        client.set_experiment_tag(experiment_id, ARTIFACT_ROOT_TAG, Path(relative).as_posix())
    return experiment_id


def relocate_artifacts(tracking_uri: str) -> int:
    """Rewrite an older store's absolute ``file://`` artifact URIs into the relative form.

    For each experiment tagged with ``agiqa.artifact_root`` whose location is still a
    ``file://`` URI (written by agiqa before the relative form), the experiment's location and
    its runs' artifact URIs under it become ``mlflow-artifacts:/...`` with the same relative
    path, so the store serves its own files wherever it is moved. Returns the number of
    experiments rewritten.
    """
    db = sqlite_path(tracking_uri)
    if db is None or not db.is_file():
        return 0
    moved = 0
    with sqlite3.connect(db) as connection:
        tagged = connection.execute(
            "SELECT e.experiment_id, e.artifact_location FROM experiments e "
            "JOIN experiment_tags t ON t.experiment_id = e.experiment_id WHERE t.key = ?",
            (ARTIFACT_ROOT_TAG,),
        ).fetchall()
        for experiment_id, current in tagged:
            if not str(current).startswith("file:"):
                continue
            _rewrite(connection, experiment_id, str(current).rstrip("/"), f"{PROXY_SCHEME}:")
            _logger.info("artifact URIs of experiment %s made relative", experiment_id)
            moved += 1
    return moved


def _rewrite(connection: sqlite3.Connection, experiment_id: int, old: str, new: str) -> None:
    connection.execute(
        "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
        (new + "/", experiment_id),
    )
    # Only URIs under the old root: a run given another location by hand keeps it.
    connection.execute(
        "UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) "
        "WHERE experiment_id = ? AND substr(artifact_uri, 1, ?) = ?",
        (new, len(old) + 1, experiment_id, len(old) + 1, old + "/"),
    )


def local_artifact_dir(tracking_uri: str, artifact_uri: str) -> Path | None:
    """The folder holding a run's artifacts: ``mlflow-artifacts:/x`` -> ``<artifact root>/x``
    (``file://`` URIs as they are); None for a remote store."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme == PROXY_SCHEME:
        root = default_artifact_root(tracking_uri)
        return None if root is None else root / parsed.path.lstrip("/")
    if parsed.scheme == "file":
        from mlflow.utils.file_utils import local_file_uri_to_path

        return Path(local_file_uri_to_path(artifact_uri))
    return None


def log_artifact(
    client: Any, tracking_uri: str, run: Any, path: Path, artifact_path: str | None = None
) -> None:
    """Put ``path`` (a file or a folder) among a run's artifacts, replacing an older copy.

    Large files are hard-linked where the file system allows (a checkpoint is not stored twice);
    a remote store gets them through MLflow's client.
    """
    folder = local_artifact_dir(tracking_uri, run.info.artifact_uri)
    if folder is None:
        if Path(path).is_dir():
            client.log_artifacts(run.info.run_id, str(path), artifact_path)
        else:
            client.log_artifact(run.info.run_id, str(path), artifact_path)
        return
    target = folder / (artifact_path or "") / Path(path).name
    if Path(path).is_dir():
        for member in sorted(Path(path).rglob("*")):
            if member.is_file():
                place(member, target / member.relative_to(path), LINK_ABOVE_BYTES)
    else:
        place(Path(path), target, LINK_ABOVE_BYTES)


def has_artifact(tracking_uri: str, run: Any, name: str) -> bool:
    """Whether a run's artifacts hold ``name`` (a relative path); False for a remote store."""
    folder = local_artifact_dir(tracking_uri, run.info.artifact_uri)
    return folder is not None and (folder / name).exists()


# --- names, tags and params ------------------------------------------------------------------


def parent_name(protocol: str, dataset: str, model: str) -> str:
    """What the run list shows for a configuration: the model first, then the dataset."""
    return f"{model} · {dataset} · {protocol}"


def child_name(protocol: str, dataset: str, model: str, split: int) -> str:
    return f"{model} · {dataset} · split {split} · {protocol}"


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> ``{"a.b.c": "value"}`` with MLflow-safe keys and string values.

    Non-string values are JSON-encoded (``true``, ``null``, ``[1, 2]``); values longer than
    6000 characters are truncated; keys MLflow would reject and keys that collide after
    flattening (``{"a": {"b": 1}, "a.b": 2}``) are skipped with a warning (first one wins).
    """
    flat: dict[str, str] = {}
    for key, value in _walk(config, prefix):
        if len(key) > PARAM_KEY_LIMIT or not VALID_KEY.match(key):
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


def valid_metric_key(key: str) -> bool:
    return len(key) <= PARAM_KEY_LIMIT and bool(VALID_KEY.match(key))
