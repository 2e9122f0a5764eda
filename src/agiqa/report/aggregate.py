"""Collect finished training runs into tables, significance tests, MLflow and the terminal.

A run directory ``results/<experiment>/runs/{protocol}/{dataset}/{model}/split{k}/`` holds
``metrics.json`` (the job's bookkeeping: protocol, split, provenance), ``predictions.csv`` (test)
and ``val_predictions.csv`` (validation, empty for protocols without a validation part),
``config.yaml`` and ``history.csv``; a run whose selection rule picks PLCC separately (SCVA-AGIQA's,
in the test-selection protocols) adds ``predictions_best_plcc.csv``, from which its PLCC metrics
are computed. Every reported number is recomputed here from the prediction files, with the
logistic mapping the config selects, so a change of mapping or significance settings reruns this
step only, never a training job.

``aggregate`` also writes the paper's tables (agiqa.report.paper_tables), the figures
(agiqa.report.figures), ``paper.json`` for the paper builder (agiqa.report.paper), and logs
everything to MLflow (agiqa.track.mlflow_log).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pandas as pd

from agiqa.evaluate.metrics import (
    CORRELATIONS,
    METRICS,
    compute_metrics,
    mean_confidence_interval,
    summarize,
)

# The types the report modules share live below them (no import circle).
from agiqa.report.results import (
    PARTS,
    SEPARATE_PLCC_METRICS,
    ReportSettings,
    RunResult,
    load_runs,
    metric_part,
)

if TYPE_CHECKING:
    from agiqa.report.names import DisplayNames

GROUP_KEYS = ("protocol", "dataset", "dimension", "model", "part")
RUN_KEYS = ("protocol", "dataset", "model", "split", "dimension", "part")


def collect_runs(
    runs: Sequence[RunResult], logistic: str = "logistic4", metrics: Sequence[str] = METRICS
) -> pd.DataFrame:
    """One row per (protocol, dataset, model, split, dimension, part), metrics recomputed.

    Rows keep the order of ``runs`` so tables list models in the order the pipeline configured
    them. ``test_train_ratio`` (for Nadeau and Bengio's correction) and the run's identity
    travel along. A run that selected PLCC separately takes its test PLCC metrics from the
    best-PLCC epoch's predictions (``metric_part``), as its seed code reports them. Metrics not
    in ``metrics`` (default all) are left NaN.
    """
    rows = []
    for run in runs:
        for part in PARTS:
            for dim in run.dimensions():
                scores = run.scores(part, dim)
                if scores is None:
                    continue
                row: dict[str, Any] = {
                    "protocol": run.protocol,
                    "dataset": run.dataset,
                    "model": run.model,
                    "split": run.split,
                    "dimension": dim,
                    "part": part,
                    "n_images": len(scores.images),
                    "test_train_ratio": run.protocol_spec.test_train_ratio,
                    "config_hash": run.config_hash,
                    "split_sha256": run.split_sha256,
                    "run_dir": str(run.path),
                }
                row.update(compute_metrics(scores.pred, scores.target, logistic, metrics))
                separate = [m for m in SEPARATE_PLCC_METRICS if m in metrics]
                if separate and metric_part(run, part, separate[0]) != part:
                    best_plcc = run.scores("best_plcc", dim)
                    if best_plcc is not None:
                        row.update(
                            compute_metrics(best_plcc.pred, best_plcc.target, logistic, separate)
                        )
                rows.append(row)
    columns = [
        *RUN_KEYS,
        "n_images",
        "test_train_ratio",
        "config_hash",
        "split_sha256",
        "run_dir",
        *METRICS,
    ]
    return pd.DataFrame(rows, columns=columns)


def summarize_runs(per_split: pd.DataFrame) -> pd.DataFrame:
    """Per (protocol, dataset, dimension, model, part): mean, sample std (ddof=1) and the 95%
    confidence interval of the mean over splits (Student t with Nadeau and Bengio's variance
    correction for overlapping training sets; see ``mean_confidence_interval``), clipped to
    [-1, 1] for correlations.

    A single split gets std 0.0 and no interval; a NaN in any split makes that metric NaN.
    """
    rows = []
    for keys, group in per_split.groupby(list(GROUP_KEYS), sort=False):
        row: dict[str, Any] = dict(zip(GROUP_KEYS, keys, strict=True))
        row["n_splits"] = int(group["split"].nunique())
        # The split file(s) behind the row, which the captions cite (normally one).
        row["split_sha256"] = " ".join(dict.fromkeys(group["split_sha256"].astype(str)))
        ratio = float(group["test_train_ratio"].iloc[0])
        for metric in METRICS:
            values = group[metric].tolist()
            row[f"{metric}_mean"], row[f"{metric}_std"] = summarize(values)
            low, high = mean_confidence_interval(values, ratio)
            if metric in CORRELATIONS:  # a t interval knows nothing of the [-1, 1] range
                low, high = max(low, -1.0), min(high, 1.0)
            row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = low, high
        rows.append(row)
    columns = [*GROUP_KEYS, "n_splits", "split_sha256"] + [
        f"{m}_{s}" for m in METRICS for s in ("mean", "std", "ci_low", "ci_high")
    ]
    return pd.DataFrame(rows, columns=columns)


class Results(NamedTuple):
    """What the tables are made of (``results_of``)."""

    per_split: pd.DataFrame
    summary: pd.DataFrame
    comparisons: pd.DataFrame
    marks: dict[tuple[str, ...], str]
    sensitivity: pd.DataFrame
    #: protocol -> its protocol type
    types: dict[str, str]
    #: single-factor protocol contrasts (agiqa.report.compare.protocol_contrasts)
    contrasts: pd.DataFrame
    #: dataset -> (manifest frame, dimensions) of the runs' manifests (those still there)
    manifests: dict[str, tuple[pd.DataFrame, list]]


def results_of(runs: Sequence[RunResult], settings: ReportSettings) -> Results:
    """Metrics per split recomputed from the predictions, their summary, the pairwise tests, the
    significance marks, the protocol-sensitivity study and contrasts: what ``aggregate`` and
    ``agiqa evaluate`` (agiqa.evaluate.external) both make their tables of. Bootstraps resample
    the prompt groups the runs' manifests give (images alone where a manifest is gone)."""
    from agiqa.report.compare import (
        compare_models,
        groups_from_manifests,
        protocol_contrasts,
        protocol_sensitivity,
        significance_marks,
    )
    from agiqa.report.pooled import load_manifests

    per_split = collect_runs(runs, settings.logistic)
    summary = summarize_runs(per_split)
    manifests = load_manifests(runs)
    groups = groups_from_manifests(manifests)
    comparisons = compare_models(runs, per_split, settings, groups)
    marks = significance_marks(summary, comparisons, settings)
    sensitivity = protocol_sensitivity(runs, per_split, settings, groups)
    contrasts = protocol_contrasts(runs, per_split, settings, groups)
    types = {run.protocol: str(run.protocol_settings["type"]) for run in runs}
    return Results(per_split, summary, comparisons, marks, sensitivity, types, contrasts, manifests)


def report_files(paths: Mapping[str, Path], datasets: Sequence[str]) -> dict[str, list[Path]]:
    """Which tables and figures each dataset's MLflow parent runs carry ("" = every parent)."""
    shared = (
        "main.",
        "val.",
        "combined.",
        "sensitivity.",
        "datasets.",
        "protocols.",
        "protocol_factors.",
    )
    files: dict[str, list[Path]] = {"": [p for n, p in paths.items() if n.startswith(shared)]}
    for dataset in datasets:
        # Per-dataset files are <kind>-<dataset>.<ext>; kinds hold no hyphen, datasets may.
        files[dataset] = [
            p for n, p in paths.items() if n.rsplit(".", 1)[0].partition("-")[2] == dataset
        ]
    return files


def aggregate(
    run_dirs: Sequence[Path],
    tables_dir: Path,
    tracking_uri: str,
    experiment: str,
    settings: ReportSettings | None = None,
    *,
    names: DisplayNames | None = None,
    figures_dir: Path | None = None,
    cross_dataset: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """Collect, summarize, test; write every table (and figure); log to MLflow; print the main
    table.

    Args:
        run_dirs: Finished fold-job folders.
        tables_dir: Where the tables (and ``paper.json``, what the paper builder reads) go.
        tracking_uri: MLflow tracking URI.
        experiment: MLflow experiment name.
        settings: The config's ``report`` section.
        names: Display names (agiqa.report.names.DisplayNames); default: identifiers, and the
            dimension and protocol names of ``settings.display_names``.
        figures_dir: Where the figures go; None (or ``settings.figures`` off) draws none.
        cross_dataset: Hook for train-on-A / test-on-B results (columns train_dataset,
            test_dataset, model, dimension, srcc, plcc): adds their table and figure.
    """
    from agiqa.report.names import DisplayNames
    from agiqa.report.paper import paper_info
    from agiqa.report.paper_tables import PaperInputs, render_paper_tables
    from agiqa.report.pooled import generator_scores, pooled_predictions
    from agiqa.report.tables import render_all
    from agiqa.track.mlflow_log import log_to_mlflow  # lazy: importing mlflow takes seconds

    settings = settings or ReportSettings()
    names = names or DisplayNames(
        dimensions=settings.display_names, protocols=settings.display_names
    )
    runs = load_runs(run_dirs)
    if not runs:
        raise ValueError("no finished runs to aggregate")
    # Protocol labels state the fold and repeat counts the runs were trained with.
    names = names.with_protocol_settings({run.protocol: run.protocol_settings for run in runs})
    results = results_of(runs, settings)
    per_split, summary, comparisons, marks, sensitivity, types, contrasts, manifests = results
    tables_dir = Path(tables_dir)
    paths = render_all(
        summary, comparisons, marks, sensitivity, tables_dir, settings, types, contrasts
    )
    reference = _reference(runs, settings)
    inputs = PaperInputs(
        summary,
        comparisons,
        marks,
        sensitivity,
        settings,
        types,
        names,
        reference,
        manifests,
        cross_dataset,
    )
    written, tables = render_paper_tables(inputs, tables_dir)
    paths |= written
    generators = {d: m.set_index("image")["generator"] for d, (m, _) in manifests.items()}
    per_generator = generator_scores(pooled_predictions(runs, reference), generators)
    paths["generators.csv"] = tables_dir / "generators.csv"
    per_generator.to_csv(paths["generators.csv"], index=False)
    figures: dict[str, Path] = {}
    if settings.figures and figures_dir is not None:
        from agiqa.report.figures import render_figures  # lazy: matplotlib

        figures = render_figures(
            runs,
            per_split,
            summary,
            sensitivity,
            per_generator,
            Path(figures_dir),
            names=names,
            types=types,
            reference=reference,
            logistic=settings.logistic,
            cross_dataset=cross_dataset,
        )
    info = paper_info(runs, settings, names, reference, tables, sorted(figures))
    paths["paper.json"] = tables_dir / "paper.json"
    paths["paper.json"].write_text(json.dumps(info, indent=2, default=str) + "\n")
    datasets = list(dict.fromkeys(run.dataset for run in runs))
    logged = log_to_mlflow(
        runs, per_split, tracking_uri, experiment, report=report_files(paths | figures, datasets)
    )
    print(paths["main.md"].read_text())
    if "protocols.md" in paths:
        print(paths["protocols.md"].read_text())
    print(
        f"tables: {tables_dir} ({len(paths)} files)"
        + (f"\nfigures: {figures_dir} ({len(figures)} files)" if figures else "")
        + f"\nmlflow: {logged['parents']} parent and {logged['children']} child runs in "
        f"experiment '{experiment}' at {tracking_uri}"
    )
    return paths | figures


def _reference(runs: Sequence[RunResult], settings: ReportSettings) -> str:
    """The protocol the combined table, significance matrices and figures show."""
    from agiqa.report.compare import reference_protocol

    return reference_protocol(runs, settings) or runs[0].protocol
