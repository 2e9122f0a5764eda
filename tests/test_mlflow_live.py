"""Fold jobs log their MLflow runs while they train; the aggregation adds to them, never twice.

The store is read while a job runs (its per-epoch metrics are there), while another process
holds the store's lock (the job finishes anyway), and by several jobs at once.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from filelock import FileLock
from mlflow.tracking import MlflowClient

from agiqa.report.aggregate import collect_runs
from agiqa.report.results import load_runs
from agiqa.track.live import LiveRun, Tracking
from agiqa.track.mlflow_log import log_to_mlflow
from agiqa.track.store import flatten_config, local_artifact_dir
from agiqa.train.fold import FoldJob, run_fold
from test_train import job, prepare, residual_config

EPOCHS = 3
FAST = {"lock_timeout": 2.0, "retry_every": 0.2, "final_wait": 60.0}


def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"


def runs_of(uri: str, experiment: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


def children(uri: str, experiment: str) -> list:
    return [r for r in runs_of(uri, experiment) if "mlflow.parentRunId" in r.data.tags]


def aggregate(run_dirs: list[Path], uri: str, experiment: str) -> dict:
    runs = load_runs(run_dirs)
    return log_to_mlflow(runs, collect_runs(runs), uri, experiment)


class PausingRun(LiveRun):
    """A live run that holds the training thread after ``pause_at`` until released."""

    def __init__(self, tracking: Tracking, pause_at: int) -> None:
        super().__init__(tracking)
        self.pause_at = pause_at
        self.reached = threading.Event()
        self.release = threading.Event()

    def epoch(self, row: dict) -> None:
        super().epoch(row)
        if int(row["epoch"]) == self.pause_at:
            self.reached.set()
            assert self.release.wait(timeout=600)


def test_the_store_shows_each_epoch_while_the_job_runs(tmp_path: Path) -> None:
    uri, experiment = store(tmp_path), "live"
    paths = prepare(tmp_path, n_prompts=12)
    fold = job(tmp_path, paths, residual_config(epochs=EPOCHS))
    live = PausingRun(Tracking(uri, experiment, **FAST), pause_at=2)
    worker = threading.Thread(target=run_fold, args=(fold, live))
    worker.start()
    try:
        assert live.reached.wait(timeout=900), "the job never reached epoch 2"
        deadline = time.monotonic() + 120
        history: list = []
        while time.monotonic() < deadline:  # the writer thread logs asynchronously
            found = children(uri, experiment)
            if found:
                client = MlflowClient(tracking_uri=uri)
                history = client.get_metric_history(found[0].info.run_id, "train_loss")
                if len(history) == 2:
                    break
            time.sleep(0.2)
        (child,) = children(uri, experiment)
        assert sorted(m.step for m in history) == [1, 2]  # mid-job: epochs 1 and 2, not 3
        assert child.info.status == "RUNNING"
        assert child.info.run_name == "clip_residual · synthetic · split 0 · kfold_grouped"
        assert child.data.params["model.train.epochs"] == str(EPOCHS)
        assert child.data.params["protocol.split"] == "0"
    finally:
        live.release.set()
        worker.join(timeout=900)
    client = MlflowClient(tracking_uri=uri)
    child = client.get_run(child.info.run_id)
    assert child.info.status == "FINISHED"
    run_dir = Path(fold.out_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert child.data.params == flatten_config(config)  # what config.yaml records
    assert "test/quality/srcc" in child.data.metrics and "info/n_test" in child.data.metrics
    (dataset,) = child.inputs.dataset_inputs
    assert dataset.dataset.name == "synthetic" and dataset.dataset.source_type == "local"
    folder = local_artifact_dir(uri, child.info.artifact_uri)
    assert (folder / "checkpoint" / "checkpoint.pt").read_bytes() == (
        run_dir / "checkpoint.pt"
    ).read_bytes()
    assert (folder / "history.csv").is_file()
    parent = client.get_run(child.data.tags["mlflow.parentRunId"])
    assert parent.info.run_name == "clip_residual · synthetic · kfold_grouped"

    # The aggregation finds both runs, adds the summary, and duplicates nothing.
    assert aggregate([run_dir], uri, experiment)["created"] == 0
    assert aggregate([run_dir], uri, experiment)["created"] == 0
    assert len(runs_of(uri, experiment)) == 2
    losses = client.get_metric_history(child.info.run_id, "train_loss")
    assert sorted(m.step for m in losses) == list(range(1, EPOCHS + 1))
    for key in ("test/quality/srcc", "val/quality/plcc_logistic"):
        assert len(client.get_metric_history(child.info.run_id, key)) == 1, key
    assert "n_splits" in client.get_run(parent.info.run_id).data.metrics


def test_a_locked_store_never_fails_the_job(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uri, experiment = store(tmp_path), "locked"
    paths = prepare(tmp_path, n_prompts=12)
    fold = job(tmp_path, paths, residual_config(epochs=2))
    db = tmp_path / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True)
    tracking = Tracking(uri, experiment, lock_timeout=0.2, retry_every=0.2, final_wait=2.0)
    with FileLock(str(db) + ".lock"), caplog.at_level("WARNING"):
        metrics = run_fold(fold, LiveRun(tracking))  # another writer holds the store throughout
    assert metrics["epochs_run"] == 2
    assert "the aggregation logs this run from its result files" in caplog.text
    assert not runs_of(uri, experiment)
    # The aggregation logs what the job could not, from the result files.
    assert aggregate([Path(fold.out_dir)], uri, experiment)["created"] == 2
    (child,) = children(uri, experiment)
    client = MlflowClient(tracking_uri=uri)
    assert [m.step for m in client.get_metric_history(child.info.run_id, "train_loss")] == [1, 2]
    folder = local_artifact_dir(uri, child.info.artifact_uri)
    assert (folder / "checkpoint" / "checkpoint.pt").is_file()
    assert child.inputs.dataset_inputs


# --- many writers, reruns: a trainer stand-in, no training -----------------------------------


def fake_trainer(root: Path, split: int, model: str = "m") -> tuple[SimpleNamespace, dict]:
    fold = FoldJob(
        dataset="d",
        root=str(root),
        manifest=str(root / "manifest.csv"),
        splits=str(root / "splits.csv"),
        split=split,
        protocol="kfold_grouped",
        model_name=model,
        model_config={"type": model},
        out_dir=str(root / model / f"split{split}"),
    )
    frame = pd.DataFrame({"image": ["a.png", "b.png"], "prompt": ["x", "y"]})
    trainer = SimpleNamespace(
        job=fold,
        manifest=SimpleNamespace(frame=frame),
        resume_path=root / model / f"split{split}" / "resume.pt",
    )
    config = {
        "model": {"name": model},
        "provenance": {"split_sha256": "ab" * 32, "commit": "c" * 40},
    }
    return trainer, config


def _write_epochs(args: tuple[str, str, int, str, int]) -> str:
    uri, root, split, model, epochs = args
    trainer, config = fake_trainer(Path(root), split, model)
    live = LiveRun(Tracking(uri, "many", lock_timeout=30.0, retry_every=0.1, final_wait=300.0))
    live.start(trainer, config)
    for epoch in range(1, epochs + 1):
        live.epoch({"epoch": epoch, "train_loss": 1.0 / epoch, "val_srcc_mean": 0.1 * epoch})
    live.fail("FINISHED")  # a status and a wait, without result files
    return str(live.run_id)


def test_concurrent_jobs_write_one_fresh_store(tmp_path: Path) -> None:
    uri = store(tmp_path)
    jobs = [(uri, str(tmp_path), split, model, 25) for model in ("m", "n") for split in (0, 1)]
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        run_ids = pool.map(_write_epochs, jobs)
    assert len(set(run_ids)) == len(jobs) and "None" not in run_ids
    found = runs_of(uri, "many")
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(p.data.tags["agiqa.model"] for p in parents) == ["m", "n"]  # one each
    client = MlflowClient(tracking_uri=uri)
    for run_id in run_ids:
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run_id, "train_loss")]
        assert sorted(steps) == list(range(1, 26))


def test_a_fresh_rerun_replaces_its_run_and_a_resumed_one_continues_it(tmp_path: Path) -> None:
    uri = store(tmp_path)
    first = _write_epochs((uri, str(tmp_path), 0, "m", 3))
    second = _write_epochs((uri, str(tmp_path), 0, "m", 2))  # started afresh: replaces it
    assert first != second
    assert [r.info.run_id for r in children(uri, "many")] == [second]
    trainer, config = fake_trainer(tmp_path, 0)
    trainer.resume_path.parent.mkdir(parents=True, exist_ok=True)
    trainer.resume_path.write_bytes(b"resume")
    live = LiveRun(Tracking(uri, "many", **FAST))
    live.start(trainer, config)
    live.epoch({"epoch": 3, "train_loss": 0.3})
    live.fail("FINISHED")
    assert live.run_id == second
    client = MlflowClient(tracking_uri=uri)
    assert [m.step for m in client.get_metric_history(second, "train_loss")] == [1, 2, 3]


# --- the UI of a moved project ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_a_moved_project_serves_its_own_artifacts(tmp_path: Path) -> None:
    from test_mlflow import fake_run

    old = tmp_path / "old"
    run_dir = fake_run(old / "results", "clip_residual", 0)
    expected = (run_dir / "metrics.json").read_text()
    result = aggregate([run_dir], store(old), "moved")
    shutil.move(old, tmp_path / "new")
    new = tmp_path / "new"
    shutil.rmtree(new / "results")  # only the store is left to serve from
    port = _free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{new / 'mlflow' / 'mlflow.db'}",
            "--artifacts-destination",
            str(new / "mlflow" / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its workers go with it
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5):
                    break
            except OSError:
                time.sleep(1)
        client = MlflowClient(tracking_uri=f"sqlite:///{new / 'mlflow' / 'mlflow.db'}")
        (child,) = [
            r
            for r in client.search_runs([result["experiment_id"]])
            if "mlflow.parentRunId" in r.data.tags
        ]
        url = f"{base}/get-artifact?path=metrics.json&run_uuid={child.info.run_id}"
        with urllib.request.urlopen(url, timeout=60) as response:
            served = response.read().decode()
        assert served == expected
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
