"""Names of the figure files, importable without matplotlib (the workflow declares them)."""

from __future__ import annotations

from collections.abc import Sequence

FORMATS = ("pdf", "png")
#: Figures drawn once per dataset; ``protocols`` is drawn once for all.
PER_DATASET = ("scatter", "splits", "generators")


def figure_files(datasets: Sequence[str], cross_dataset: bool = False) -> list[str]:
    """Every figure file ``agiqa.report.figures.render_figures`` writes for these datasets (and,
    with ``cross_dataset``, the cross-dataset heat map)."""
    stems = [f"{kind}-{dataset}" for dataset in datasets for kind in PER_DATASET]
    stems += ["protocols", *(["cross_dataset"] if cross_dataset else [])]
    return [f"{stem}.{fmt}" for stem in stems for fmt in FORMATS]
