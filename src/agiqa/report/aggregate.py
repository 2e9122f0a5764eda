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
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from agiqa.data.splits import Protocol
from agiqa.evaluate.metrics import (
    CORRELATIONS,
    METRICS,
    compute_metrics,
    mean_confidence_interval,
    summarize,
)
from agiqa.evaluate.significance import SplitScores

if TYPE_CHECKING:
    from agiqa.report.names import DisplayNames

GROUP_KEYS = ("protocol", "dataset", "dimension", "model", "part")
RUN_KEYS = ("protocol", "dataset", "model", "split", "dimension", "part")
INFO_KEYS = ("n_train", "n_val", "n_test", "best_epoch", "epochs_run", "seconds")
PARTS = ("test", "val")
PREDICTION_FILES = {
    "test": "predictions.csv",
    "val": "val_predictions.csv",
    "best_plcc": "predictions_best_plcc.csv",
}
#: Metrics taken from the best-PLCC epoch's test predictions when a run selected PLCC separately.
SEPARATE_PLCC_METRICS = ("plcc", "plcc_logistic")
_REQUIRED = ("dataset", "model", "protocol", "split", "protocol_settings", "provenance")


@dataclass(frozen=True)
class ReportSettings:
    """The config's ``report`` section: how numbers are computed and marked."""

    precision: int = 3
    logistic: str = "logistic4"
    alpha: float = 0.05
    #: The test behind best/tie marks: ``corrected_t`` (counts training variance) or
    #: ``bootstrap`` (over prompt groups; treats the trained models as fixed).
    significance_test: str = "corrected_t"
    resamples: int = 2000
    seed: int = 0
    reference_protocol: str | None = None
    #: Metrics shown in the tables (the CSV files carry every metric).
    metrics: tuple[str, ...] = ("srcc", "plcc", "plcc_logistic")
    #: Draw the figures (seconds; off for the quickest runs).
    figures: bool = True
    #: Compile the paper PDF as part of the workflow's default target.
    pdf: bool = False
    #: Dimension (or protocol) identifier -> the name readers see in the paper's outputs.
    display_names: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: dict | None) -> ReportSettings:
        config = dict(config or {})
        unknown = set(config) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown report settings {sorted(unknown)}")
        if "metrics" in config:
            config["metrics"] = tuple(config["metrics"])
        if "display_names" in config:
            config["display_names"] = {str(k): str(v) for k, v in config["display_names"].items()}
        return cls(**config)


@dataclass(frozen=True)
class RunResult:
    """One finished split: its identity from ``metrics.json`` and access to its predictions."""

    path: Path
    protocol: str
    dataset: str
    model: str
    split: int
    config_hash: str
    protocol_settings: dict
    provenance: dict
    info: dict[str, float] = field(default_factory=dict)
    _frames: dict[str, pd.DataFrame] = field(default_factory=dict, compare=False, repr=False)

    @property
    def split_sha256(self) -> str:
        return str(self.provenance.get("split_sha256", ""))

    @property
    def commit(self) -> str:
        return str(self.provenance.get("commit", "unknown"))

    @property
    def key(self) -> str:
        """The identity of the experiment this split belongs to (its MLflow parent).

        A new split file, config or code version never reuses (or overwrites) an older run.
        """
        return "/".join(
            (
                self.protocol,
                self.dataset,
                self.model,
                self.config_hash,
                self.split_sha256[:12],
                self.commit[:12],
            )
        )

    @cached_property
    def protocol_spec(self) -> Protocol:
        return Protocol.from_config(self.protocol_settings)

    def predictions(self, part: str) -> pd.DataFrame:
        if part not in self._frames:
            path = self.path / PREDICTION_FILES[part]
            try:
                self._frames[part] = pd.read_csv(path, dtype={"image": str})
            except FileNotFoundError as error:
                raise ValueError(f"{path}: missing (did the training job finish?)") from error
        return self._frames[part]

    def dimensions(self) -> list[str]:
        columns = self.predictions("test").columns
        return [c.removeprefix("pred_") for c in columns if c.startswith("pred_")]

    def scores(self, part: str, dimension: str) -> SplitScores | None:
        """Predictions and targets of a part, sorted by image; None when the part is empty."""
        frame = self.predictions(part).sort_values("image", kind="stable")
        if frame.empty:
            return None
        pred_column, target_column = f"pred_{dimension}", f"target_{dimension}"
        for column in (pred_column, target_column):
            if column not in frame.columns:
                raise ValueError(f"{self.path / PREDICTION_FILES[part]}: no column '{column}'")
        return SplitScores(
            self.split,
            frame["image"].to_numpy(),
            frame[pred_column].to_numpy(float),
            frame[target_column].to_numpy(float),
        )


def metric_part(run: RunResult, part: str, metric: str) -> str:
    """The prediction part ``metric`` of ``part`` is computed from: ``best_plcc`` for the PLCC
    metrics of a run that selected PLCC separately (SCVA-AGIQA's rule), else ``part``."""
    if part != "test" or metric not in SEPARATE_PLCC_METRICS:
        return part
    separate = "best_plcc" in run._frames or (run.path / PREDICTION_FILES["best_plcc"]).is_file()
    return "best_plcc" if separate else part


def load_run(run_dir: Path) -> RunResult:
    """Read ``run_dir/metrics.json``; raise ValueError naming the file when it is incomplete."""
    path = Path(run_dir) / "metrics.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise ValueError(f"{path}: missing (did the training job finish?)") from error
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise ValueError(f"{path}: missing keys {missing} (written by an older agiqa: rerun it)")
    return RunResult(
        path=Path(run_dir),
        protocol=str(raw["protocol"]),
        dataset=str(raw["dataset"]),
        model=str(raw["model"]),
        split=int(raw["split"]),
        config_hash=str(raw.get("config_hash", "")),
        protocol_settings=dict(raw["protocol_settings"]),
        provenance=dict(raw["provenance"]),
        info={k: _number(raw.get(k)) for k in INFO_KEYS if k in raw},
    )


def _number(value: Any) -> float:
    # JSON has no NaN; writers emit null (or Python's NaN literal) for an undefined value.
    return math.nan if value is None else float(value)


def load_runs(run_dirs: Iterable[Path]) -> list[RunResult]:
    """The runs in input order; two directories reporting the same split are refused."""
    runs = [load_run(Path(d)) for d in dict.fromkeys(Path(d) for d in run_dirs)]
    seen: dict[tuple, Path] = {}
    for run in runs:
        identity = (run.protocol, run.dataset, run.model, run.split)
        if identity in seen:
            raise ValueError(
                "the same split is reported by more than one run directory: "
                f"{sorted([str(seen[identity]), str(run.path)])}"
            )
        seen[identity] = run.path
    return runs


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
        ratio = float(group["test_train_ratio"].iloc[0])
        for metric in METRICS:
            values = group[metric].tolist()
            row[f"{metric}_mean"], row[f"{metric}_std"] = summarize(values)
            low, high = mean_confidence_interval(values, ratio)
            if metric in CORRELATIONS:  # a t interval knows nothing of the [-1, 1] range
                low, high = max(low, -1.0), min(high, 1.0)
            row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = low, high
        rows.append(row)
    columns = [*GROUP_KEYS, "n_splits"] + [
        f"{m}_{s}" for m in METRICS for s in ("mean", "std", "ci_low", "ci_high")
    ]
    return pd.DataFrame(rows, columns=columns)


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
    from agiqa.report.compare import (
        compare_models,
        groups_from_manifests,
        protocol_contrasts,
        protocol_sensitivity,
        significance_marks,
    )
    from agiqa.report.names import DisplayNames
    from agiqa.report.paper import paper_info
    from agiqa.report.paper_tables import PaperInputs, render_paper_tables
    from agiqa.report.pooled import generator_scores, load_manifests, pooled_predictions
    from agiqa.report.tables import render_all
    from agiqa.track.mlflow_log import log_to_mlflow  # lazy: importing mlflow takes seconds

    settings = settings or ReportSettings()
    names = names or DisplayNames(
        dimensions=settings.display_names, protocols=settings.display_names
    )
    runs = load_runs(run_dirs)
    if not runs:
        raise ValueError("no finished runs to aggregate")
    per_split = collect_runs(runs, settings.logistic)
    summary = summarize_runs(per_split)
    manifests = load_manifests(runs)
    groups = groups_from_manifests(manifests)
    comparisons = compare_models(runs, per_split, settings, groups)
    marks = significance_marks(summary, comparisons, settings)
    sensitivity = protocol_sensitivity(runs, per_split, settings, groups)
    contrasts = protocol_contrasts(runs, per_split, settings, groups)
    types = {run.protocol: str(run.protocol_settings["type"]) for run in runs}
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
