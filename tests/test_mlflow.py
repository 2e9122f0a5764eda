"""MLflow logging of run directories: parent/child layout, contents, durations, idempotency."""

from __future__ import annotations

import multiprocessing
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from agiqa.report.aggregate import collect_runs
from agiqa.report.results import load_runs
from agiqa.track.mlflow_log import (
    flatten_config,
    log_to_mlflow,
    relocate_artifacts,
    shared_params,
    sqlite_path,
)
from agiqa.track.store import local_artifact_dir
from run_factory import SPLIT_SHA, write_run

SPLITS = (0, 1, 2)
COMMIT = "c" * 40
KEY = f"kfold_grouped/synthetic/clip_residual/abc123/{SPLIT_SHA[:12]}/{COMMIT[:12]}"
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
  name: kfold_grouped
  type: kfold_grouped
  folds: 5
provenance:
  commit: cccc
  split_sha256: abab
seed: 0
"""


def fake_run(root: Path, model: str, split: int, commit: str = COMMIT) -> Path:
    """A run whose quality SRCC is exactly 1 on split 0 and falls on later splits."""
    target = np.arange(30, dtype=float) / 6
    pred = target.copy()
    pred[: split * 3] = pred[: split * 3][::-1]  # reverse a prefix: lower SRCC on later splits
    run = write_run(
        root,
        model,
        split,
        {"quality": (pred, target), "alignment": (np.full(30, 2.0), target)},
        val={"quality": (target[:10], target[:10]), "alignment": (target[:10], target[:10])},
        commit=commit,
        config=CONFIG,
    )
    (run / "checkpoint.pt").write_bytes(b"\0" * 1024)
    return run


def log(dirs: list[Path], uri: str, experiment: str = "agiqa-test") -> dict:
    runs = load_runs(dirs)
    return log_to_mlflow(runs, collect_runs(runs), uri, experiment=experiment)


@pytest.fixture
def run_dirs(tmp_path: Path) -> list[Path]:
    return [fake_run(tmp_path, "clip_residual", k) for k in SPLITS]


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"


def _runs(client: MlflowClient, experiment_id: str, filter_string: str = "") -> list:
    return client.search_runs([experiment_id], filter_string=filter_string)


def artifacts(uri: str, run, folder: str = "") -> set[str]:
    """A run's artifact files (relative paths), read where the store keeps them."""
    root = local_artifact_dir(uri, run.info.artifact_uri)
    assert root is not None
    return {p.relative_to(root).as_posix() for p in (root / folder).rglob("*") if p.is_file()}


def test_twice_gives_one_parent_and_k_children(run_dirs: list[Path], tracking_uri: str) -> None:
    before = mlflow.get_tracking_uri()
    first = log(run_dirs, tracking_uri)
    second = log(run_dirs, tracking_uri)
    assert mlflow.get_tracking_uri() == before  # no global state leaked
    assert first["created"] == 1 + len(SPLITS) and second["created"] == 0
    assert first["experiment_id"] == second["experiment_id"]
    client = MlflowClient(tracking_uri=tracking_uri)
    runs = _runs(client, first["experiment_id"])
    assert len(runs) == 1 + len(SPLITS)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.tags["agiqa.key"] == KEY
    children = _runs(
        client, first["experiment_id"], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(c.data.tags["agiqa.split"] for c in children) == ["0", "1", "2"]
    # Re-logging identical points must not grow the metric history.
    history = client.get_metric_history(children[0].info.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.9), (2, 0.7)]


def test_parent_contents_and_real_durations(run_dirs: list[Path], tracking_uri: str) -> None:
    result = log(run_dirs, tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    (parent,) = _runs(client, result["experiment_id"], f"tags.`agiqa.key` = '{KEY}'")
    metrics = parent.data.metrics
    srcc = [float(np.corrcoef(*_ranks(k))[0, 1]) for k in SPLITS]
    assert metrics["n_splits"] == 3
    assert metrics["test/quality/srcc_mean"] == pytest.approx(np.mean(srcc))
    assert metrics["test/quality/srcc_std"] == pytest.approx(np.std(srcc, ddof=1))
    assert "test/quality/rmse_logistic_mean" in metrics
    tags = parent.data.tags
    assert tags["agiqa.protocol"] == "kfold_grouped" and tags["agiqa.dataset"] == "synthetic"
    assert tags["agiqa.split_sha256"] == SPLIT_SHA and tags["agiqa.commit"] == COMMIT
    assert parent.info.status == "FINISHED"
    assert parent.info.end_time - parent.info.start_time >= 3500  # spans its children
    for child in _runs(client, result["experiment_id"], "tags.`agiqa.split` = '1'"):
        assert child.info.end_time - child.info.start_time == 3500  # the job's 3.5 s


def _ranks(split: int) -> tuple[np.ndarray, np.ndarray]:
    target = np.arange(30, dtype=float)
    pred = target.copy()
    pred[: split * 3] = pred[: split * 3][::-1]
    return pred, target


def test_child_contents(run_dirs: list[Path], tracking_uri: str, tmp_path: Path) -> None:
    result = log(run_dirs, tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    (child,) = _runs(client, result["experiment_id"], f"tags.`agiqa.key` = '{KEY}/split1'")
    params = child.data.params
    assert params["model.type"] == "clip_residual"
    assert params["model.train.lr"] == "0.001"
    assert params["model.train.milestones"] == "[1, 2]"
    assert params["protocol.folds"] == "5" and params["provenance.commit"] == "cccc"
    metrics = child.data.metrics
    assert metrics["test/quality/srcc"] == pytest.approx(np.corrcoef(*_ranks(1))[0, 1])
    assert metrics["val/quality/plcc"] == pytest.approx(1.0)
    assert metrics["info/n_test"] == 30
    assert "test/alignment/srcc" in metrics  # NaN (constant predictions) is logged, not dropped
    assert [m.value for m in client.get_metric_history(child.info.run_id, "val_srcc_mean")] == [0.5]
    assert artifacts(tracking_uri, child) == {
        "metrics.json",
        "config.yaml",
        "predictions.csv",
        "val_predictions.csv",
        "history.csv",
        "checkpoint/checkpoint.pt",
    }
    # Relative to the artifact root beside the database: a moved store keeps its files.
    assert child.info.artifact_uri.startswith("mlflow-artifacts:/agiqa-test/")
    root = tmp_path / "mlflow" / "artifacts"
    assert local_artifact_dir(tracking_uri, child.info.artifact_uri).is_relative_to(root)


def test_new_model_adds_parent(run_dirs: list[Path], tracking_uri: str, tmp_path: Path) -> None:
    log(run_dirs, tracking_uri)
    extra = [fake_run(tmp_path, "baseline", k) for k in (0, 1)]
    result = log(run_dirs + extra, tracking_uri)
    assert result["parents"] == 2 and result["children"] == 5 and result["created"] == 3


def test_new_code_never_overwrites_an_older_run(tmp_path: Path, tracking_uri: str) -> None:
    log([fake_run(tmp_path / "old", "m", 0)], tracking_uri)
    result = log([fake_run(tmp_path / "new", "m", 0, commit="d" * 40)], tracking_uri)
    assert result["created"] == 2  # a new parent and child; the old ones stay as they were


def _log_in_process(args: tuple[list[str], str, str]) -> int:
    dirs, uri, experiment = args
    return log([Path(d) for d in dirs], uri, experiment)["children"]


def test_two_first_aggregations_on_a_fresh_store(run_dirs: list[Path], tracking_uri: str) -> None:
    # Without the lock, concurrent first-time migrations can break a sqlite store for good.
    context = multiprocessing.get_context("spawn")
    jobs = [([str(d) for d in run_dirs], tracking_uri, name) for name in ("one", "two")]
    with context.Pool(2) as pool:
        assert pool.map(_log_in_process, jobs) == [3, 3]
    client = MlflowClient(tracking_uri=tracking_uri)
    for name in ("one", "two"):
        experiment = client.get_experiment_by_name(name)
        assert len(_runs(client, experiment.experiment_id)) == 4


def test_flatten_config_skips_clashes_and_truncates() -> None:
    flat = flatten_config({"a": {"b": 1, "c": None}, "a.b": 2, "long": "x" * 7000, "bad=key": 1})
    assert flat["a.b"] == "1"
    assert flat["a.c"] == "null"
    assert len(flat["long"]) == 6000
    assert "bad=key" not in flat


def test_sqlite_path() -> None:
    assert sqlite_path("sqlite:////abs/mlflow.db") == Path("/abs/mlflow.db")
    assert sqlite_path("http://localhost:5000") is None


def test_durations_are_positive_for_every_run(run_dirs: list[Path], tracking_uri: str) -> None:
    result = log(run_dirs, tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    for run in _runs(client, result["experiment_id"]):
        assert run.info.end_time - run.info.start_time > 0, run.data.tags["agiqa.key"]


def test_parent_carries_shared_params_tables_and_figures(
    run_dirs: list[Path], tracking_uri: str, tmp_path: Path
) -> None:
    table, figure = tmp_path / "tables" / "main.md", tmp_path / "figures" / "scatter-synthetic.png"
    for path in (table, figure):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    runs = load_runs(run_dirs)
    result = log_to_mlflow(
        runs,
        collect_runs(runs),
        tracking_uri,
        "agiqa-test",
        report={"": [table], "synthetic": [figure], "other": [tmp_path / "not-this.png"]},
    )
    client = MlflowClient(tracking_uri=tracking_uri)
    (parent,) = _runs(client, result["experiment_id"], f"tags.`agiqa.key` = '{KEY}'")
    assert parent.data.params["model.train.lr"] == "0.001"
    assert parent.data.params["protocol.folds"] == "5"
    found = artifacts(tracking_uri, parent)
    assert found == {"report/tables/main.md", "report/figures/scatter-synthetic.png"}
    experiment = client.get_experiment(result["experiment_id"])
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_shared_params_drop_what_differs_between_splits() -> None:
    configs = [{"model.lr": "1", "protocol.split": "0"}, {"model.lr": "1", "protocol.split": "1"}]
    assert shared_params(configs) == {"model.lr": "1"}


def test_a_moved_store_finds_its_artifacts(run_dirs: list[Path], tmp_path: Path) -> None:
    old = tmp_path / "old" / "mlflow"
    result = log(run_dirs, f"sqlite:///{old / 'mlflow.db'}")
    new = tmp_path / "new" / "mlflow"
    new.parent.mkdir()
    shutil.move(old, new)
    uri = f"sqlite:///{new / 'mlflow.db'}"
    assert relocate_artifacts(uri) == 0  # nothing absolute to rewrite
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment(result["experiment_id"])
    assert experiment.tags["agiqa.artifact_root"] == "artifacts"
    child = _runs(client, result["experiment_id"], "tags.`agiqa.split` = '0'")[0]
    folder = local_artifact_dir(uri, child.info.artifact_uri)
    assert folder.is_relative_to(new / "artifacts")
    assert (folder / "metrics.json").read_text() == (run_dirs[0] / "metrics.json").read_text()
    assert log(run_dirs, uri)["created"] == 0  # the moved store is reused, not duplicated


def test_an_older_store_with_absolute_uris_is_made_relative(
    run_dirs: list[Path], tmp_path: Path
) -> None:
    # What agiqa wrote before: the experiment's location an absolute file:// URI.
    db = tmp_path / "mlflow" / "mlflow.db"
    uri = f"sqlite:///{db}"
    client = MlflowClient(tracking_uri=uri)
    root = tmp_path / "mlflow" / "artifacts"
    experiment_id = client.create_experiment("agiqa-test", artifact_location=root.as_uri())
    client.set_experiment_tag(experiment_id, "agiqa.artifact_root", "artifacts")
    old_run = client.create_run(experiment_id)
    assert old_run.info.artifact_uri.startswith(root.as_uri())
    assert relocate_artifacts(uri) == 1
    assert relocate_artifacts(uri) == 0
    moved = client.get_run(old_run.info.run_id).info.artifact_uri
    assert moved == f"mlflow-artifacts:/{old_run.info.run_id}/artifacts"
    assert local_artifact_dir(uri, moved) == root / old_run.info.run_id / "artifacts"
    result = log(run_dirs, uri)
    assert result["experiment_id"] == experiment_id and result["created"] == 4


def test_a_rerun_the_store_missed_replaces_the_stale_run(
    run_dirs: list[Path], tracking_uri: str
) -> None:
    first = log(run_dirs, tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    (old,) = _runs(client, first["experiment_id"], f"tags.`agiqa.key` = '{KEY}/split1'")
    # Split 1 reran (same configuration and code) while the store was out of reach.
    metrics = run_dirs[1] / "metrics.json"
    metrics.write_text(metrics.read_text().replace('"seconds": 3.5', '"seconds": 4.5'))
    again = log(run_dirs, tracking_uri)
    assert again["created"] == 1
    (new,) = _runs(client, first["experiment_id"], f"tags.`agiqa.key` = '{KEY}/split1'")
    assert new.info.run_id != old.info.run_id and new.data.metrics["info/seconds"] == 4.5
    assert client.get_run(old.info.run_id).info.lifecycle_stage == "deleted"
    assert len(client.get_metric_history(new.info.run_id, "train_loss")) == 2
    assert log(run_dirs, tracking_uri)["created"] == 0
