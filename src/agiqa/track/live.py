"""A fold job's MLflow run, logged while the job runs, so the UI shows training as it happens.

At the start the job finds or creates its parent run (one per model x dataset x protocol
configuration, tag ``agiqa.key``, as the aggregation computes it) and creates its child run
(``agiqa.key`` + ``/split<k>``) with the resolved config as params and the dataset's manifest as
a dataset input. Every epoch adds the history row as metrics (step = epoch); at the end come the
job's test and validation metrics, the result files and the checkpoint (``checkpoint/``, with the
weight files bundled beside it) as artifacts, and the status (FINISHED, FAILED, or KILLED when a
scheduler preempts the job, which a rerun resumes in the same run). A rerun that starts afresh
replaces the older run of its split (deleted, not duplicated).

**MLflow never fails a fold job.** Writes run on a background thread, one batch at a time under
the store's lock (agiqa.track.store). A write that cannot get the lock within ``lock_timeout``
seconds, or that fails (store locked, unreachable, full disk), stays queued and is tried again
with the next one; at the end the job waits at most ``final_wait`` seconds, then logs a warning
naming what was left out. The result files stay the truth: the aggregation logs every run from
them again, filling in whatever the job could not write, and adds nothing twice.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agiqa.train.fold import FoldTrainer

log = logging.getLogger(__name__)

#: The small result files a child run carries; the checkpoint goes under ``checkpoint/``.
RESULT_FILES = (
    "metrics.json",
    "config.yaml",
    "predictions.csv",
    "val_predictions.csv",
    "history.csv",
)
CHECKPOINT_DIR = "checkpoint"
INFO_KEYS = ("n_train", "n_val", "n_test", "best_epoch", "epochs_run", "seconds")
_BATCH_PARAMS = 100


@dataclass(frozen=True)
class Tracking:
    """Where and how a fold job logs its run."""

    uri: str
    experiment: str
    #: Seconds a batch of writes waits for the store's lock before it is put off.
    lock_timeout: float = 10.0
    #: Seconds the job waits at its end for writes still queued.
    final_wait: float = 120.0
    #: Seconds between two tries of a write that failed.
    retry_every: float = 5.0


def now_ms() -> int:
    return int(time.time() * 1000)


def job_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``test/<dim>/<metric>``, ``val/...`` and ``info/...`` of a fold job's ``metrics.json``."""
    values: dict[str, float] = {}
    for part in ("test", "val"):
        for dim, scores in (metrics.get(part) or {}).items():
            for name, value in scores.items():
                values[f"{part}/{dim}/{name}"] = float("nan") if value is None else float(value)
    for key in INFO_KEYS:
        value = metrics.get(key)
        if value is not None and math.isfinite(float(value)):
            values[f"info/{key}"] = float(value)
    return values


class LiveRun:
    """Logs one fold job into MLflow from a background thread; every method returns at once."""

    def __init__(self, tracking: Tracking) -> None:
        self.tracking = tracking
        self.run_id: str | None = None
        self._pending: deque[tuple[str, Callable[[Any], None]]] = deque()
        self._guard = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._failure: str | None = None
        self._warned = False

    # --- what the fold job calls -----------------------------------------------------------

    def start(self, trainer: FoldTrainer, config: dict) -> None:
        """Queue the run's creation: parent and child, params, the manifest as dataset input."""
        from agiqa.provenance import file_sha256
        from agiqa.report.results import run_key

        job = trainer.job
        provenance = config.get("provenance") or {}
        key = run_key(
            job.protocol,
            job.dataset,
            job.model_name,
            job.config_hash(),
            str(provenance.get("split_sha256") or file_sha256(job.splits)),
            str(provenance.get("commit", "unknown")),
        )
        identity = {
            "key": key,
            "protocol": job.protocol,
            "dataset": job.dataset,
            "model": job.model_name,
            "split": job.split,
            "config_hash": job.config_hash(),
            "split_sha256": str(provenance.get("split_sha256", "")),
            "commit": str(provenance.get("commit", "unknown")),
            "run_dir": job.out_dir,
        }
        resuming = trainer.resume_path.exists()
        manifest = (trainer.manifest.frame, job.manifest, job.dataset)
        started = now_ms()

        def open_run(client: Any) -> None:
            self._open(client, identity, config, manifest, resuming, started)

        self._submit("start", open_run)

    def epoch(self, row: Mapping[str, Any]) -> None:
        """Queue one history row: every column but ``epoch`` as a metric at step = epoch."""
        step, stamp = int(row["epoch"]), now_ms()
        metrics = [
            (str(k), float(v), stamp, step)
            for k, v in row.items()
            if k != "epoch" and v is not None and math.isfinite(float(v))
        ]
        self._submit(f"epoch {step}", lambda client: self._metrics(client, metrics))

    def finish(self, metrics: Mapping[str, Any], out_dir: Path) -> None:
        """Queue the final metrics, the result files and checkpoint, FINISHED; then wait."""
        stamp = now_ms()
        final = [(k, v, stamp, 0) for k, v in job_metrics(metrics).items()]
        self._submit("final metrics", lambda client: self._metrics(client, final))
        self._submit("artifacts", lambda client: self._artifacts(client, Path(out_dir)))
        self._submit("status", lambda client: self._terminate(client, "FINISHED"))
        self.close()

    def fail(self, status: str) -> None:
        """Queue FAILED (or KILLED for a preempted job) and wait for the queue."""
        self._submit("status", lambda client: self._terminate(client, status))
        self.close()

    def close(self) -> None:
        """Wait up to ``final_wait`` seconds for queued writes; warn about any left."""
        if self._thread is None:
            return
        deadline = time.monotonic() + self.tracking.final_wait
        while time.monotonic() < deadline and not self._drained():
            self._wake.set()
            self._idle.wait(timeout=0.5)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=max(1.0, deadline - time.monotonic()))
        left = [name for name, _ in self._pending]
        if left:
            log.warning(
                "MLflow (%s) took none of: %s (%s); the aggregation logs this run from its "
                "result files",
                self.tracking.uri,
                ", ".join(left),
                self._failure or "timed out",
            )
        self._thread = None

    # --- the background writer -------------------------------------------------------------

    def _submit(self, name: str, operation: Callable[[Any], None]) -> None:
        with self._guard:
            self._pending.append((name, operation))
            self._idle.clear()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="mlflow-live", daemon=True)
            self._thread.start()
        self._wake.set()

    def _drained(self) -> bool:
        with self._guard:
            return not self._pending and self._idle.is_set()

    def _work(self) -> None:
        while True:
            self._wake.wait(timeout=self.tracking.retry_every)
            self._wake.clear()
            self._flush()
            if self._stop.is_set():
                return

    def _flush(self) -> None:
        from filelock import Timeout

        from agiqa.track.store import quiet_loggers, store_lock

        with self._guard:
            batch = list(self._pending)
        if not batch:
            self._idle.set()
            return
        done = 0
        try:
            with quiet_loggers(), store_lock(self.tracking.uri, self.tracking.lock_timeout):
                client = self._connect()
                for _, operation in batch:
                    operation(client)
                    done += 1
        except Timeout:
            self._note(f"the store's lock was held for over {self.tracking.lock_timeout:g} s")
        except Exception as error:  # a store that is locked, gone or broken: retried later
            first = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
            self._note(first)
        with self._guard:
            for _ in range(done):
                self._pending.popleft()
            if not self._pending:
                self._idle.set()

    def _note(self, failure: str) -> None:
        self._failure = failure
        if not self._warned:
            self._warned = True
            log.warning("MLflow not written yet (%s): trying again later", failure)

    def _connect(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            from agiqa.track.store import relocate_artifacts

            relocate_artifacts(self.tracking.uri)
            self._client = MlflowClient(tracking_uri=self.tracking.uri)
        return self._client

    # --- the writes (run on the background thread, under the store's lock) -----------------

    def _open(
        self,
        client: Any,
        identity: dict,
        config: dict,
        manifest: tuple,
        resuming: bool,
        started: int,
    ) -> None:
        from agiqa.track.store import flatten_config

        if self.run_id is None:  # not on a retry after the run was made
            self.run_id = self._create(client, identity, resuming, started)
        log_params(client, self.run_id, flatten_config(config))
        log_manifest(client, self.run_id, *manifest)

    def _create(self, client: Any, identity: dict, resuming: bool, started: int) -> str:
        """The child run (and its parent when it is the first split to start)."""
        from agiqa.track.store import child_name, ensure_experiment, parent_name

        experiment_id = ensure_experiment(client, self.tracking.experiment, self.tracking.uri)
        protocol, dataset, model = identity["protocol"], identity["dataset"], identity["model"]
        parent_id = find_run(client, experiment_id, identity["key"])
        tags = run_tags(identity)
        if parent_id is None:
            parent_id = client.create_run(
                experiment_id,
                start_time=started,
                tags=tags,
                run_name=parent_name(protocol, dataset, model),
            ).info.run_id
        elif client.get_run(parent_id).info.status != "RUNNING":
            client.update_run(parent_id, status="RUNNING")  # aggregated before: more to come
        key = f"{identity['key']}/split{identity['split']}"
        child = find_run(client, experiment_id, key)
        if child is not None and resuming:
            client.update_run(child, status="RUNNING")
            log.info("MLflow: resuming run %s", child)
            return child
        if child is not None:
            client.delete_run(child)  # a fresh start replaces the older attempt
        child_tags = {
            **tags,
            "mlflow.parentRunId": parent_id,
            "agiqa.key": key,
            "agiqa.parent_key": identity["key"],
            "agiqa.split": str(identity["split"]),
            "agiqa.run_dir": str(identity["run_dir"]),
        }
        name = child_name(protocol, dataset, model, identity["split"])
        run_id = client.create_run(
            experiment_id, start_time=started, tags=child_tags, run_name=name
        ).info.run_id
        log.info("MLflow: logging live to run %s (%s)", run_id, name)
        return run_id

    def _metrics(self, client: Any, metrics: list[tuple[str, float, int, int]]) -> None:
        from mlflow.entities import Metric

        from agiqa.track.store import valid_metric_key

        if self.run_id is not None and metrics:
            valid = [Metric(*m) for m in metrics if valid_metric_key(m[0])]
            client.log_batch(self.run_id, metrics=valid)

    def _artifacts(self, client: Any, out_dir: Path) -> None:
        if self.run_id is not None:
            log_result_files(client, self.tracking.uri, client.get_run(self.run_id), out_dir)

    def _terminate(self, client: Any, status: str) -> None:
        if self.run_id is not None:
            client.set_terminated(self.run_id, status=status, end_time=now_ms())


# --- shared with the aggregation (agiqa.track.mlflow_log) --------------------------------------


def run_tags(identity: Mapping[str, Any]) -> dict[str, str]:
    """The tags a parent run carries (its children add their split's)."""
    return {
        "agiqa.key": str(identity["key"]),
        "agiqa.protocol": str(identity["protocol"]),
        "agiqa.dataset": str(identity["dataset"]),
        "agiqa.model": str(identity["model"]),
        "agiqa.config_hash": str(identity["config_hash"]),
        "agiqa.split_sha256": str(identity["split_sha256"]),
        "agiqa.commit": str(identity["commit"]),
    }


def find_run(client: Any, experiment_id: str, key: str) -> str | None:
    """The oldest active run tagged ``agiqa.key = key``."""
    if "'" in key:
        raise ValueError(f"run key {key!r} must not contain a single quote")
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`agiqa.key` = '{key}'",
        order_by=["attributes.start_time ASC"],
    )
    if len(found) > 1:
        log.warning("%d runs carry agiqa.key=%s; using the oldest", len(found), key)
    return found[0].info.run_id if found else None


def log_params(client: Any, run_id: str, params: Mapping[str, str]) -> None:
    """Params not stored yet (params are immutable; a changed value keeps the stored one)."""
    from mlflow.entities import Param

    existing = client.get_run(run_id).data.params
    changed = [k for k, v in params.items() if k in existing and existing[k] != v]
    if changed:
        log.warning("run %s: params %s changed; keeping stored values", run_id, changed)
    new = [Param(k, v) for k, v in params.items() if k not in existing]
    for start in range(0, len(new), _BATCH_PARAMS):
        client.log_batch(run_id, params=new[start : start + _BATCH_PARAMS])


def log_manifest(client: Any, run_id: str, frame: Any, path: str, name: str) -> None:
    """The dataset's manifest as the run's dataset input (name, content digest, source path)."""
    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    run = client.get_run(run_id)
    if run.inputs is not None and run.inputs.dataset_inputs:
        return
    # MLflow warns that a local path "can be interpreted in multiple ways" and that integer
    # columns cannot hold missing values (the manifest's schema): neither concerns a reader.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(frame, source=str(path), name=name)
        entity = dataset._to_mlflow_entity()
    tags = [InputTag(key=MLFLOW_DATASET_CONTEXT, value="manifest")]
    client.log_inputs(run_id, datasets=[DatasetInput(entity, tags=tags)])


def log_result_files(client: Any, tracking_uri: str, run: Any, out_dir: Path) -> None:
    """The result files and the checkpoint (with its bundled weight files) as artifacts."""
    from agiqa.track.store import log_artifact

    for name in RESULT_FILES:
        if (out_dir / name).is_file():
            log_artifact(client, tracking_uri, run, out_dir / name)
    if (out_dir / "checkpoint.pt").is_file():
        log_artifact(client, tracking_uri, run, out_dir / "checkpoint.pt", CHECKPOINT_DIR)
    if (out_dir / "weights").is_dir():
        log_artifact(client, tracking_uri, run, out_dir / "weights", CHECKPOINT_DIR)
