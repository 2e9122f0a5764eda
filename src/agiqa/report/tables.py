"""Results tables (LaTeX booktabs fragment, Markdown, CSV) from the per-split summary.

Rows are models (grouped by protocol when there are several); columns are a three-level header
dataset / dimension / metric. Cells show mean ± sample std over splits. Per column, and per
protocol, the best value is bold and the second best underlined, ranked on the values rounded to
the displayed precision with each metric's direction (RMSE: lower is better). Ties share a mark;
the ranking is dense, so after a tie for best the next distinct value is still second. NaN cells
show a dash and are never ranked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from agiqa.evaluate.metrics import HIGHER_IS_BETTER, METRICS

DISPLAY_NAMES = {
    "srcc": "SRCC",
    "krcc": "KRCC",
    "plcc": "PLCC",
    "plcc_logistic": "PLCC (logistic)",
    "rmse": "RMSE",
}
LATEX_NAMES = {**DISPLAY_NAMES, "plcc_logistic": r"PLCC$_\mathrm{log}$"}
BEST, SECOND = "best", "second"
_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}

Column = tuple[str, str, str]  # dataset, dimension, metric
Row = tuple[str, str]  # protocol, model


@dataclass(frozen=True)
class Cell:
    """One displayed table cell: rounded strings and its rank mark (None when unranked)."""

    mean: str | None
    std: str | None
    mark: str | None = None


@dataclass(frozen=True)
class Grid:
    """The table independent of output format."""

    rows: list[Row]
    columns: list[Column]
    cells: dict[tuple[Row, Column], Cell]
    multi_protocol: bool
    caption: str  # plain text; each renderer formats it


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters in plain text."""
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in str(text))


def format_number(value: float, precision: int) -> str | None:
    """Round for display; None for NaN. Negative zero prints as zero."""
    if value is None or math.isnan(value):
        return None
    text = f"{value:.{precision}f}"
    return f"{0.0:.{precision}f}" if float(text) == 0 else text


def rank_marks(values: Sequence[str | None], higher_is_better: bool) -> list[str | None]:
    """Mark the best and second-best displayed values (dense ranking; ties share a mark)."""
    distinct = sorted({float(v) for v in values if v is not None}, reverse=higher_is_better)
    marks = dict(zip(distinct[:2], (BEST, SECOND), strict=False))
    return [None if v is None else marks.get(float(v)) for v in values]


def build_grid(summary: pd.DataFrame, metrics: Sequence[str], precision: int) -> Grid:
    """Lay out the summary as rows x columns of formatted, ranked cells."""
    _check_summary(summary, metrics)
    protocols = list(dict.fromkeys(summary["protocol"]))
    model_rows = dict.fromkeys(zip(summary["protocol"], summary["model"], strict=True))
    # Keep each protocol's models together so every protocol forms one block of rows.
    rows = [row for protocol in protocols for row in model_rows if row[0] == protocol]
    datasets = list(dict.fromkeys(summary["dataset"]))
    pairs = list(dict.fromkeys(zip(summary["dataset"], summary["dimension"], strict=True)))
    # Group columns by dataset even when the summary interleaves datasets.
    columns = [(ds, dim, m) for ds in datasets for d, dim in pairs if d == ds for m in metrics]
    lookup = {
        (r.protocol, r.model, r.dataset, r.dimension): r for r in summary.itertuples(index=False)
    }
    cells: dict[tuple[Row, Column], Cell] = {}
    for column in columns:
        for protocol in protocols:
            block = [row for row in rows if row[0] == protocol]
            cells.update(_rank_block(block, column, lookup, precision))
    return Grid(rows, columns, cells, len(protocols) > 1, _caption(summary, protocols, metrics))


def _check_summary(summary: pd.DataFrame, metrics: Sequence[str]) -> None:
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {METRICS}")
    needed = ["protocol", "model", "dataset", "dimension", "n_splits"]
    needed += [f"{m}_{s}" for m in metrics for s in ("mean", "std")]
    missing = [c for c in needed if c not in summary.columns]
    if missing:
        raise ValueError(f"summary lacks columns {missing}")
    if summary.empty:
        raise ValueError("summary is empty: no finished runs to tabulate")


def _rank_block(
    block: list[Row], column: Column, lookup: dict, precision: int
) -> dict[tuple[Row, Column], Cell]:
    dataset, dim, metric = column
    raw: list[tuple[str | None, str | None]] = []
    for protocol, model in block:
        entry = lookup.get((protocol, model, dataset, dim))
        if entry is None:
            raw.append((None, None))
            continue
        mean = format_number(getattr(entry, f"{metric}_mean"), precision)
        # With one split there is no spread to show; "± 0.000" would suggest there was.
        std = format_number(getattr(entry, f"{metric}_std"), precision)
        raw.append((mean, std if mean is not None and entry.n_splits > 1 else None))
    marks = rank_marks([mean for mean, _ in raw], HIGHER_IS_BETTER[metric])
    return {
        (row, column): Cell(mean, std, mark)
        for row, (mean, std), mark in zip(block, raw, marks, strict=True)
    }


def _caption(summary: pd.DataFrame, protocols: list[str], metrics: Sequence[str]) -> str:
    parts = []
    for protocol in protocols:
        counts = summary.loc[summary["protocol"] == protocol, "n_splits"]
        low, high = int(counts.min()), int(counts.max())
        n = str(low) if low == high else f"{low}–{high}"
        parts.append(f"{n} split{'s' if high > 1 else ''} of the {protocol} protocol")
    direction = " (RMSE: lower is better)" if "rmse" in metrics else ""
    return (
        "Test results: mean ± sample standard deviation (ddof=1) over "
        + "; ".join(parts)
        + f". Best per column in bold, second best underlined{direction}."
    )


# --- LaTeX -----------------------------------------------------------------------------------


def to_latex(grid: Grid) -> str:
    """A booktabs ``table`` fragment (no preamble) for ``\\input``."""
    lead = 2 if grid.multi_protocol else 1
    spec = "l" * lead + "c" * len(grid.columns)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{" + _latex_caption(grid.caption) + "}",
        r"\label{tab:main}",
        r"\begin{tabular}{" + spec + "}",
        r"\toprule",
        *_latex_header(grid, lead),
        r"\midrule",
        *_latex_body(grid),
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def _latex_caption(caption: str) -> str:
    return latex_escape(caption).replace("±", r"$\pm$").replace("–", "--")


def _spans(labels: list[tuple[str, ...]]) -> list[tuple[tuple[str, ...], int]]:
    """Run-length groups of consecutive equal labels."""
    spans: list[tuple[tuple[str, ...], int]] = []
    for label in labels:
        if spans and spans[-1][0] == label:
            spans[-1] = (label, spans[-1][1] + 1)
        else:
            spans.append((label, 1))
    return spans


def _latex_group_row(labels: list[tuple[str, ...]], lead: int) -> list[str]:
    cells, rules, start = [""] * lead, [], lead + 1
    for label, width in _spans(labels):
        cells.append(rf"\multicolumn{{{width}}}{{c}}{{{latex_escape(label[-1])}}}")
        rules.append(rf"\cmidrule(lr){{{start}-{start + width - 1}}}")
        start += width
    return [" & ".join(cells) + r" \\", " ".join(rules)]


def _latex_header(grid: Grid, lead: int) -> list[str]:
    datasets = [(ds,) for ds, _, _ in grid.columns]
    dims = [(ds, dim) for ds, dim, _ in grid.columns]
    names = ["Protocol", "Model"] if grid.multi_protocol else ["Model"]
    metric_row = names + [LATEX_NAMES[m] for _, _, m in grid.columns]
    return [
        *_latex_group_row(datasets, lead),
        *_latex_group_row(dims, lead),
        " & ".join(metric_row) + r" \\",
    ]


def _latex_cell(cell: Cell) -> str:
    if cell.mean is None:
        return "--"
    wrap = {BEST: r"\textbf", SECOND: r"\underline"}.get(cell.mark or "")
    text = f"{wrap}{{{cell.mean}}}" if wrap else cell.mean
    return text + (rf"{{\scriptsize$\pm${cell.std}}}" if cell.std is not None else "")


def _latex_body(grid: Grid) -> list[str]:
    lines: list[str] = []
    previous = None
    for row in grid.rows:
        protocol, model = row
        lead = [latex_escape(model)]
        if grid.multi_protocol:
            if previous is not None and protocol != previous:
                lines.append(r"\midrule")
            lead.insert(0, latex_escape(protocol) if protocol != previous else "")
            previous = protocol
        cells = [_latex_cell(grid.cells[(row, c)]) for c in grid.columns]
        lines.append(" & ".join(lead + cells) + r" \\")
    return lines


# --- Markdown --------------------------------------------------------------------------------


def _md_text(text: str) -> str:
    return str(text).replace("|", r"\|")


def _md_cell(cell: Cell) -> str:
    if cell.mean is None:
        return "–"
    mean = {BEST: f"**{cell.mean}**", SECOND: f"<u>{cell.mean}</u>"}.get(cell.mark or "", cell.mean)
    return mean + (f" ± {cell.std}" if cell.std is not None else "")


def to_markdown(grid: Grid) -> str:
    """A GitHub-flavoured Markdown table; the three header levels are joined with " / "."""
    names = ["Protocol", "Model"] if grid.multi_protocol else ["Model"]
    header = names + [_md_text(f"{ds} / {dim} / {DISPLAY_NAMES[m]}") for ds, dim, m in grid.columns]
    align = [":--"] * len(names) + [":-:"] * len(grid.columns)
    lines = [grid.caption, "", _md_row(header), _md_row(align)]
    for row in grid.rows:
        lead = [_md_text(row[0]), _md_text(row[1])] if grid.multi_protocol else [_md_text(row[1])]
        lines.append(_md_row(lead + [_md_cell(grid.cells[(row, c)]) for c in grid.columns]))
    return "\n".join(lines) + "\n"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


# --- CSV and entry point ---------------------------------------------------------------------


def to_wide_csv(summary: pd.DataFrame) -> pd.DataFrame:
    """Machine-readable summary: one row per (protocol, model, dataset, dimension), numbers only."""
    keys = ["protocol", "model", "dataset", "dimension", "n_splits"]
    values = [f"{m}_{s}" for m in METRICS for s in ("mean", "std") if f"{m}_{s}" in summary]
    return summary[keys + values].reset_index(drop=True)


def render_tables(
    summary: pd.DataFrame,
    out_dir: Path,
    metrics: Sequence[str] = ("srcc", "plcc_logistic"),
    precision: int = 3,
) -> dict[str, Path]:
    """Write ``main.tex``, ``main.md`` and ``main.csv`` into ``out_dir``.

    Returns:
        The written paths under the keys ``tex``, ``md`` and ``csv``.
    """
    grid = build_grid(summary, metrics, precision)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"tex": out_dir / "main.tex", "md": out_dir / "main.md", "csv": out_dir / "main.csv"}
    paths["tex"].write_text(to_latex(grid), encoding="utf-8")
    paths["md"].write_text(to_markdown(grid), encoding="utf-8")
    to_wide_csv(summary).to_csv(paths["csv"], index=False)
    return paths
