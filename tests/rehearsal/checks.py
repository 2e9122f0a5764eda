"""What the rehearsal requires of the paper run's outputs (test tooling)."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import yaml

from agiqa.cross_dataset import cross_settings, predict_dirs
from agiqa.describe.runner import CACHED, DESCRIBED
from agiqa.models import MODELS
from agiqa.pipeline import grid, layout_of
from agiqa.resources import job_mem_mb
from agiqa.weights import weights_needed


class RehearsalFailed(Exception):
    """A check of the rehearsal failed; the message says which and why."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise RehearsalFailed(message)


def every_need_fetched(output: str, paper: Mapping) -> None:
    """``agiqa weights fetch`` printed ``fetched: <need>`` for every pretrained backbone."""
    for need in weights_needed(dict(paper)):
        require(f"fetched: {need.kind} {need.name}" in output, f"weights fetch skipped {need}")


def merged_config(repo: Path) -> dict:
    """The config the rehearsal ran: paper.yaml, the rehearsal overlay, the endpoints."""
    from rehearsal.overlay import merged

    paper = yaml.safe_load((repo / "config" / "paper.yaml").read_text())
    rehearsal = yaml.safe_load((repo / "config" / "paper-rehearsal.yaml").read_text())
    return merged(paper, rehearsal)


def outputs(repo: Path) -> None:
    """Every grid cell trained (>= 1 step) and tested; cross pairs, tables, MLflow, paper."""
    config = merged_config(repo)
    layout = layout_of(config)
    commits = _git_history(repo)
    protocols: set[str] = set()
    cells: set[tuple[str, str]] = set()
    for protocol, dataset, model, split in grid(config):
        run = repo / layout.run_dir(protocol, dataset, model, split)
        predictions = pd.read_csv(run / "predictions.csv")
        require(len(predictions) > 0, f"{run}: no test predictions")
        if MODELS.get(config["models"][model]["type"]).trainable:
            history = pd.read_csv(run / "history.csv")
            require(len(history) >= 1, f"{run}: trained no epoch")
        commit = yaml.safe_load((run / "config.yaml").read_text())["provenance"]["commit"]
        # a resumed rehearsal's runs carry the snapshot's commit or a later one of its history
        require(commit in commits, f"{run}: recorded commit {commit} is not in the repository")
        protocols.add(protocol)
        cells.add((model, dataset))
    require(protocols == set(config["protocols"]), f"protocols that ran: {sorted(protocols)}")
    every = {(m, d) for m in config["models"] for d in config["datasets"]}
    require(cells == every, f"cells that never ran: {sorted(every - cells)}")
    settings = cross_settings(config)
    require(settings is not None and bool(settings.pairs), "no cross-dataset pair ran")
    for folder in predict_dirs(config, layout):
        require((repo / folder / "metrics.json").is_file(), f"{folder}: no cross-dataset metrics")
    tables = repo / layout.tables_dir()
    for name in ("main.md", "val.md", "protocols.md", "cross_dataset.csv"):
        require((tables / name).is_file(), f"missing table {tables / name}")
    pdf = repo / layout.results / "paper" / "paper.pdf"
    require(pdf.is_file() and pdf.read_bytes()[:5] == b"%PDF-", f"no paper PDF at {pdf}")
    require(_mlflow_runs(repo / config["mlflow"]["db"]) > 0, "no MLflow run was recorded")
    for dataset in config["datasets"]:
        if dataset != "aigiqa-20k":  # SCVA-AGIQA published no AIGIQA-20K descriptions
            table = repo / layout.results / "descriptions" / dataset / "published.csv"
            descriptions_complete(table, repo, dataset)


def memory_covered(repo: Path, jobs: pd.DataFrame) -> None:
    """Every fold job's and cross-dataset training's peak RSS (its benchmark's ``max_rss``) is
    within the ``mem_mb`` its rule reserved: an estimate below the peak lets Snakemake start jobs
    side by side beyond the ``--resources mem_mb`` budget."""
    config = merged_config(repo)
    layout = layout_of(config)
    reserved: dict[tuple[str, str], int] = {}
    for row in jobs[jobs["rule"].isin(["train_fold", "cross_train"])].itertuples():
        key = (row.model, row.dataset)
        if key not in reserved:
            with contextlib.chdir(repo):  # the config's dataset roots are relative to it
                manifest = layout.manifest(row.dataset)
                reserved[key] = job_mem_mb(config, row.model, row.dataset, manifest, row.dataset)
        require(
            row.max_rss_mb <= reserved[key],
            f"{row.model} on {row.dataset}: peak RSS {row.max_rss_mb:.0f} MB, but its rule "
            f"reserves mem_mb={reserved[key]} (raise agiqa.resources.MEASURED_MB)",
        )


def _git_history(repo: Path) -> set[str]:
    """Every commit reachable from HEAD (a ``-dirty`` commit is in none)."""
    done = subprocess.run(
        ["git", "rev-list", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    )
    return set(done.stdout.split())


def _mlflow_runs(db: Path) -> int:
    require(db.is_file(), f"no MLflow store at {db}")
    with sqlite3.connect(db) as connection:
        return int(connection.execute("select count(*) from runs").fetchone()[0])


def descriptions_complete(table: Path, repo: Path, dataset: str) -> None:
    """A description table with one described row per manifest image."""
    require(table.is_file(), f"no description table {table}")
    rows = pd.read_csv(table, keep_default_na=False)
    manifest = pd.read_csv(repo / "results" / "paper" / "manifests" / f"{dataset}.csv")
    require(set(rows["image"]) == set(manifest["image"]), f"{table}: not one row per image")
    failed = rows[~rows["status"].isin([DESCRIBED, CACHED])]
    require(failed.empty, f"{table}: {len(failed)} images without a description")


def pointers_staged(staged: Sequence[str], names: Sequence[str]) -> None:
    wanted = {f"data/raw/{name}.dvc" for name in names} | {"data/raw/.gitignore"}
    require(wanted <= set(staged), f"dvc_track staged {sorted(staged)}, expected {sorted(wanted)}")


def clean(status: str, where: str) -> None:
    require(not status.strip(), f"`git status` is not clean in {where}:\n{status}")


def unchanged(before: str, after: str) -> None:
    require(before == after, f"the checkout's `git status` changed:\n{before}\n->\n{after}")


def same_files(first: Path, second: Path, relative: Sequence[str]) -> None:
    """The files (and their .json companions) are byte-identical in both trees."""
    for name in relative:
        for path in (name, str(Path(name).with_suffix(".json"))):
            a, b = (_sha256(root / path) for root in (first, second))
            require(a == b, f"{path}: sha256 {a} in the repository, {b} in the fresh clone")


def _sha256(path: Path) -> str:
    require(path.is_file(), f"missing {path}")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def nothing_to_do(dry_run: str) -> None:
    require("Nothing to be done" in dry_run, f"a rerun would run jobs again:\n{dry_run[-3000:]}")
