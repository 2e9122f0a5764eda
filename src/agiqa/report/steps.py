"""The report rules' steps (aggregate, paper) as plain functions their thin scripts call.

Config values arrive as Python arguments, never through a shell, and every step logs to its
job's log file (agiqa.steps.job_log).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from agiqa.steps import job_log

if TYPE_CHECKING:
    import pandas as pd

    from agiqa.report.results import ReportSettings

log = logging.getLogger("agiqa.steps")


def aggregate_step(
    runs: Sequence[str],
    tables: str,
    figures: str | None,
    db: str,
    experiment: str,
    report: Mapping,
    names: Mapping | None,
    log_file: str | None,
    cross: Sequence[str] = (),
) -> None:
    """Tables, figures, significance tests and MLflow runs from every finished fold job.

    ``cross`` lists finished cross-dataset prediction folders (agiqa.cross_dataset): they get
    their own table (``cross_dataset.csv``, .tex, .html) and figure, never the in-dataset ones.
    """
    from agiqa.pipeline import tracking_uri
    from agiqa.report.aggregate import aggregate
    from agiqa.report.names import DisplayNames
    from agiqa.report.results import ReportSettings

    with job_log(log_file):
        settings = ReportSettings.from_config(dict(report))
        aggregate(
            [Path(r) for r in runs],
            Path(tables),
            tracking_uri(db),
            experiment,
            settings,
            names=DisplayNames.from_dict(names),
            figures_dir=Path(figures) if figures else None,
            cross_dataset=cross_results(cross, Path(tables), settings) if cross else None,
        )


def cross_results(folders: Sequence[str], tables: Path, settings: ReportSettings) -> pd.DataFrame:
    """The cross-dataset results, also written as ``cross_dataset.csv`` with the tables
    (metrics with the report's logistic, intervals with its resamples and seed)."""
    from agiqa.cross_dataset import collect_results

    frame = collect_results(folders, settings.logistic, settings.resamples, settings.seed)
    tables.mkdir(parents=True, exist_ok=True)
    frame.to_csv(tables / "cross_dataset.csv", index=False)
    log.info("%d cross-dataset results from %d prediction jobs", len(frame), len(folders))
    return frame


def paper_step(tables: str, figures: str, out: str, experiment: str, log_file: str | None) -> None:
    """The compiled paper from the aggregation's tables and figures."""
    from agiqa.report.paper import build_paper

    with job_log(log_file):
        pdf = build_paper(Path(tables), Path(figures), Path(out).parent, experiment)
        if pdf != Path(out):
            raise RuntimeError(f"the paper was written to {pdf}, not to {out}")
        log.info("wrote %s", pdf)
