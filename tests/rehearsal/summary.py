"""Per-job time and peak memory of the rehearsal, from Snakemake's benchmark files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def benchmarks(repo: Path) -> pd.DataFrame:
    """One row per benchmarked job: rule, model, dataset, wall and CPU seconds, max_rss (MB),
    and for a fold job the seconds before its first batch (start, imports, model and data)."""
    rows = []
    for path in sorted((repo / "benchmarks").rglob("*.tsv")):
        parts = path.relative_to(repo / "benchmarks").parts  # experiment/rule/...
        table = pd.read_csv(path, sep="\t")
        rule, rest = parts[1], parts[2:]
        model = dataset = ""
        setup = float("nan")
        if rule == "train":  # train/{protocol}/{dataset}/{model}/split{k}.tsv
            rule, dataset, model = "train_fold", rest[1], rest[2]
            log = repo / "logs" / parts[0] / "train" / Path(*rest).with_suffix(".log")
            setup = setup_seconds(log)
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
                "cpu_seconds": float(table["cpu_time"].iloc[0]),
                "max_rss_mb": float(table["max_rss"].iloc[0]),
                "setup_seconds": setup,
            }
        )
    return pd.DataFrame(rows)


def setup_seconds(log: Path) -> float:
    """Seconds from a fold job's first log line to the line announcing its parts."""
    if not log.is_file():
        return float("nan")
    stamps = []
    for line in log.read_text(errors="replace").splitlines():
        if line[:4].isdigit() and len(line) > 23:
            stamp = pd.to_datetime(line[:23], format="%Y-%m-%d %H:%M:%S,%f", errors="coerce")
            if not pd.isna(stamp):
                stamps.append(stamp)
                if " train / " in line:
                    return (stamp - stamps[0]).total_seconds()
    return float("nan")


def per_kind(frame: pd.DataFrame) -> pd.DataFrame:
    """Jobs, mean wall, CPU and setup seconds and the largest peak RSS per rule and model."""
    grouped = frame.groupby(["rule", "model"], sort=True)
    return grouped.agg(
        jobs=("seconds", "size"),
        mean_s=("seconds", "mean"),
        max_s=("seconds", "max"),
        mean_cpu_s=("cpu_seconds", "mean"),
        setup_s=("setup_seconds", "median"),
        peak_rss_mb=("max_rss_mb", "max"),
    ).reset_index()


def write(repo: Path, workspace: Path, timings: dict[str, float], wall: float) -> str:
    """``summary.md`` and ``summary.json`` in the workspace; returns the Markdown."""
    jobs = benchmarks(repo)
    kinds = per_kind(jobs) if len(jobs) else pd.DataFrame()
    lines = [f"# Paper rehearsal: {wall / 60:.1f} min wall time", "", "| step | seconds |"]
    lines += ["| --- | ---: |"] + [f"| {k} | {v:.0f} |" for k, v in timings.items()]
    if len(kinds):
        lines += ["", "Benchmarked jobs (Snakemake `benchmark:`; setup: seconds before the first"]
        lines += ["batch of a fold job, median):", ""]
        lines += ["| rule | model | jobs | mean s | max s | mean CPU s | setup s | peak RSS MB |"]
        lines += ["| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for row in kinds.itertuples():
            setup = "-" if pd.isna(row.setup_s) else f"{row.setup_s:.0f}"
            lines.append(
                f"| {row.rule} | {row.model or '-'} | {row.jobs} | {row.mean_s:.0f} | "
                f"{row.max_s:.0f} | {row.mean_cpu_s:.0f} | {setup} | {row.peak_rss_mb:.0f} |"
            )
        lines.append(
            f"\nBenchmarked jobs: {len(jobs)}, {jobs['seconds'].sum():.0f} s of job time, "
            f"{jobs['cpu_seconds'].sum():.0f} CPU seconds."
        )
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
