"""Per-job time and peak memory of the rehearsal, from Snakemake's benchmark files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def benchmarks(repo: Path) -> pd.DataFrame:
    """One row per benchmarked job: rule, model, dataset, seconds, max_rss (MB)."""
    rows = []
    for path in sorted((repo / "benchmarks").rglob("*.tsv")):
        parts = path.relative_to(repo / "benchmarks").parts  # experiment/rule/...
        table = pd.read_csv(path, sep="\t")
        rule, rest = parts[1], parts[2:]
        model = dataset = ""
        if rule == "train":  # train/{protocol}/{dataset}/{model}/split{k}.tsv
            rule, dataset, model = "train_fold", rest[1], rest[2]
        elif rule == "cross" and len(rest) >= 3:  # cross/{dataset}/{model}/train.tsv, ...
            dataset, model = rest[0], rest[1]
            rule = "cross_train" if rest[-1] == "train.tsv" else "cross_predict"
        else:  # {rule}/{dataset...}.tsv or {rule}.tsv
            dataset = "/".join(rest).removesuffix(".tsv")
            rule = rule.removesuffix(".tsv")
        rows.append(
            {
                "rule": rule,
                "model": model,
                "dataset": dataset,
                "seconds": float(table["s"].iloc[0]),
                "max_rss_mb": float(table["max_rss"].iloc[0]),
            }
        )
    return pd.DataFrame(rows)


def per_kind(frame: pd.DataFrame) -> pd.DataFrame:
    """Jobs, mean and max seconds and the largest peak RSS per rule and model."""
    grouped = frame.groupby(["rule", "model"], sort=True)
    return grouped.agg(
        jobs=("seconds", "size"),
        mean_s=("seconds", "mean"),
        max_s=("seconds", "max"),
        peak_rss_mb=("max_rss_mb", "max"),
    ).reset_index()


def write(repo: Path, workspace: Path, timings: dict[str, float], wall: float) -> str:
    """``summary.md`` and ``summary.json`` in the workspace; returns the Markdown."""
    jobs = benchmarks(repo)
    kinds = per_kind(jobs) if len(jobs) else pd.DataFrame()
    lines = [f"# Paper rehearsal: {wall / 60:.1f} min wall time", "", "| step | seconds |"]
    lines += ["| --- | ---: |"] + [f"| {k} | {v:.0f} |" for k, v in timings.items()]
    if len(kinds):
        lines += ["", "Benchmarked jobs (Snakemake `benchmark:`: wall seconds, peak RSS):", ""]
        lines += ["| rule | model | jobs | mean s | max s | peak RSS MB |"]
        lines += ["| --- | --- | ---: | ---: | ---: | ---: |"]
        for row in kinds.itertuples():
            lines.append(
                f"| {row.rule} | {row.model or '-'} | {row.jobs} | {row.mean_s:.0f} | "
                f"{row.max_s:.0f} | {row.peak_rss_mb:.0f} |"
            )
        lines.append(f"\nSum of benchmarked job seconds: {jobs['seconds'].sum():.0f}")
    text = "\n".join(lines) + "\n"
    (workspace / "summary.md").write_text(text)
    record = {
        "wall_seconds": wall,
        "steps": timings,
        "jobs": jobs.to_dict(orient="records"),
    }
    (workspace / "summary.json").write_text(json.dumps(record, indent=1) + "\n")
    return text


def write_gpu(
    repo: Path, runs: list[str], workspace: Path, timings: dict[str, float], wall: float
) -> str:
    """The GPU variant's ``summary.md``: per fold job, seconds and images per second."""
    lines = [f"# GPU rehearsal: {wall / 60:.1f} min wall time", "", "| step | seconds |"]
    lines += ["| --- | ---: |"] + [f"| {k} | {v:.0f} |" for k, v in timings.items()]
    lines += ["", "| model | device | images (train/val/test) | job s | images/s |"]
    lines += ["| --- | --- | --- | ---: | ---: |"]
    for run in runs:
        metrics = json.loads((repo / run / "metrics.json").read_text())
        parts = [int(metrics.get(f"n_{part}", 0)) for part in ("train", "val", "test")]
        protocol, dataset, model, split = Path(run).parts[-4:]
        bench = (
            repo / "benchmarks" / "paper" / "train" / protocol / dataset / model / f"{split}.tsv"
        )
        seconds = float(pd.read_csv(bench, sep="\t")["s"].iloc[0])
        lines.append(
            f"| {model} | {metrics.get('device', '?')} | {'/'.join(map(str, parts))} | "
            f"{seconds:.0f} | {sum(parts) / seconds:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    (workspace / "summary.md").write_text(text)
    return text
