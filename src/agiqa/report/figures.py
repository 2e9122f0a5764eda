"""The paper's figures (matplotlib): PDF for LaTeX, PNG for the HTML report and the README.

Written by ``render_figures`` into ``results/<experiment>/figures/``:

- ``scatter-<dataset>``: predicted score against MOS per model (columns) and dimension (rows),
  pooled test predictions of the reference protocol, with the fitted monotone logistic curve;
- ``splits-<dataset>``: per-split test SRCC of every model (one dot per split, per protocol),
  with the mean and its 95% confidence interval: the spread over splits;
- ``protocols``: each protocol's test SRCC minus the reference protocol's, with the 95%
  bootstrap interval of the difference;
- ``generators-<dataset>``: test SRCC per generator and model (pooled over the reference
  protocol's splits); ``generators.csv`` in the tables folder holds the numbers;
- ``cross_dataset`` (hook): train-on-A / test-on-B SRCC, from a frame given to ``aggregate``.

A figure with nothing to show (one protocol only, a dataset without generators) says so in its
body, so every declared output exists. Files carry no timestamps: reruns give identical bytes.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never needs a display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from agiqa.evaluate.metrics import fit_logistic, plcc, srcc
from agiqa.report.files import FORMATS
from agiqa.report.names import DisplayNames
from agiqa.report.paper_tables import MINUS, protocol_caption_label
from agiqa.report.pooled import pooled_predictions
from agiqa.report.results import RunResult

DPI = 200
#: Okabe-Ito: distinguishable with every common colour-vision deficiency.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
FULL_WIDTH = 6.5  # inches: the paper's text width (agiqa.report.paper.TEXT_WIDTH_IN)
#: The smallest text anywhere in a figure (pt): the paper places figures at their natural size.
FONT_SIZE = 8
#: About how wide a character is at ``FONT_SIZE`` (inches), for fitting labels.
CHAR_INCHES = 0.062
#: The tallest figure the paper places at its natural size (inches; 0.8 of the text height).
MAX_HEIGHT = 7.0
#: Most models side by side in one row of scatter panels.
SCATTER_COLUMNS = 4
STYLE = {
    "font.size": FONT_SIZE,
    "axes.titlesize": FONT_SIZE,
    "axes.labelsize": FONT_SIZE,
    "xtick.labelsize": FONT_SIZE,
    "ytick.labelsize": FONT_SIZE,
    "legend.fontsize": FONT_SIZE,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "pdf.fonttype": 42,  # TrueType in the PDF: text stays text, as publishers ask
    "svg.hashsalt": "agiqa",
    "axes.unicode_minus": True,
}


# --- data ------------------------------------------------------------------------------------


# --- drawing helpers -------------------------------------------------------------------------


def _grid(rows: int, columns: int, width: float, height: float) -> tuple[Figure, np.ndarray]:
    figure, axes = plt.subplots(
        rows, columns, figsize=(width, height), squeeze=False, layout="constrained"
    )
    return figure, axes


def message_figure(text: str) -> Figure:
    """A small figure that says why there is nothing to plot."""
    figure = plt.figure(figsize=(4, 1.2))
    figure.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    return figure


def _heatmap(ax: plt.Axes, values: np.ndarray, aspect: str) -> AxesImage:
    """Correlations on a diverging scale centred on 0 (red negative, blue positive), labelled."""
    image = ax.imshow(values, cmap="RdBu", vmin=-1.0, vmax=1.0, aspect=aspect)
    for (i, j), value in np.ndenumerate(values):
        text = "–" if np.isnan(value) else _signed(value)
        shade = "white" if not np.isnan(value) and abs(value) > 0.6 else "black"
        ax.text(j, i, text, ha="center", va="center", fontsize=FONT_SIZE, color=shade)
    return image


def _label_inches(models: Sequence[str], names: DisplayNames) -> float:
    """About how wide the longest model name is at the tick-label size."""
    return max((len(names.model(m)) for m in models), default=0) * CHAR_INCHES


def _signed(value: float, digits: int = 2) -> str:
    """Rounded, with a real minus sign; a value that rounds to zero has none (no "−0.00")."""
    text = f"{value:.{digits}f}"
    return text.lstrip("-") if float(text) == 0 else text.replace("-", MINUS)


# --- the figures -------------------------------------------------------------------------------


def scatter_figure(
    pooled: pd.DataFrame, dataset: str, names: DisplayNames, logistic: str = "logistic4"
) -> Figure:
    """Predicted score against MOS per model and dimension.

    Models run across at most ``SCATTER_COLUMNS`` columns, in blocks of rows (one row per
    dimension) when there are more. Each panel's SRCC and PLCC sit in its title, above the
    points, and a long model name wraps instead of running into its neighbour's.
    """
    block = pooled[pooled["dataset"] == dataset]
    if block.empty:
        return message_figure(f"No test predictions for {names.dataset(dataset)}.")
    dims = list(dict.fromkeys(block["dimension"]))
    models = list(dict.fromkeys(block["model"]))
    columns = min(SCATTER_COLUMNS, len(models))
    blocks = -(-len(models) // columns)
    width = min(FULL_WIDTH, 1.6 * columns + 0.4)
    # Never taller than the paper lets a figure be at its natural size (0.8 of 9 in).
    panel = min(1.75, (MAX_HEIGHT / blocks - 0.3) / len(dims))
    figure, axes = _grid(len(dims) * blocks, columns, width, (panel * len(dims) + 0.3) * blocks)
    wrap = max(10, int((width / columns - 0.25) / CHAR_INCHES))
    for k in range(len(models), blocks * columns):  # the last block's empty places
        for i in range(len(dims)):
            axes[(k // columns) * len(dims) + i, k % columns].set_visible(False)
    for k, model in enumerate(models):
        first_row, column = (k // columns) * len(dims), k % columns
        for i, dim in enumerate(dims):
            ax = axes[first_row + i, column]
            part = block[(block["dimension"] == dim) & (block["model"] == model)]
            stats = _scatter_panel(ax, part, logistic)
            title = textwrap.fill(names.model(model), wrap) + "\n" if i == 0 else ""
            ax.set_title(title + stats)
            if column == 0:
                ax.set_ylabel(f"{names.dimension(dim)} MOS")
            if i == len(dims) - 1:
                ax.set_xlabel("predicted")
    return figure


def _scatter_panel(ax: plt.Axes, part: pd.DataFrame, logistic: str) -> str:
    """Draw the points and the fitted logistic; return the panel's "SRCC · PLCC" line."""
    pred, target = part["pred"].to_numpy(), part["target"].to_numpy()
    ax.scatter(pred, target, s=4, alpha=0.45, color=PALETTE[0], linewidths=0, rasterized=True)
    fit = fit_logistic(pred, target, logistic) if len(pred) > 5 else None
    # The linear limit (no increasing curve fits) is not on the MOS scale: nothing to draw.
    if fit is not None and not fit.linear_limit and np.ptp(pred) > 0:
        grid = np.linspace(pred.min(), pred.max(), 200)
        ax.plot(grid, fit(grid), color=PALETTE[3], linewidth=1.2)
    if len(pred) <= 2:
        return ""
    return f"SRCC {_signed(srcc(pred, target))} · PLCC {_signed(plcc(pred, target))}"


def splits_figure(
    per_split: pd.DataFrame,
    summary: pd.DataFrame,
    dataset: str,
    names: DisplayNames,
    types: Mapping[str, str],
) -> Figure:
    """Per-split test SRCC (dots), the mean (bar) and its 95% CI (whisker), per dimension."""
    test = per_split[(per_split["part"] == "test") & (per_split["dataset"] == dataset)]
    if test.empty:
        return message_figure(f"No test results for {names.dataset(dataset)}.")
    dims = list(dict.fromkeys(test["dimension"]))
    models = list(dict.fromkeys(test["model"]))
    protocols = list(dict.fromkeys(test["protocol"]))
    width = min(FULL_WIDTH, max(3.4, (0.5 * len(models) * len(protocols) + 0.6) * len(dims)))
    # Rotated model names take height; long ones take more.
    figure, axes = plt.subplots(
        1,
        len(dims),
        figsize=(width, 2.0 + _label_inches(models, names) * 0.71),
        squeeze=False,
        layout="constrained",
        sharey=True,  # one scale: panels compare at a glance
    )
    means = summary[(summary["part"] == "test") & (summary["dataset"] == dataset)]
    rng = np.random.default_rng(0)  # fixed jitter: identical files on rerun
    step = 0.8 / len(protocols)
    for ax, dim in zip(axes[0], dims, strict=True):
        for k, protocol in enumerate(protocols):
            offset = -0.4 + step * (k + 0.5)
            color = PALETTE[k % len(PALETTE)]
            for x, model in enumerate(models):
                values = test[
                    (test["dimension"] == dim)
                    & (test["model"] == model)
                    & (test["protocol"] == protocol)
                ]["srcc"].to_numpy(float)
                if not len(values):
                    continue
                jitter = rng.uniform(-0.25, 0.25, len(values)) * step
                ax.scatter(x + offset + jitter, values, s=9, color=color, alpha=0.8, zorder=3)
                _mean_and_interval(ax, means, (protocol, model, dim), x + offset, step, color)
        ax.axhline(0, color="0.6", linewidth=0.6)
        # 45 degrees: one-line names of neighbouring models never touch.
        shown = [names.model(m) for m in models]
        ax.set_xticks(range(len(models)), shown, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_title(names.dimension(dim))
    axes[0, 0].set_ylabel("test SRCC per split")
    if len(protocols) > 1:
        protocol_legend(figure, protocols, types, names)
    return figure


def _mean_and_interval(
    ax: plt.Axes, means: pd.DataFrame, key: tuple[str, str, str], x: float, step: float, color: str
) -> None:
    protocol, model, dim = key
    row = means[
        (means["protocol"] == protocol) & (means["model"] == model) & (means["dimension"] == dim)
    ]
    if row.empty or np.isnan(row["srcc_mean"].iloc[0]):
        return
    mean = float(row["srcc_mean"].iloc[0])
    ax.bar(x, mean, width=0.8 * step, color=color, alpha=0.18, zorder=1)
    low, high = float(row["srcc_ci_low"].iloc[0]), float(row["srcc_ci_high"].iloc[0])
    if np.isfinite(low) and np.isfinite(high):
        ax.errorbar(
            x,
            mean,
            yerr=[[mean - low], [high - mean]],
            color=color,
            capsize=2,
            linewidth=1,
            zorder=2,
        )


def protocols_figure(
    sensitivity: pd.DataFrame, names: DisplayNames, types: Mapping[str, str]
) -> Figure:
    """Each protocol's test SRCC minus the reference protocol's, with 95% intervals that count
    training variance (agiqa.report.compare.protocol_sensitivity)."""
    if sensitivity.empty or "delta_srcc" not in sensitivity:
        return message_figure("One protocol only: nothing to compare with.")
    others = sensitivity[sensitivity["protocol"] != sensitivity["reference"]]
    panels = list(dict.fromkeys(zip(others["dataset"], others["dimension"], strict=True)))
    protocols = list(dict.fromkeys(others["protocol"]))
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    models = list(dict.fromkeys(others["model"]))
    height = 0.35 * len(models) * max(1, len(protocols) / 2) + 0.9
    labels = _label_inches(models, names)
    width = min(FULL_WIDTH, (2.2 + labels) * columns + 0.4)
    figure, axes = _grid(rows, columns, width, height * rows)
    step = 0.8 / len(protocols)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (dataset, dim) in zip(axes.flat, panels, strict=False):
        block = others[(others["dataset"] == dataset) & (others["dimension"] == dim)]
        for k, protocol in enumerate(protocols):
            rows_k = block[block["protocol"] == protocol].set_index("model")
            for y, model in enumerate(models):
                if model not in rows_k.index:
                    continue
                row = rows_k.loc[model]
                delta = float(row["delta_srcc"])
                low, high = float(row["delta_srcc_ci_low"]), float(row["delta_srcc_ci_high"])
                position = y - 0.4 + step * (k + 0.5)
                ax.errorbar(
                    delta,
                    position,
                    xerr=[[delta - low], [high - delta]],
                    fmt="o",
                    markersize=3.5,
                    capsize=2,
                    linewidth=1,
                    color=PALETTE[k % len(PALETTE)],
                )
        ax.axvline(0, color="0.4", linewidth=0.7)
        ax.set_yticks(range(len(models)), [names.model(m) for m in models])
        ax.invert_yaxis()
        ax.set_title(f"{names.dataset(dataset)}: {names.dimension(dim)}")
        reference = names.protocol(str(block["reference"].iloc[0]))
        ax.set_xlabel(f"Δ test SRCC vs {reference}")
    protocol_legend(figure, protocols, types, names)
    return figure


def generators_figure(scores: pd.DataFrame, dataset: str, names: DisplayNames) -> Figure:
    """Heat maps of test SRCC per model (rows) and generator (columns), one per dimension."""
    block = scores[scores["dataset"] == dataset]
    if block.empty or block["generator"].nunique() < 1:
        return message_figure(f"{names.dataset(dataset)}: no generator recorded.")
    dims = list(dict.fromkeys(block["dimension"]))
    models = list(dict.fromkeys(block["model"]))
    generators = sorted(block["generator"].unique())
    width = min(FULL_WIDTH, (0.45 * len(generators) + 1.6) * len(dims) + 0.6)
    width = min(FULL_WIDTH, width + _label_inches(models, names) * len(dims))
    figure, axes = _grid(1, len(dims), width, 0.32 * len(models) + 1.4)
    image = None
    for ax, dim in zip(axes[0], dims, strict=True):
        table = block[block["dimension"] == dim].pivot_table(
            index="model", columns="generator", values="srcc", aggfunc="first", dropna=False
        )
        table = table.reindex(index=models, columns=generators)
        image = _heatmap(ax, table.to_numpy(float), aspect="auto")
        ax.set_xticks(range(len(generators)), generators, rotation=45, ha="right")
        ax.set_yticks(range(len(models)), [names.model(m) for m in models])
        ax.set_title(names.dimension(dim))
        for side in ("left", "bottom"):
            ax.spines[side].set_visible(False)
    if image is not None:
        figure.colorbar(image, ax=list(axes[0]), label="test SRCC", shrink=0.9)
    return figure


def protocol_legend(
    figure: Figure, protocols: list[str], types: Mapping[str, str], names: DisplayNames
) -> None:
    """One marker per protocol, in the palette order the panels use, below the panels."""
    handles = [
        plt.Line2D([], [], marker="o", linestyle="", color=PALETTE[k % len(PALETTE)])
        for k in range(len(protocols))
    ]
    labels = [protocol_caption_label(p, types, names) for p in protocols]
    figure.legend(handles, labels, loc="outside lower center", ncols=min(4, len(protocols)))


def cross_dataset_figure(frame: pd.DataFrame, names: DisplayNames) -> Figure:
    """Hook for cross-dataset results: SRCC heat maps, training set (rows) x test set (columns),
    one panel per model and dimension. ``frame`` has train_dataset, test_dataset, model,
    dimension and srcc columns."""
    if frame.empty:
        return message_figure("No cross-dataset results.")
    panels = list(dict.fromkeys(zip(frame["model"], frame["dimension"], strict=True)))
    datasets = list(dict.fromkeys([*frame["train_dataset"], *frame["test_dataset"]]))
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = _grid(rows, columns, min(FULL_WIDTH, 2.0 * columns + 0.8), 2.0 * rows + 0.4)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    image = None
    for ax, (model, dim) in zip(axes.flat, panels, strict=False):
        block = frame[(frame["model"] == model) & (frame["dimension"] == dim)]
        table = block.pivot_table(
            index="train_dataset", columns="test_dataset", values="srcc", aggfunc="first"
        ).reindex(index=datasets, columns=datasets)
        image = _heatmap(ax, table.to_numpy(float), aspect="equal")
        shown = [names.dataset(d) for d in datasets]
        ax.set_xticks(range(len(datasets)), shown, rotation=45, ha="right")
        ax.set_yticks(range(len(datasets)), shown)
        ax.set_title(f"{names.model(model)}: {names.dimension(dim)}")
        ax.set_xlabel("tested on")
        ax.set_ylabel("trained on")
    if image is not None:
        figure.colorbar(image, ax=list(axes.flat), label="SRCC", shrink=0.8)
    return figure


# --- writing ---------------------------------------------------------------------------------


def save(figure: Figure, out_dir: Path, stem: str) -> dict[str, Path]:
    """``<stem>.pdf`` and ``<stem>.png`` without timestamps (identical bytes on rerun)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    metadata = {
        "pdf": {"CreationDate": None, "ModDate": None, "Producer": "agiqa"},
        "png": {"Software": "agiqa"},
    }
    for fmt in FORMATS:
        path = out_dir / f"{stem}.{fmt}"
        figure.savefig(path, dpi=DPI, metadata=metadata[fmt])
        paths[path.name] = path
    plt.close(figure)
    return paths


def render_figures(
    runs: Sequence[RunResult],
    per_split: pd.DataFrame,
    summary: pd.DataFrame,
    sensitivity: pd.DataFrame,
    generator_table: pd.DataFrame,
    out_dir: Path,
    *,
    names: DisplayNames,
    types: Mapping[str, str],
    reference: str,
    logistic: str = "logistic4",
    cross_dataset: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """Write every figure; returns ``{"scatter-<dataset>.png": path, ...}``."""
    out_dir = Path(out_dir)
    pooled = pooled_predictions(runs, reference)
    datasets = list(dict.fromkeys(run.dataset for run in runs))
    paths: dict[str, Path] = {}
    with plt.rc_context(STYLE):
        for dataset in datasets:
            paths |= save(
                scatter_figure(pooled, dataset, names, logistic), out_dir, f"scatter-{dataset}"
            )
            paths |= save(
                splits_figure(per_split, summary, dataset, names, types),
                out_dir,
                f"splits-{dataset}",
            )
            paths |= save(
                generators_figure(generator_table, dataset, names), out_dir, f"generators-{dataset}"
            )
        paths |= save(protocols_figure(sensitivity, names, types), out_dir, "protocols")
        if cross_dataset is not None:  # declared by the workflow: drawn even when empty
            paths |= save(cross_dataset_figure(cross_dataset, names), out_dir, "cross_dataset")
    return paths
