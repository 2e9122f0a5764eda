"""Scoring new images: same numbers as the fold job, self-contained checkpoints, ensembles, CLI."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import agiqa
from agiqa.cli import app
from agiqa.scoring import ScoringError, read_checkpoint
from agiqa.train.fold import run_fold
from test_train import TINY_BACKBONE, job, prepare, residual_config

TOLERANCE = 1e-5


def _fold(tmp_path: Path, model: dict, split: int = 0, out: str = "run") -> tuple[Path, Path]:
    """Train one tiny fold; return (run folder, dataset root)."""
    paths = prepare(tmp_path, n_prompts=12) if not (tmp_path / "synthetic").exists() else None
    paths = paths or (tmp_path / "synthetic", tmp_path / "manifest.csv", tmp_path / "splits.csv")
    fold = dataclasses.replace(
        job(tmp_path, paths, model, split=split), out_dir=str(tmp_path / out)
    )
    run_fold(fold)
    return tmp_path / out, paths[0]


def _test_inputs(run: Path, root: Path) -> tuple[pd.DataFrame, list[Path], list[str]]:
    predictions = pd.read_csv(run / "predictions.csv")
    manifest = pd.read_csv(run.parent / "manifest.csv").set_index("image")
    images = [root / name for name in predictions["image"]]
    prompts = manifest.loc[predictions["image"], "prompt"].tolist()
    return predictions, images, prompts


def _assert_same(scores: pd.DataFrame, predictions: pd.DataFrame, dims: list[str]) -> None:
    for dim in dims:
        np.testing.assert_allclose(
            scores[dim].to_numpy(), predictions[f"pred_{dim}"].to_numpy(), atol=TOLERANCE, rtol=0
        )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _fold(tmp_path_factory.mktemp("scoring"), residual_config(epochs=1))


def test_scores_equal_the_fold_jobs_test_predictions(trained: tuple[Path, Path]) -> None:
    run, root = trained
    predictions, images, prompts = _test_inputs(run, root)
    scorer = agiqa.load(run / "checkpoint.pt")
    scores = scorer.score(images, prompts=prompts, batch_size=5)  # batching does not matter
    assert list(scores.columns) == ["image", "quality", "align"]
    assert scores["image"].tolist() == [str(p) for p in images]
    _assert_same(scores, predictions, ["quality", "align"])
    # PIL images in, same numbers out.
    pil = [Image.open(p) for p in images]
    _assert_same(scorer.score(pil, prompts=prompts), predictions, ["quality", "align"])


def test_checkpoint_is_self_contained(
    trained: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, root = trained
    predictions, images, prompts = _test_inputs(run, root)
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    shutil.copy(run / "checkpoint.pt", alone / "model.pt")
    monkeypatch.chdir(alone)  # no manifest, config or run folder anywhere near
    payload = torch.load(alone / "model.pt", weights_only=True)
    assert {d["name"]: (d["kind"], d["low"], d["high"]) for d in payload["dimensions"]} == {
        "quality": ("quality", 0.0, 5.0),
        "align": ("alignment", 0.0, 5.0),
    }
    assert payload["model"]["entry"]["type"] == "clip_residual"
    assert payload["preprocessing"]["short_side"] == 256
    assert {"trained_state", "config", "best_epoch"} <= set(payload)
    _assert_same(agiqa.load(alone / "model.pt").score(images, prompts), predictions, ["quality"])


def test_without_prompts_alignment_is_left_empty(trained: tuple[Path, Path]) -> None:
    run, root = trained
    _, images, _ = _test_inputs(run, root)
    scores = agiqa.load(run).score(images[:3])
    assert scores["align"].isna().all() and scores["quality"].notna().all()


def test_frozen_random_backbone_and_feature_cache_path(tmp_path: Path) -> None:
    # clip_zeroshot: frozen, randomly initialised (seeded) CLIP, predicted from cached features.
    run, root = _fold(tmp_path, {"type": "clip_zeroshot", "backbone": TINY_BACKBONE})
    predictions, images, prompts = _test_inputs(run, root)
    payload = read_checkpoint(run / "checkpoint.pt")
    assert payload["frozen"]["tensors"] > 0 and payload["preprocessing"]["short_side"] is None
    _assert_same(agiqa.load(run).score(images, prompts), predictions, ["quality", "align"])
    # Other frozen weights than training's are refused, not silently scored with.
    payload["seed"] = 1
    torch.save(payload, tmp_path / "reseeded.pt")
    with pytest.raises(ScoringError, match="frozen weights loaded here differ"):
        agiqa.load(tmp_path / "reseeded.pt")


def test_stand_in_weight_file_travels_with_the_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agiqa.data.manifest import Dimension
    from agiqa.models import build_model

    monkeypatch.chdir(tmp_path)
    dims = (Dimension("quality", "quality", 0, 5),)
    donor = build_model({"type": "clip_zeroshot", "backbone": TINY_BACKBONE}, dims)
    Path("backbones").mkdir()
    torch.save({"state_dict": donor.clip.state_dict()}, "backbones/toy.pt")
    backbone = {"arch": TINY_BACKBONE["arch"], "pretrained": "backbones/toy.pt"}
    run, root = _fold(tmp_path, {"type": "clip_zeroshot", "backbone": backbone})
    predictions, images, prompts = _test_inputs(run, root)
    (ref,) = read_checkpoint(run / "checkpoint.pt")["weight_files"]
    assert ref["slot"] == "backbone.pretrained" and ref["path"] == "backbones/toy.pt"
    assert ref["bundled"] == "weights/toy.pt"
    assert (run / "weights" / "toy.pt").read_bytes() == Path("backbones/toy.pt").read_bytes()
    # The run folder, copied anywhere, scores without the project (no --weights-dir).
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(run, moved)
    shutil.rmtree(tmp_path / "backbones")
    monkeypatch.chdir(moved.parent)
    _assert_same(agiqa.load(moved).score(images, prompts), predictions, ["quality", "align"])
    # The checkpoint file alone needs the weight file from somewhere: it says so.
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(run / "checkpoint.pt", alone / "checkpoint.pt")
    with pytest.raises(ScoringError, match=r"weight file 'backbones/toy.pt'.*--weights-dir"):
        agiqa.load(alone)
    scorer = agiqa.load(alone, weights_dir=moved / "weights")
    _assert_same(scorer.score(images, prompts), predictions, ["quality", "align"])
    (moved / "weights" / "toy.pt").write_bytes(b"other weights")
    with pytest.raises(ScoringError, match="not the weight file the model was trained with"):
        agiqa.load(moved)


def test_model_folder_averages_its_folds(tmp_path: Path) -> None:
    model = residual_config(epochs=1)
    folder = tmp_path / "runs" / "kfold_grouped" / "synthetic" / "clip_residual"
    for split in (0, 1):
        _fold(tmp_path, model, split=split, out=str(folder.relative_to(tmp_path) / f"split{split}"))
    images = sorted((tmp_path / "synthetic").glob("*.jpg"))[:4]
    ensemble = agiqa.load(folder)
    assert ensemble.ensemble and "average of 2 fold checkpoints" in ensemble.describe()
    each = [agiqa.load(folder / f"split{k}").score(images, "a photo") for k in (0, 1)]
    mean = (each[0]["quality"] + each[1]["quality"]) / 2
    np.testing.assert_allclose(ensemble.score(images, "a photo")["quality"], mean, atol=1e-9)


def test_old_checkpoint_is_refused_clearly(tmp_path: Path) -> None:
    torch.save({"trained_state": {}, "config": {}, "best_epoch": 1}, tmp_path / "old.pt")
    with pytest.raises(ScoringError, match="older agiqa"):
        agiqa.load(tmp_path / "old.pt")


def test_cli_prints_one_row_per_image(trained: tuple[Path, Path], tmp_path: Path) -> None:
    run, root = trained
    predictions, images, prompts = _test_inputs(run, root)
    table = pd.DataFrame({"image": [p.name for p in images], "prompt": prompts})
    table.to_csv(tmp_path / "prompts.csv", index=False)
    args = ["score", "--checkpoint", str(run), "--images", str(images[0]), *map(str, images[1:])]
    result = CliRunner().invoke(app, [*args, "--prompts", str(tmp_path / "prompts.csv")])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "image,quality,align" and len(lines) == 1 + len(images)
    out = tmp_path / "scores.csv"
    result = CliRunner().invoke(
        app, [*args, "--prompts", str(tmp_path / "prompts.csv"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    _assert_same(pd.read_csv(out), predictions, ["quality", "align"])
    bad = ["score", "--checkpoint", str(tmp_path), "--images", str(images[0])]
    missing = CliRunner().invoke(app, bad)
    assert missing.exit_code == 2 and "no checkpoint.pt here" in missing.output


def test_large_jpegs_score_as_the_job_decoded_them(tmp_path: Path) -> None:
    # Images above the decode cache's short side are shrunk (JPEG draft decoding): the scorer
    # must shrink paths the same way to reproduce the job's numbers.
    from agiqa.data.readers import read_dataset
    from agiqa.data.splits import Protocol, make_splits, write_splits
    from agiqa.data.synthetic import generate

    root = tmp_path / "synthetic"
    generate(root, n_prompts=8, images_per_prompt=4, image_size=300, seed=0)
    manifest = read_dataset("agiqa-3k", root, dataset="synthetic")
    manifest.save(tmp_path / "manifest.csv")
    splits = make_splits(manifest.labelled(), Protocol(type="kfold_grouped", folds=4))
    write_splits(splits, tmp_path / "splits.csv")
    model = residual_config(epochs=1)
    model["train"]["decode_cache_short_side"] = 128
    run, _ = _fold(tmp_path, model)
    payload = read_checkpoint(run / "checkpoint.pt")
    assert payload["preprocessing"]["short_side"] == 128
    predictions, images, prompts = _test_inputs(run, root)
    _assert_same(agiqa.load(run).score(images, prompts), predictions, ["quality", "align"])
