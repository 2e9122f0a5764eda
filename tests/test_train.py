"""Fold jobs: outputs, selection on validation only, bad images, and a learning test."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from agiqa.data.readers import read_dataset
from agiqa.data.splits import Protocol, make_splits, write_splits
from agiqa.data.synthetic import generate
from agiqa.errors import ConfigError, DataError
from agiqa.evaluate.metrics import METRICS
from agiqa.pipeline import RUN_FILES
from agiqa.provenance import file_sha256
from agiqa.train.fold import BEST_PLCC_PREDICTIONS, FoldJob, FoldTrainer, run_fold

# The tiny ResNet-tower CLIP learns low-level quality cues from a few hundred images; the tiny ViT
# does not (measured: held-out SRCC about 0.0-0.2), so the demo and learning tests use this one.
TINY_BACKBONE = {"arch": "agiqa-tiny-rn-clip", "pretrained": None}


FOUR_FOLDS = Protocol(type="kfold_grouped", folds=4)


def prepare(
    tmp_path: Path, n_prompts: int, folds: int = 4, seed: int = 0, protocol: str = "kfold_grouped"
) -> tuple[Path, Path, Path]:
    root = tmp_path / "synthetic"
    generate(root, n_prompts=n_prompts, images_per_prompt=4, image_size=64, seed=seed)
    manifest = read_dataset("agiqa-3k", root, dataset="synthetic")
    manifest_path = tmp_path / "manifest.csv"
    manifest.save(manifest_path)
    splits_path = tmp_path / "splits.csv"
    splits = make_splits(manifest.labelled(), Protocol(type=protocol, folds=folds, seed=seed))
    write_splits(splits, splits_path)
    return root, manifest_path, splits_path


def job(
    tmp_path: Path,
    paths: tuple[Path, Path, Path],
    model: dict,
    split: int = 0,
    protocol: Protocol = FOUR_FOLDS,
) -> FoldJob:
    root, manifest_path, splits_path = paths
    return FoldJob(
        dataset="synthetic",
        root=str(root),
        manifest=str(manifest_path),
        splits=str(splits_path),
        split=split,
        protocol=protocol.type,
        protocol_settings=protocol.settings(),
        model_name=model["type"],
        model_config=model,
        out_dir=str(tmp_path / "run"),
        seed=0,
        threads=2,
        feature_cache_dir=str(tmp_path / "features"),
    )


def residual_config(epochs: int, **train: float) -> dict:
    return {
        "type": "clip_residual",
        "backbone": TINY_BACKBONE,
        "train": {"epochs": epochs, "batch_size": 16, "lr": 1e-3, "patience": epochs, **train},
    }


def test_fold_job_writes_every_output_and_tests_only_the_test_fold(tmp_path: Path) -> None:
    paths = prepare(tmp_path, n_prompts=12)
    metrics = run_fold(job(tmp_path, paths, residual_config(epochs=2)))
    run = tmp_path / "run"
    for name in RUN_FILES:
        assert (run / name).stat().st_size > 0, name
    splits = pd.read_csv(paths[2])
    predictions = pd.read_csv(run / "predictions.csv")
    assert sorted(predictions["image"]) == sorted(splits.loc[splits["split0"] == "test", "image"])
    assert set(metrics["test"]) == {"quality", "align"}
    assert set(metrics["test"]["quality"]) == set(METRICS)
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 2
    assert len(pd.read_csv(run / "history.csv")) == 2
    val = pd.read_csv(run / "val_predictions.csv")
    assert sorted(val["image"]) == sorted(splits.loc[splits["split0"] == "val", "image"])
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["model"]["train"]["lr"] == 1e-3
    assert resolved["protocol"] == {
        "name": "kfold_grouped",
        **Protocol(type="kfold_grouped", folds=4).settings(),
        "splits": str(paths[2]),
        "split": 0,
    }


def test_every_run_records_its_provenance(tmp_path: Path) -> None:
    paths = prepare(tmp_path, n_prompts=12)
    metrics = run_fold(job(tmp_path, paths, residual_config(epochs=1)))
    resolved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    for block in (metrics["provenance"], resolved["provenance"]):
        assert block["split_sha256"] == file_sha256(paths[2])
        assert block["manifest_sha256"] == file_sha256(paths[1])
        assert block["commit"] == "unknown" or len(block["commit"].split("-")[0]) == 40
        assert set(block["versions"]) >= {"torch", "open_clip", "transformers", "agiqa"}
        assert all(block["versions"].values())
    assert metrics["protocol_settings"]["folds"] == 4
    assert metrics["selection"] == "val"


def parts_predicted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The parts the trainer predicts, in order (filled while the job runs)."""
    seen: list[str] = []
    original = FoldTrainer.predict

    def spy(self: FoldTrainer, part: str):
        seen.append(part)
        return original(self, part)

    monkeypatch.setattr(FoldTrainer, "predict", spy)
    return seen


def frozen_config(epochs: int, **train: float) -> dict:
    """The residual CLIP frozen: a head on cached features (quick epochs)."""
    return residual_config(epochs, **train) | {"freeze": {"mode": "full"}}


def test_literature_replica_selects_the_epoch_as_the_seed_code_does(
    tmp_path: Path, monkeypatch
) -> None:
    # The seed code's protocol: no validation part, and qiyan111/AIGC's rule for its model: the
    # epoch with the best test alignment SRCC, every epoch run (patience 1 does not stop it).
    protocol = Protocol(type="literature_replica", folds=4)
    paths = prepare(tmp_path, n_prompts=12, protocol="literature_replica")
    seen = parts_predicted(monkeypatch)
    model = frozen_config(epochs=4, patience=1)
    metrics = run_fold(job(tmp_path, paths, model, protocol=protocol))
    assert "val" not in seen[:4] and seen[:4] == ["test"] * 4  # selection passes on test
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert "test_srcc_alignment" in history.columns and "val_srcc_mean" not in history.columns
    assert metrics["epochs_run"] == 4
    assert metrics["best_epoch"] == int(history["epoch"][history["test_srcc_alignment"].idxmax()])
    assert metrics["selection_rule"] == "qiyan111_aigc"
    assert metrics["selection_dimensions"] == ["align"]
    assert metrics["selection"] == "test" and metrics["n_val"] == 0 and metrics["val"] == {}
    assert pd.read_csv(tmp_path / "run" / "val_predictions.csv").empty
    assert not (tmp_path / "run" / BEST_PLCC_PREDICTIONS).exists()


def test_the_scva_rule_reports_srcc_and_plcc_from_their_own_best_epochs(tmp_path: Path) -> None:
    # SCVA-AGIQA keeps running maxima of test SRCC and of test PLCC, each over every epoch.
    protocol = Protocol(type="literature_replica", folds=4)
    paths = prepare(tmp_path, n_prompts=12, protocol="literature_replica")
    model = frozen_config(epochs=5, patience=1, replica_selection="scva_agiqa")
    model["train"]["lr"] = 3e-2  # large steps: the two maxima tend to fall on different epochs
    metrics = run_fold(job(tmp_path, paths, model, protocol=protocol))
    run = tmp_path / "run"
    history = pd.read_csv(run / "history.csv")
    assert metrics["selection_rule"] == "scva_agiqa" and metrics["epochs_run"] == 5
    assert metrics["best_epoch"] == int(history["epoch"][history["test_srcc_mean"].idxmax()])
    best_plcc = int(history["epoch"][history["test_plcc_mean"].idxmax()])
    assert metrics["best_plcc_epoch"] == best_plcc
    # The tables take PLCC from that epoch's predictions, SRCC from the selected epoch's.
    from agiqa.report.aggregate import collect_runs
    from agiqa.report.results import load_runs

    per_split = collect_runs(load_runs([run]), logistic="logistic4")
    test = per_split[per_split["part"] == "test"].set_index("dimension")
    separate = pd.read_csv(run / BEST_PLCC_PREDICTIONS)
    selected = pd.read_csv(run / "predictions.csv")
    plcc_mean = np.mean(
        [np.corrcoef(separate[f"pred_{d}"], separate[f"target_{d}"])[0, 1] for d in test.index]
    )
    assert plcc_mean == pytest.approx(history["test_plcc_mean"].max(), abs=1e-6)
    for dim in test.index:
        pred, target = separate[f"pred_{dim}"], separate[f"target_{dim}"]
        assert test.loc[dim, "plcc"] == pytest.approx(np.corrcoef(pred, target)[0, 1])
        rank = selected[f"pred_{dim}"].rank().corr(selected[f"target_{dim}"].rank())
        assert test.loc[dim, "srcc"] == pytest.approx(rank)


def test_honest_protocols_select_with_agiqas_rule_whatever_the_replica_rule(
    tmp_path: Path,
) -> None:
    paths = prepare(tmp_path, n_prompts=12)
    model = frozen_config(epochs=2, replica_selection="scva_agiqa")
    metrics = run_fold(job(tmp_path, paths, model))
    assert metrics["selection_rule"] == "agiqa" and metrics["selection"] == "val"
    assert metrics["best_plcc_epoch"] is None
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert list(history.columns) == ["epoch", "train_loss", "val_srcc_mean", "lr", "seconds"]


def test_test_selection_works_on_cached_features_without_a_validation_part(
    tmp_path: Path,
) -> None:
    protocol = Protocol(type="literature_replica", folds=4)
    paths = prepare(tmp_path, n_prompts=12, protocol="literature_replica")
    frozen = residual_config(epochs=2) | {"freeze": {"mode": "full"}}
    metrics = run_fold(job(tmp_path, paths, frozen, protocol=protocol))
    assert metrics["n_val"] == 0 and metrics["epochs_run"] == 2


def test_cuda_asked_without_a_gpu_stops_clearly(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    paths = prepare(tmp_path, n_prompts=12)
    bad = dataclasses.replace(job(tmp_path, paths, residual_config(epochs=1)), device="cuda")
    with pytest.raises(ConfigError, match="asks for device 'cuda' but this machine has no"):
        run_fold(bad)


def test_model_selection_never_looks_at_the_test_fold(tmp_path: Path, monkeypatch) -> None:
    paths = prepare(tmp_path, n_prompts=12)
    seen = parts_predicted(monkeypatch)
    run_fold(job(tmp_path, paths, residual_config(epochs=3)))
    first_test = seen.index("test")
    assert seen[:first_test] == ["val"] * 3  # one validation pass per epoch, then test once
    assert seen.count("test") == 1


def test_zero_shot_model_is_evaluated_without_training(tmp_path: Path) -> None:
    paths = prepare(tmp_path, n_prompts=12)
    model = {"type": "clip_zeroshot", "backbone": TINY_BACKBONE}
    metrics = run_fold(job(tmp_path, paths, model))
    assert metrics["best_epoch"] is None and metrics["epochs_run"] == 0
    assert metrics["trainable_parameters"] == 0


def test_an_undecodable_image_stops_training_with_its_name(tmp_path: Path) -> None:
    paths = prepare(tmp_path, n_prompts=12)
    manifest = pd.read_csv(paths[1])
    broken = manifest["image"].iloc[5]
    (paths[0] / broken).write_bytes(b"not a jpeg at all")
    with pytest.raises(
        DataError, match=rf"manifest.csv, row 7: image '.*{broken}' cannot be decoded"
    ):
        run_fold(job(tmp_path, paths, residual_config(epochs=1)))


def test_a_stale_split_file_is_refused(tmp_path: Path) -> None:
    paths = prepare(tmp_path, n_prompts=12)
    splits = pd.read_csv(paths[2])
    splits.iloc[:-1].to_csv(paths[2], index=False)
    with pytest.raises(DataError, match="split file does not match the manifest"):
        run_fold(job(tmp_path, paths, residual_config(epochs=1)))


@pytest.mark.slow
def test_tiny_clip_residual_learns_quality_on_synthetic_data(tmp_path: Path) -> None:
    """Held-out quality SRCC clearly above chance.

    Measured with this setup (240 images, fold 0 of 4, 20 epochs) for data seeds 0-3:
    0.58, 0.34, 0.69, 0.59 (this test uses seed 0). Chance is 0 with a standard error of about
    0.13 on 60 test images, so 0.25 is about two standard errors above chance and below every
    measured seed.
    """
    paths = prepare(tmp_path, n_prompts=60, folds=4)
    metrics = run_fold(job(tmp_path, paths, residual_config(epochs=20)))
    assert metrics["test"]["quality"]["srcc"] > 0.25
