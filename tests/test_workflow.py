"""The Snakefile end to end on a small config, and the paper grid as a dry run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODELS = ("clip_residual", "dcmpln", "scva", "clip_zeroshot")


def snakemake(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def small_config() -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["datasets"]["synthetic"]["synthesize"].update(n_prompts=15, images_per_prompt=3)
    config["protocols"]["kfold_grouped"]["folds"] = 3
    config["models"]["clip_residual"]["train"].update(epochs=2, batch_size=8)
    config["models"]["dcmpln"]["train"].update(epochs=2, batch_size=8)
    config["models"]["scva"]["train"].update(epochs=1, batch_size=8)
    for stand_in in config["pretrained_backbones"].values():
        stand_in["synthesize"] = {**stand_in["synthesize"], "n_prompts": 8, "images_per_prompt": 2}
        stand_in.update(epochs=1, batch_size=8)
    return config


def mlflow_runs(db: Path, experiment: str) -> pd.DataFrame:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return pd.DataFrame(
        {
            "run_id": [r.info.run_id for r in runs],
            "parent": [r.data.tags.get("mlflow.parentRunId") for r in runs],
            "key": [r.data.tags.get("agiqa.key") for r in runs],
        }
    )


@pytest.mark.slow
def test_pipeline_runs_end_to_end_and_reruns_without_duplicates(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    (workdir / "config").mkdir(parents=True)
    shutil.copytree(REPO / "profiles", workdir / "profiles")
    config_path = workdir / "config" / "config.yaml"
    config_path.write_text(yaml.safe_dump(small_config()))

    result = snakemake("--cores", "2", "--configfile", str(config_path), cwd=workdir)
    assert result.returncode == 0, result.stderr[-4000:]

    tables = workdir / "results" / "tables"
    markdown = (tables / "main.md").read_text()
    assert all(model in markdown for model in MODELS)
    latex = (tables / "main.tex").read_text()
    assert "\\toprule" in latex and "\\bottomrule" in latex and "clip\\_residual" in latex
    summary = pd.read_csv(tables / "main.csv")
    assert set(summary["model"]) == set(MODELS)
    assert (summary["n_splits"] == 3).all()
    # Frozen-backbone models load the stand-in checkpoint the pretrain_backbone rule wrote.
    runs = workdir / "results" / "runs" / "kfold_grouped" / "synthetic"
    for model, section, key, name in (
        ("dcmpln", "backbone", "pretrained", "tiny-clip-synthetic"),
        ("scva", "vit", "checkpoint", "tiny-vit-synthetic"),
    ):
        assert (workdir / "results" / "backbones" / f"{name}.pt").stat().st_size > 0
        resolved = yaml.safe_load((runs / model / "split0" / "config.yaml").read_text())
        assert resolved["model"][section][key] == f"results/backbones/{name}.pt"

    for split in range(3):
        run = workdir / "results/runs/kfold_grouped/synthetic/clip_residual" / f"split{split}"
        predictions = pd.read_csv(run / "predictions.csv")
        splits = pd.read_csv(workdir / "results/splits/kfold_grouped/synthetic.csv")
        tested = splits.loc[splits[f"split{split}"] == "test", "image"]
        assert sorted(predictions["image"]) == sorted(tested)
        assert (
            (workdir / f"logs/train/kfold_grouped/synthetic/clip_residual/split{split}.log")
            .stat()
            .st_size
        )

    db = workdir / "results" / "mlflow" / "mlflow.db"
    runs = mlflow_runs(db, "agiqa-demo")
    parents, children = runs[runs["parent"].isna()], runs[runs["parent"].notna()]
    assert len(parents) == len(MODELS) and len(children) == 3 * len(MODELS)
    assert set(children["parent"]) == set(parents["run_id"])

    again = snakemake(
        "--cores", "2", "--configfile", str(config_path), "--forcerun", "aggregate", cwd=workdir
    )
    assert again.returncode == 0, again.stderr[-4000:]
    assert "train_fold" not in again.stderr.split("Job stats:")[-1].split("Select jobs")[0]
    rerun = mlflow_runs(db, "agiqa-demo")
    assert sorted(rerun["run_id"]) == sorted(runs["run_id"])


def test_paper_grid_dry_run_lists_every_job_without_data(tmp_path: Path) -> None:
    shutil.copytree(REPO / "config", tmp_path / "config")
    result = snakemake(
        "-n", "--cores", "8", "--configfile", str(tmp_path / "config" / "paper.yaml"), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-4000:]
    output = result.stdout + result.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", output, flags=re.MULTILINE))
    # 4 datasets x 5 models x (5 grouped folds + 10 literature repeats)
    assert counts["train_fold"] == str(4 * 5 * 15)
    assert counts["verify_dataset"] == "4"
    assert counts["manifest"] == "4"
    assert counts["split"] == "8"
    assert counts["aggregate"] == "1"
    assert counts["describe"] == "3"  # published descriptions exist for 1K, 3K and 2023
    assert counts["download_dataset"] == "4"
    assert counts["dvc_track"] == "1"
