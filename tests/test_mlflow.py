"""MLflow logging of run directories: parent/child layout, contents and idempotency."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from agiqa.evaluate.metrics import METRICS
from agiqa.track.mlflow_log import flatten_config, log_to_mlflow, sqlite_path

SPLITS = (0, 1, 2)
CONFIG = """\
model:
  type: clip_residual
  train:
    lr: 0.001
    epochs: 2
    milestones: [1, 2]
dataset:
  name: synthetic
protocol:
  name: random
seed: 0
"""


def write_run(root: Path, model: str, split: int) -> Path:
    """A fake run directory with every file a training job writes (and a checkpoint)."""
    run_dir = root / "runs" / "random" / "synthetic" / model / f"split{split}"
    run_dir.mkdir(parents=True)
    scores = {m: 0.5 + split / 10 for m in METRICS}
    metrics = {
        "dataset": "synthetic",
        "model": model,
        "protocol": "random",
        "split": split,
        "n_train": 100,
        "n_val": 20,
        "n_test": 30,
        "best_epoch": 1,
        "epochs_run": 2,
        "seconds": 3.5,
        "config_hash": "abc123",
        "test": {"quality": scores, "alignment": {**scores, "srcc": None}},
        "val": {"quality": scores},
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "config.yaml").write_text(CONFIG)
    (run_dir / "history.csv").write_text(
        "epoch,train_loss,val_srcc_mean,lr,seconds\n1,0.9,0.5,0.001,1.0\n2,0.7,,0.0005,1.1\n"
    )
    (run_dir / "predictions.csv").write_text(
        "image,split,pred_quality,target_quality\na.jpg,test,0.1,0.2\n"
    )
    (run_dir / "checkpoint.pt").write_bytes(b"\0" * 1024)
    return run_dir


@pytest.fixture
def run_dirs(tmp_path: Path) -> list[Path]:
    return [write_run(tmp_path, "clip_residual", k) for k in SPLITS]


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"


def _runs(client: MlflowClient, experiment_id: str, filter_string: str = "") -> list:
    return client.search_runs([experiment_id], filter_string=filter_string)


def test_twice_gives_one_parent_and_k_children(run_dirs: list[Path], tracking_uri: str) -> None:
    before = mlflow.get_tracking_uri()
    first = log_to_mlflow(run_dirs, tracking_uri, experiment="agiqa-test")
    second = log_to_mlflow(run_dirs, tracking_uri, experiment="agiqa-test")
    assert mlflow.get_tracking_uri() == before  # no global state leaked
    assert first["created"] == 1 + len(SPLITS) and second["created"] == 0
    assert first["experiment_id"] == second["experiment_id"]
    client = MlflowClient(tracking_uri=tracking_uri)
    runs = _runs(client, first["experiment_id"])
    assert len(runs) == 1 + len(SPLITS)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.tags["agiqa.key"] == "random/synthetic/clip_residual/abc123"
    children = _runs(
        client, first["experiment_id"], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(c.data.tags["agiqa.split"] for c in children) == ["0", "1", "2"]
    # Re-logging identical points must not grow the metric history.
    history = client.get_metric_history(children[0].info.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.9), (2, 0.7)]


def test_parent_contents(run_dirs: list[Path], tracking_uri: str) -> None:
    result = log_to_mlflow(run_dirs, tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    key = "random/synthetic/clip_residual/abc123"
    (parent,) = _runs(client, result["experiment_id"], f"tags.`agiqa.key` = '{key}'")
    metrics = parent.data.metrics
    assert metrics["n_splits"] == 3
    assert metrics["test/quality/srcc_mean"] == pytest.approx(0.6)
    assert metrics["test/quality/srcc_std"] == pytest.approx(0.1)
    assert metrics["test/quality/rmse_mean"] == pytest.approx(0.6)
    tags = parent.data.tags
    assert tags["agiqa.protocol"] == "random" and tags["agiqa.dataset"] == "synthetic"
    assert tags["agiqa.model"] == "clip_residual" and tags["agiqa.config_hash"] == "abc123"
    assert parent.info.status == "FINISHED"


def test_child_contents(run_dirs: list[Path], tracking_uri: str, tmp_path: Path) -> None:
    result = log_to_mlflow(run_dirs, tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    key = "random/synthetic/clip_residual/abc123/split1"
    (child,) = _runs(client, result["experiment_id"], f"tags.`agiqa.key` = '{key}'")
    params = child.data.params
    assert params["model.type"] == "clip_residual"
    assert params["model.train.lr"] == "0.001"
    assert params["model.train.milestones"] == "[1, 2]"
    assert params["seed"] == "0"
    metrics = child.data.metrics
    assert metrics["test/quality/srcc"] == pytest.approx(0.6)
    assert metrics["val/quality/plcc"] == pytest.approx(0.6)
    assert metrics["info/n_test"] == 30
    assert "test/alignment/srcc" in metrics  # NaN is logged, not dropped
    assert [m.value for m in client.get_metric_history(child.info.run_id, "val_srcc_mean")] == [0.5]
    artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert artifacts == {"metrics.json", "config.yaml", "predictions.csv", "history.csv"}
    assert child.data.tags["agiqa.split"] == "1"
    assert "artifacts" in child.info.artifact_uri
    assert (tmp_path / "mlflow" / "artifacts").is_dir()


def test_new_model_adds_parent(run_dirs: list[Path], tracking_uri: str, tmp_path: Path) -> None:
    log_to_mlflow(run_dirs, tracking_uri)
    extra = [write_run(tmp_path, "baseline", k) for k in (0, 1)]
    result = log_to_mlflow(run_dirs + extra, tracking_uri)
    assert result["parents"] == 2 and result["children"] == 5 and result["created"] == 3


def test_flatten_config_skips_clashes_and_truncates() -> None:
    flat = flatten_config({"a": {"b": 1, "c": None}, "a.b": 2, "long": "x" * 7000, "bad=key": 1})
    assert flat["a.b"] == "1"
    assert flat["a.c"] == "null"
    assert len(flat["long"]) == 6000
    assert "bad=key" not in flat


def test_sqlite_path() -> None:
    assert sqlite_path("sqlite:////abs/mlflow.db") == Path("/abs/mlflow.db")
    assert sqlite_path("http://localhost:5000") is None
