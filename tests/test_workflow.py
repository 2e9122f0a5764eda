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
MODELS = tuple(yaml.safe_load((REPO / "config" / "config.yaml").read_text())["models"])


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
    # The seed code's protocol on one model: the protocol-sensitivity table comes out.
    config["protocols"]["literature_replica"] = {
        "type": "literature_replica",
        "folds": 3,
        "models": ["clip_residual"],
    }
    config["report"]["resamples"] = 200
    for entry in config["models"].values():
        if "train" in entry:
            entry["train"].update(epochs=min(2, entry["train"].get("epochs", 2)), batch_size=8)
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
def test_pipeline_runs_end_to_end_and_reruns_without_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = tmp_path / "work"
    (workdir / "config").mkdir(parents=True)
    shutil.copytree(REPO / "profiles", workdir / "profiles")
    config_path = workdir / "config" / "config.yaml"
    config_path.write_text(yaml.safe_dump(small_config()))

    result = snakemake("--cores", "2", "--configfile", str(config_path), cwd=workdir)
    assert result.returncode == 0, result.stderr[-4000:]

    results = workdir / "results" / "demo"  # outputs are namespaced by the experiment
    tables = results / "tables"
    markdown = (tables / "main.md").read_text()
    assert all(model in markdown for model in MODELS)
    assert "literature_replica (test-selected)" in markdown
    latex = (tables / "main.tex").read_text()
    assert "\\toprule" in latex and "\\bottomrule" in latex and "clip\\_residual" in latex
    summary = pd.read_csv(tables / "main.csv")
    assert set(summary["model"]) == set(MODELS)
    assert (summary["n_splits"] == 3).all()
    assert {"plcc_mean", "plcc_logistic_mean", "rmse_logistic_mean"} <= set(summary.columns)
    for name in ("val.md", "significance.csv", "significance.tex", "protocols.md"):
        assert (tables / name).stat().st_size > 0, name
    sensitivity = pd.read_csv(tables / "protocols.csv")
    replica = sensitivity[sensitivity["protocol"] == "literature_replica"]
    assert replica["paired"].all() and replica["delta_srcc"].notna().all()
    # Frozen-backbone models load the stand-in checkpoint the pretrain_backbone rule wrote.
    runs = results / "runs" / "kfold_grouped" / "synthetic"
    for model, section, key, name in (
        ("dcmpln", "backbone", "pretrained", "tiny-clip-synthetic"),
        ("scva", "vit", "checkpoint", "tiny-vit-synthetic"),
    ):
        assert (results / "backbones" / f"{name}.pt").stat().st_size > 0
        resolved = yaml.safe_load((runs / model / "split0" / "config.yaml").read_text())
        assert resolved["model"][section][key] == f"results/demo/backbones/{name}.pt"

    for split in range(3):
        run = results / "runs/kfold_grouped/synthetic/clip_residual" / f"split{split}"
        predictions = pd.read_csv(run / "predictions.csv")
        splits = pd.read_csv(results / "splits/kfold_grouped/synthetic.csv")
        tested = splits.loc[splits[f"split{split}"] == "test", "image"]
        assert sorted(predictions["image"]) == sorted(tested)
        log = workdir / f"logs/demo/train/kfold_grouped/synthetic/clip_residual/split{split}.log"
        assert log.stat().st_size

    db = workdir / "results" / "mlflow" / "mlflow.db"
    runs = mlflow_runs(db, "agiqa-demo")
    parents, children = runs[runs["parent"].isna()], runs[runs["parent"].notna()]
    assert len(parents) == len(MODELS) + 1 and len(children) == 3 * (len(MODELS) + 1)
    assert set(children["parent"]) == set(parents["run_id"])
    check_live_runs(db, workdir)
    for model in MODELS:
        check_scores_from_elsewhere(results, model, tmp_path / "elsewhere", monkeypatch)
    check_paper_and_report(workdir, config_path)

    again = snakemake(
        "--cores", "2", "--configfile", str(config_path), "--forcerun", "aggregate", cwd=workdir
    )
    assert again.returncode == 0, again.stderr[-4000:]
    assert "train_fold" not in again.stderr.split("Job stats:")[-1].split("Select jobs")[0]
    rerun = mlflow_runs(db, "agiqa-demo")
    assert sorted(rerun["run_id"]) == sorted(runs["run_id"])

    # Editing a model's training settings reruns exactly that model's jobs (params trigger).
    edited = small_config()
    edited["models"]["dcmpln"]["train"]["lr"] = 1.0e-2
    config_path.write_text(yaml.safe_dump(edited))
    planned = snakemake("-n", "--cores", "2", "--configfile", str(config_path), cwd=workdir)
    assert planned.returncode == 0, planned.stderr[-4000:]
    counts = job_counts(planned)
    assert counts.get("train_fold") == "3" and counts.get("aggregate") == "1"
    planned_models = re.findall(
        r"wildcards: protocol=\w+, dataset=\w+, model=(\w+)", planned.stdout
    )
    assert planned_models == ["dcmpln"] * 3


def check_live_runs(db: Path, workdir: Path) -> None:
    """The fold jobs logged their runs as they trained: one timestamp per epoch (the aggregation
    logs a history file's points at one time), the checkpoint, the manifest, FINISHED."""
    from mlflow.tracking import MlflowClient

    from agiqa.track.store import local_artifact_dir

    uri = f"sqlite:///{db}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("agiqa-demo")
    (child,) = client.search_runs(
        [experiment.experiment_id],
        filter_string="tags.`agiqa.model` = 'clip_residual' and tags.`agiqa.split` = '1' "
        "and tags.`agiqa.protocol` = 'kfold_grouped'",
    )
    assert child.info.run_name == "clip_residual · synthetic · split 1 · kfold_grouped"
    assert child.info.status == "FINISHED"
    history = client.get_metric_history(child.info.run_id, "train_loss")
    assert len(history) == 2 and len({m.timestamp for m in history}) == 2
    assert child.inputs.dataset_inputs[0].dataset.name == "synthetic"
    folder = local_artifact_dir(uri, child.info.artifact_uri)
    assert (folder / "checkpoint" / "checkpoint.pt").is_file()
    log = workdir / "logs/demo/train/kfold_grouped/synthetic/clip_residual/split1.log"
    assert "MLflow: logging live to run" in log.read_text()


def check_scores_from_elsewhere(
    results: Path, model: str, elsewhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model's run folder, copied to another directory, scores as the fold job predicted."""
    import agiqa

    run = results / "runs" / "kfold_grouped" / "synthetic" / model / "split0"
    copy = elsewhere / model
    shutil.copytree(run, copy)
    predictions = pd.read_csv(run / "predictions.csv").head(4)
    root = results / "datasets" / "synthetic"
    manifest = pd.read_csv(results / "manifests" / "synthetic.csv").set_index("image")
    images = [root / name for name in predictions["image"]]
    prompts = manifest.loc[predictions["image"], "prompt"].tolist()
    with monkeypatch.context() as patch:
        patch.chdir(elsewhere)  # neither the project nor its stand-in backbones are here
        scores = agiqa.load(copy, device="cpu").score(images, prompts)
    for dim in [c.removeprefix("pred_") for c in predictions.columns if c.startswith("pred_")]:
        assert abs(scores[dim].to_numpy() - predictions[f"pred_{dim}"].to_numpy()).max() < 1e-4, (
            model,
            dim,
        )


def check_paper_and_report(workdir: Path, config_path: Path) -> None:
    """The demo's paper (labels from the settings, 8 pt or more, no empty page, the build
    itself refuses overfull boxes) and the HTML report with it, under results/demo/."""
    if shutil.which("pdflatex") is None:
        assert os.environ.get("CI") != "true", "CI installs pdflatex"
        return
    from pdf_layout import small_text, sparse_pages

    paper = snakemake("paper", "--cores", "2", "--configfile", str(config_path), cwd=workdir)
    assert paper.returncode == 0, paper.stderr[-4000:]
    pdf = workdir / "results" / "demo" / "paper" / "paper.pdf"
    tex = pdf.with_suffix(".tex").read_text()
    assert "Prompt-grouped 3-fold" in tex and "5-fold" not in tex
    assert small_text(pdf) == [] and sparse_pages(pdf) == []
    report = workdir / "results" / "demo" / "report.html"
    args = ("--configfile", str(config_path), "--report", str(report), "all", "paper")
    made = snakemake(*args, cwd=workdir)
    assert made.returncode == 0, made.stderr[-4000:]
    assert "paper.pdf" in report.read_text(errors="replace")
    assert not (workdir / "report.html").exists()


def job_counts(result: subprocess.CompletedProcess) -> dict[str, str]:
    output = result.stdout + result.stderr
    return dict(re.findall(r"^(\w+)\s+(\d+)\s*$", output, flags=re.MULTILINE))


def test_paper_grid_dry_run_lists_every_job_without_data(tmp_path: Path) -> None:
    shutil.copytree(REPO / "config", tmp_path / "config")
    result = snakemake(
        "-n", "--cores", "8", "--configfile", str(tmp_path / "config" / "paper.yaml"), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-4000:]
    counts = job_counts(result)
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    splits_per_model = sum(
        p["folds"] * p.get("repeats", 1) * len(p.get("models", paper["models"]))
        for p in paper["protocols"].values()
    )
    # Every dataset x every (protocol, model, split): 5 grouped + 10 image-level + 5 grouped
    # test-selected + 10 replica + 5 grouped test-selected on kfold_grouped's training sets.
    assert splits_per_model == 35 * len(paper["models"])
    assert counts["train_fold"] == str(len(paper["datasets"]) * splits_per_model)
    assert counts["verify_dataset"] == "4"
    assert counts["manifest"] == "4"
    assert counts["split"] == str(4 * len(paper["protocols"]))
    assert counts["split_info"] == counts["split"]  # each split file described, for agiqa evaluate
    assert counts["aggregate"] == "1"
    assert counts["describe"] == "3"  # published descriptions exist for 1K, 3K and 2023
    assert counts["download_dataset"] == "4"
    assert counts["dvc_track"] == "1"
    # Cross-dataset (pairs: all): one train/val split per dataset, one training job per
    # (dataset, model that trains), one prediction job per (ordered pair of datasets, model).
    from agiqa.models import MODELS as REGISTERED

    trainable = [m for m, e in paper["models"].items() if REGISTERED.get(e["type"]).trainable]
    assert paper["cross_dataset"]["pairs"] == "all" and "models" not in paper["cross_dataset"]
    n_datasets = len(paper["datasets"])
    assert counts["cross_split"] == str(n_datasets)
    assert counts["cross_train"] == str(n_datasets * len(trainable))
    assert counts["cross_predict"] == str(n_datasets * (n_datasets - 1) * len(trainable))


def test_config_values_never_reach_a_shell(tmp_path: Path) -> None:
    # A root with shell syntax and spaces: the steps get it as an argument, nothing runs it.
    workdir = tmp_path / "work"
    (workdir / "config").mkdir(parents=True)
    config = small_config()
    config["datasets"]["synthetic"]["root"] = "data/my data $(touch PWNED) `touch PWNED2`"
    config["datasets"]["synthetic"]["synthesize"].update(n_prompts=6, images_per_prompt=2)
    config_path = workdir / "config" / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    target = "results/demo/manifests/synthetic.csv"
    result = snakemake(target, "--cores", "1", "--configfile", str(config_path), cwd=workdir)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (workdir / target).exists()
    assert (workdir / "data/my data $(touch PWNED) `touch PWNED2`/data.csv").exists()
    assert not list(workdir.rglob("PWNED*"))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c: c["datasets"].update({"syn$(touch X)": c["datasets"]["synthetic"]}),
            "does not match",
        ),
        (lambda c: c.update(seeed=3), "Additional properties are not allowed ('seeed'"),
        (
            lambda c: c["models"]["clip_residual"].update(residual_scale=0.2),
            "models.clip_residual: unknown setting(s) ['residual_scale']",
        ),
    ],
)
def test_bad_names_and_typos_fail_the_dry_run(tmp_path: Path, edit, message: str) -> None:
    config = small_config()
    edit(config)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", str(config_path), cwd=tmp_path)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not list(tmp_path.rglob("X"))


def test_dvc_tracking_is_opt_in_per_dataset(tmp_path: Path) -> None:
    shutil.copytree(REPO / "config", tmp_path / "config")
    paper = yaml.safe_load((tmp_path / "config" / "paper.yaml").read_text())
    for entry in paper["datasets"].values():
        entry.pop("dvc", None)
    (tmp_path / "config" / "untracked.yaml").write_text(yaml.safe_dump(paper))
    result = snakemake(
        "-n", "--configfile", str(tmp_path / "config" / "untracked.yaml"), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "dvc_track" not in job_counts(result)


def test_an_existing_dataset_folder_is_used_as_is(tmp_path: Path) -> None:
    # A root anywhere that already exists: no download job, no marker, no DVC step.
    root = tmp_path / "elsewhere" / "my agiqa-3k"
    root.mkdir(parents=True)
    config = {
        "experiment": "own",
        "datasets": {"agiqa-3k": {"reader": "agiqa-3k", "root": str(root)}},
        "protocols": {"kfold_grouped": {"type": "kfold_grouped", "folds": 5}},
        "models": {"zs": {"type": "clip_zeroshot"}},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", str(tmp_path / "config.yaml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    counts = job_counts(result)
    assert counts["verify_dataset"] == "1"
    assert "download_dataset" not in counts and "dvc_track" not in counts
