"""Tables that fit a paper, in LaTeX, HTML (pandas Styler) and Markdown, with display names.

- ``dataset-<name>``: one table per dataset. Rows are models, grouped under a spanning row per
  protocol; columns are dimension x metric. Cells: mean ± std over splits, the 95% CI below.
- ``combined``: every dataset side by side for the reference protocol, means only (the spread is
  in the per-dataset tables), as a two-column ``table*``.
- ``datasets``: what each dataset holds (images, prompt groups, generators, dimensions).
- ``cross_dataset``: a hook for train-on-A / test-on-B results (see ``cross_dataset_table``).

Every LaTeX table shrinks to the line width only when it is wider (a conditional
``\\resizebox``), so nothing is ever overfull; a table wider than a column is a ``table*``.
``fits_page`` says whether the combined table stays legible on a two-column page; when it would
not, the paper leaves it out and the per-dataset tables carry the numbers.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from agiqa.data.splits import PROTOCOLS
from agiqa.report.compare import BEST, TIE
from agiqa.report.names import DisplayNames
from agiqa.report.results import ReportSettings
from agiqa.report.tables import (
    DISPLAY_NAMES,
    LATEX_NAMES,
    Cell,
    Grid,
    Marks,
    build_grid,
    latex_escape,
    md_number,
    results_caption,
    significance_latex,
    spans,
    to_wide_csv,
)

log = logging.getLogger(__name__)

MINUS = "\u2212"
#: A text-mode minus from the math font (``\\textminus`` needs bitmap TS1 fonts without cm-super).
LATEX_MINUS = r"\ensuremath{-}"
#: Text width of the paper (10 pt, one column, 1 in margins on US letter: 6.5 in), in pt.
TEXT_WIDTH = 469.75
#: The paper has one column: a table is as wide as the text.
COLUMN_WIDTH = TEXT_WIDTH
#: Float placement: where the float is defined if it fits, else on top of a page.
PLACEMENT = "!htbp"
#: Approximate glyph widths (pt) at the table's \small (9 pt) and \footnotesize (8 pt) sizes:
#: no text in the paper is smaller than 8 pt.
_CHAR = {"small": 4.6, "footnote": 4.1}
_COLUMN_PADDING = 12.0  # 2 x \tabcolsep
#: Means-only tables set \tabcolsep to 4 pt: narrow numbers need less air.
_NARROW_PADDING = 8.0
#: Characters a metric's LaTeX header takes (PLCC$_\mathrm{log}$ is about six).
_HEADER_CHARS = {"srcc": 4, "krcc": 4, "plcc": 4, "plcc_logistic": 6, "rmse": 4, "rmse_logistic": 6}
#: Metric headers of the paper's tables: the "log" of a logistic metric is lowered at 8 pt (a
#: math subscript would be set at 6 pt, under the paper's smallest size).
PAPER_METRIC_NAMES = {
    **LATEX_NAMES,
    "plcc_logistic": r"PLCC\raisebox{-0.4ex}{\footnotesize log}",
    "rmse_logistic": r"RMSE\raisebox{-0.4ex}{\footnotesize log}",
}
#: The combined table's metrics (when the report shows them): the pair AGIQA papers report.
COMBINED_METRICS = ("srcc", "plcc_logistic")


text_number = md_number


def latex_number(text: str) -> str:
    return LATEX_MINUS + text[1:] if text.startswith("-") else text


def protocol_caption_label(protocol: str, types: Mapping[str, str], names: DisplayNames) -> str:
    """A protocol's name as a reader sees it; test-selected protocols say so."""
    kind = types.get(protocol, protocol)
    test_selected = kind in PROTOCOLS and PROTOCOLS.get(kind).selection == "test"
    return names.protocol(protocol, "test-selected" if test_selected else None)


@dataclass(frozen=True)
class PaperTable:
    """A grid plus how to show it: display names, cell style, float width and file stem."""

    grid: Grid
    names: DisplayNames
    types: Mapping[str, str]
    #: ``full``: mean ± std and the CI; ``mean``: the marked mean only.
    style: str = "full"
    stem: str = "table"

    @property
    def multi_dataset(self) -> bool:
        return len({column[0] for column in self.grid.columns}) > 1

    @property
    def width_pt(self) -> float:
        """Estimated natural width of the tabular (pt), from character counts."""
        return estimate_width(self)

    @property
    def wide(self) -> bool:
        """Wider than the text: the LaTeX version then stacks one block per dimension."""
        return self.width_pt > TEXT_WIDTH

    @property
    def fits_page(self) -> bool:
        """Fits the text width side by side at its natural size (never shrunk): what the
        combined table needs, since its point is every dataset in one row."""
        return not self.wide


# --- width estimate --------------------------------------------------------------------------


def _cell_width(cell: Cell, style: str) -> float:
    if cell.mean is None:
        return 2 * _CHAR["small"]
    width = len(cell.mean) * _CHAR["small"]
    if style == "mean":
        return width
    if cell.std is not None:
        width += (len(cell.std) + 1.5) * _CHAR["footnote"]
    ci = (len(cell.ci[0]) + len(cell.ci[1]) + 4) * _CHAR["footnote"] if cell.ci else 0.0
    return max(width, ci)


def estimate_width(table: PaperTable) -> float:
    """Sum over columns of the widest entry plus padding, widened where a spanning dimension or
    dataset name is wider than the columns under it."""
    grid, names = table.grid, table.names
    lead = max([len("Model")] + [len(names.model(m)) for _, m in grid.rows]) * _CHAR["small"]
    padding = _NARROW_PADDING if table.style == "mean" else _COLUMN_PADDING
    widths = []
    for column in grid.columns:
        header = _HEADER_CHARS[column[2]] * _CHAR["small"]
        cells = [_cell_width(grid.cells[row, column], table.style) for row in grid.rows]
        widths.append(max([header, *cells]) + padding)
    levels = [(1, names.dimension)] + ([(0, names.dataset)] if table.multi_dataset else [])
    for level, name_of in levels:
        start = 0
        for label, count in spans([column[: level + 1] for column in grid.columns]):
            under = sum(widths[start : start + count])
            need = len(name_of(label[-1])) * _CHAR["small"] + padding
            if need > under:  # spread the excess over the spanned columns
                for index in range(start, start + count):
                    widths[index] += (need - under) / count
            start += count
    return lead + padding + sum(widths)


# --- building --------------------------------------------------------------------------------


def dataset_tables(
    summary: pd.DataFrame,
    marks: Marks,
    settings: ReportSettings,
    types: Mapping[str, str],
    names: DisplayNames,
) -> dict[str, PaperTable]:
    """dataset -> its test-results table (every protocol, as row blocks)."""
    tables = {}
    test = summary[summary["part"] == "test"]
    for dataset in dict.fromkeys(test["dataset"]):
        rows = test[test["dataset"] == dataset]
        caption = f"{names.dataset(dataset)}. " + results_caption(
            rows, settings, "test", types, names
        )
        grid = build_grid(rows, settings.metrics, settings.precision, marks, "test", caption, types)
        grid = replace(grid, label=f"tab:dataset-{dataset}")
        tables[dataset] = PaperTable(grid, names, types, "full", f"dataset-{dataset}")
    return tables


def combined_table(
    summary: pd.DataFrame,
    marks: Marks,
    settings: ReportSettings,
    types: Mapping[str, str],
    names: DisplayNames,
    protocol: str,
) -> PaperTable:
    """Every dataset side by side for one protocol: means of SRCC and PLCC after the logistic
    (``COMBINED_METRICS``, those of them the report shows), so it fits two columns."""
    rows = summary[(summary["part"] == "test") & (summary["protocol"] == protocol)]
    metrics = [m for m in COMBINED_METRICS if m in settings.metrics] or list(settings.metrics)
    caption = (
        "Test results on every dataset, means over splits (spread, confidence intervals and "
        "raw PLCC in the per-dataset tables). "
        + results_caption(rows, settings, "test", types, names)
    )
    grid = build_grid(rows, metrics, settings.precision, marks, "test", caption, types)
    return PaperTable(replace(grid, label="tab:combined"), names, types, "mean", "combined")


# --- LaTeX -----------------------------------------------------------------------------------


#: Characters pdflatex's default input encoding cannot typeset, and what to write instead.
_UNICODE_LATEX = (
    ("±", r"$\pm$"),
    ("–", "--"),
    ("—", "---"),
    ("α", r"$\alpha$"),
    ("Δ", r"$\Delta$"),
    ("×", r"$\times$"),
    (MINUS, LATEX_MINUS),
)


def latex_text(text: str) -> str:
    """Plain text (a caption, a display name, a cell) as LaTeX: escaped, Unicode spelled out."""
    escaped = latex_escape(text)
    for plain, latex in _UNICODE_LATEX:
        escaped = escaped.replace(plain, latex)
    return escaped


_caption_latex = latex_text


def _latex_span_row(labels: list[tuple[str, ...]], names: list[str]) -> list[str]:
    cells, rules, start = [""], [], 2
    for (_, width), name in zip(spans(labels), names, strict=True):
        cells.append(rf"\multicolumn{{{width}}}{{c}}{{{latex_text(name)}}}")
        rules.append(rf"\cmidrule(lr){{{start}-{start + width - 1}}}")
        start += width
    return [" & ".join(cells) + r" \\", " ".join(rules)]


def _latex_header(table: PaperTable) -> list[str]:
    grid, names = table.grid, table.names
    lines = []
    if table.multi_dataset:
        datasets = [(ds,) for ds, _, _ in grid.columns]
        labels = [names.dataset(label[0]) for label, _ in spans(datasets)]
        lines += _latex_span_row(datasets, labels)
    dims = [(ds, dim) for ds, dim, _ in grid.columns]
    lines += _latex_span_row(dims, [names.dimension(label[1]) for label, _ in spans(dims)])
    metrics = [PAPER_METRIC_NAMES[m] for _, _, m in grid.columns]
    lines.append(" & ".join(["Model", *metrics]) + r" \\")
    return lines


def _latex_cell(cell: Cell, style: str) -> str:
    if cell.mean is None:
        return "--"
    wrap = {BEST: r"\textbf", TIE: r"\underline"}.get(cell.mark or "")
    mean = latex_number(cell.mean)
    text = f"{wrap}{{{mean}}}" if wrap else mean
    if style == "mean":
        return text
    if cell.std is not None:
        text += rf"\,{{\footnotesize$\pm${cell.std}}}"
    if cell.ci is None:
        return text
    low, high = (latex_number(v) for v in cell.ci)
    # A one-column inner tabular puts the interval under the mean: the column stays narrow.
    return (
        rf"\begin{{tabular}}[c]{{@{{}}c@{{}}}}{text}\\[-1pt]"
        rf"{{\footnotesize[{low}, {high}]}}\end{{tabular}}"
    )


def _latex_body(table: PaperTable) -> list[str]:
    grid, width = table.grid, len(table.grid.columns) + 1
    lines: list[str] = []
    previous = None
    for row in grid.rows:
        protocol, model = row
        if grid.multi_protocol and protocol != previous:
            if previous is not None:
                lines.append(r"\midrule")
            label = latex_text(protocol_caption_label(protocol, table.types, table.names))
            lines.append(rf"\multicolumn{{{width}}}{{l}}{{\textit{{{label}}}}} \\")
            previous = protocol
        cells = [_latex_cell(grid.cells[row, column], table.style) for column in grid.columns]
        lines.append(" & ".join([latex_text(table.names.model(model)), *cells]) + r" \\")
    return lines


def dimension_blocks(grid: Grid) -> list[Grid]:
    """The grid cut into one grid per (dataset, dimension) group of columns."""
    groups = list(dict.fromkeys(column[:2] for column in grid.columns))
    return [replace(grid, columns=[c for c in grid.columns if c[:2] == g]) for g in groups]


def _tabular(table: PaperTable) -> list[str]:
    return [
        r"\begin{tabular}{l" + "c" * len(table.grid.columns) + "}",
        r"\toprule",
        *_latex_header(table),
        r"\midrule",
        *_latex_body(table),
        r"\bottomrule",
        r"\end{tabular}",
    ]


def to_latex(table: PaperTable) -> str:
    """A ``table`` fragment for ``\\input``, at its natural size (never shrunk below 8 pt).

    A table wider than the text stacks one tabular per dimension (each with its own header),
    under one caption.
    """
    blocks = (
        [table]
        if not table.wide
        else [replace(table, grid=block) for block in dimension_blocks(table.grid)]
    )
    tabulars: list[str] = []
    for index, block in enumerate(blocks):
        if index:
            tabulars.append(r"\par\medskip")
        tabulars += _tabular(block)
    narrow = [r"\setlength{\tabcolsep}{4pt}"] if table.style == "mean" else []
    lines = [
        rf"\begin{{table}}[{PLACEMENT}]",
        r"\centering",
        r"\small",
        *narrow,
        r"\caption{" + _caption_latex(table.grid.caption) + "}",
        rf"\label{{{table.grid.label}}}",
        *tabulars,
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


# --- HTML and Markdown -------------------------------------------------------------------------


#: Styler's element-id prefix (random by default, which would change every rerun's HTML).
UUID = "agiqa"
#: How each output marks the best (bold) and tied-for-best (underlined) mean.
HTML_MARKS = {BEST: ("<b>", "</b>"), TIE: ("<u>", "</u>")}
MD_MARKS = {BEST: ("**", "**"), TIE: ("<u>", "</u>")}


def _text_cell(cell: Cell, style: str, marks: Mapping[str, tuple[str, str]]) -> str:
    """``mean ± std [low, high]`` with the mean wrapped in its mark (numbers only: no escaping)."""
    if cell.mean is None:
        return "–"
    before, after = marks.get(cell.mark or "", ("", ""))
    text = f"{before}{text_number(cell.mean)}{after}"
    if style == "mean":
        return text
    if cell.std is not None:
        text += f" ± {cell.std}"
    if cell.ci is not None:
        text += f" [{text_number(cell.ci[0])}, {text_number(cell.ci[1])}]"
    return text


def _frame(table: PaperTable, marks: Mapping[str, tuple[str, str]]) -> pd.DataFrame:
    """The table as text cells under display-name headers, marks spelled with ``marks``."""
    grid, names = table.grid, table.names
    columns = pd.MultiIndex.from_tuples(
        [
            ((names.dataset(ds),) if table.multi_dataset else ())
            + (names.dimension(dim), DISPLAY_NAMES[metric])
            for ds, dim, metric in grid.columns
        ],
        names=(["Dataset"] if table.multi_dataset else []) + ["Dimension", "Metric"],
    )
    labels = [(protocol_caption_label(p, table.types, names), names.model(m)) for p, m in grid.rows]
    index = (
        pd.MultiIndex.from_tuples(labels, names=["Protocol", "Model"])
        if grid.multi_protocol
        else pd.Index([m for _, m in labels], name="Model")
    )
    rows = [
        [_text_cell(grid.cells[row, column], table.style, marks) for column in grid.columns]
        for row in grid.rows
    ]
    return pd.DataFrame(rows, index=index, columns=columns)


TABLE_CSS = [
    {
        "selector": "",
        "props": "border-collapse: collapse; font-family: sans-serif; "
        "font-size: 13px; margin: 8px 0;",
    },
    {
        "selector": "caption",
        "props": "caption-side: top; text-align: left; font-size: 12px; "
        "color: #333; padding-bottom: 6px; max-width: 60em;",
    },
    {
        "selector": "th",
        "props": "padding: 3px 8px; text-align: center; border-bottom: 1px solid #999;",
    },
    {
        "selector": "th.row_heading",
        "props": "text-align: left; font-weight: normal; white-space: nowrap;",
    },
    {"selector": "td", "props": "padding: 3px 8px; text-align: center; white-space: nowrap;"},
]


def to_html(table: PaperTable) -> str:
    """A standalone HTML page with the table (pandas Styler), for reports and browsers.

    Labels are escaped; cells hold only generated numbers and the mark tags.
    """
    styler = (
        _frame(table, HTML_MARKS)
        .style.set_uuid(UUID)  # fixed element ids: identical files on rerun
        .format_index(escape="html", axis=0)
        .format_index(escape="html", axis=1)
        .set_caption(html.escape(table.grid.caption))
        .set_table_styles(TABLE_CSS)
    )
    return styler.to_html(doctype_html=True, encoding="utf-8")


def to_markdown(table: PaperTable) -> str:
    """A GitHub-flavoured Markdown table with display names; header levels joined by " / "."""
    text = _frame(table, MD_MARKS)
    lead = list(text.index.names)
    header = lead + [" / ".join(column) for column in text.columns]
    lines = [table.grid.caption, "", _md_row(header)]
    lines.append(_md_row([":--"] * len(lead) + [":-:"] * len(text.columns)))
    for label, row in text.iterrows():
        lead_cells = list(label) if isinstance(label, tuple) else [label]
        lines.append(_md_row(lead_cells + list(row)))
    return "\n".join(lines) + "\n"


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", r"\|") for c in cells) + " |"


# --- simple tables through pandas Styler ----------------------------------------------------


def styler_latex(frame: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs table of plain cells through ``Styler.to_latex``, at its natural size: a table
    wider than the text wraps its columns (``column_layout``) at \\small, else at
    \\footnotesize; one wider still is shrunk to the line as a last resort, with a warning (its
    text then falls under 8 pt)."""

    def cell(value: object) -> str:
        return "--" if pd.isna(value) else latex_number(latex_text(str(value)))

    # Row labels become ordinary columns: one header row, and no \multirow (a package the
    # paper does without).
    flat = _flat(frame)
    styler = flat.style.hide(axis="index").format(cell)
    styler = styler.format_index(latex_text, axis=1)
    size = "small"
    layout, width = column_layout(flat, size)
    if width > TEXT_WIDTH:
        size = "footnote"
        layout, width = column_layout(flat, size)
    tabular = styler.to_latex(hrules=True, multicol_align="c", column_format=layout)
    body = tabular.strip().splitlines()
    if width > TEXT_WIDTH:
        log.warning("table %s: %.0f pt wide, shrunk to the %.0f pt line", label, width, TEXT_WIDTH)
        body = [r"\resizebox{\linewidth}{!}{%", *body, "}"]
    lines = [
        rf"\begin{{table}}[{PLACEMENT}]",
        r"\centering",
        r"\small",
        r"\caption{" + _caption_latex(caption) + "}",
        rf"\label{{{label}}}",
        *([r"\footnotesize"] if size == "footnote" else []),
        *body,
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def column_layout(flat: pd.DataFrame, size: str = "small") -> tuple[str, float]:
    """The tabular's column format and estimated width (pt): text left-aligned, numbers
    centred; when wider than the text, the widest columns whose cells have spaces (names,
    "+0.008 [-0.005, 0.019]") wrap onto more lines, down to their longest word, until the table
    fits."""
    char = _CHAR[size]
    widths = [_column_chars(flat, column) * char for column in flat.columns]
    text = [not _numeric(flat[column]) for column in flat.columns]
    # A word cannot break: with 20% to spare for wide letters (M, W, _) the estimate misses.
    narrowest = [_longest_word(flat, column) * char * 1.2 for column in flat.columns]
    # Aim 5% under the text width: the character estimate runs short on wide letters.
    excess = sum(widths) + _COLUMN_PADDING * len(widths) - 0.95 * TEXT_WIDTH
    wrapped: dict[int, float] = {}
    for index in sorted(range(len(widths)), key=lambda i: -widths[i]):
        if excess <= 0 or widths[index] <= narrowest[index]:
            continue
        narrower = max(narrowest[index], widths[index] - excess)
        excess -= widths[index] - narrower
        wrapped[index] = widths[index] = narrower
    formats = []
    for i, is_text in enumerate(text):
        align = r"\raggedright" if is_text else r"\centering"
        if i in wrapped:
            formats.append(rf">{{{align}\arraybackslash}}p{{{wrapped[i]:.0f}pt}}")
        else:
            formats.append("l" if is_text else "c")
    return "".join(formats), (sum(widths) + _COLUMN_PADDING * len(widths)) / 0.95


def _longest_word(flat: pd.DataFrame, column: object) -> int:
    header = column if isinstance(column, tuple) else (column,)
    texts = [str(h) for h in header] + [str(v) for v in flat[column]]
    return max(len(word) for text in texts for word in (text.split() or [""]))


def _column_chars(flat: pd.DataFrame, column: object) -> int:
    header = column if isinstance(column, tuple) else (column,)
    return max([len(str(h)) for h in header] + [len(str(v)) for v in flat[column]])


def _numeric(values: pd.Series) -> bool:
    """A column of numbers (as numbers or as rounded text, intervals included)."""
    text = values.dropna().astype(str).str.replace(MINUS, "-")
    return bool(text.str.fullmatch(r"[-+\d.,/\[\] %]*|reference|–|--").all())


def styler_html(frame: pd.DataFrame, caption: str) -> str:
    """A standalone HTML page with a table of plain cells (pandas Styler), labels escaped."""
    styler = _flat(frame).style.set_uuid(UUID).hide(axis="index")
    styler = styler.format(escape="html", na_rep="–")
    styler = styler.format_index(escape="html", axis=1)
    styler = styler.set_caption(html.escape(caption)).set_table_styles(TABLE_CSS)
    return styler.to_html(doctype_html=True, encoding="utf-8")


def frame_width(frame: pd.DataFrame) -> float:
    """Estimated width (pt) of ``styler_latex``'s tabular of ``frame``."""
    return column_layout(_flat(frame))[1]


def _flat(frame: pd.DataFrame) -> pd.DataFrame:
    """Named row labels moved into columns (the header then takes one row, not two)."""
    return frame.reset_index() if any(frame.index.names) else frame


def dataset_overview(
    manifests: Mapping[str, pd.DataFrame], dimensions: Mapping[str, list], names: DisplayNames
) -> pd.DataFrame:
    """One row per dataset: labelled images, prompt groups, generators, dimensions and scales."""
    rows = []
    for dataset, frame in manifests.items():
        labelled = frame[frame["labelled"].astype(bool)] if "labelled" in frame else frame
        dims = ", ".join(
            f"{names.dimension(d.name)} ({_scale(d.low)}–{_scale(d.high)})"
            for d in dimensions[dataset]
        )
        rows.append(
            {
                "Dataset": names.dataset(dataset),
                "Images": f"{len(labelled):,}",
                "Prompt groups": f"{labelled['prompt_group'].nunique():,}",
                "Generators": f"{labelled['generator'].nunique():,}",
                "Dimensions (scale)": dims,
            }
        )
    return pd.DataFrame(rows).set_index("Dataset")


def _scale(value: float) -> str:
    return f"{value:g}"


# --- cross-dataset hook ----------------------------------------------------------------------

CROSS_DATASET_COLUMNS = (
    "train_dataset",
    "test_dataset",
    "model",
    "dimension",
    "srcc",
    "plcc_logistic",
)
CROSS_DATASET_CAPTION = (
    "Cross-dataset generalisation: trained on one dataset, tested on another: SRCC [95% "
    "interval] / PLCC after the monotone logistic. Intervals resample the test set's prompt "
    "groups with the trained model held fixed (one training run: training variance is not in "
    "them)."
)


def cross_dataset_frame(frame: pd.DataFrame, names: DisplayNames, precision: int) -> pd.DataFrame:
    """Train-on-A / test-on-B results as a table: rows model x training set, columns test set x
    dimension, cells "SRCC [CI] / PLCC (logistic)".

    Args:
        frame: One row per (train_dataset, test_dataset, model, dimension) with ``srcc`` and
            ``plcc_logistic`` (and, when present, ``srcc_ci_low``/``srcc_ci_high``; more columns
            are ignored).
    """
    missing = [c for c in CROSS_DATASET_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"cross-dataset results lack columns {missing}")

    def number(value: float, digits: int) -> str:
        return "–" if math.isnan(value) else text_number(f"{value:.{digits}f}")

    def cell(row: pd.Series) -> str:
        srcc = number(row["srcc"], precision)
        low, high = row.get("srcc_ci_low", math.nan), row.get("srcc_ci_high", math.nan)
        if not (math.isnan(low) or math.isnan(high)):
            srcc += f" [{number(low, precision - 1)}, {number(high, precision - 1)}]"
        return f"{srcc} / {number(row['plcc_logistic'], precision)}"

    table = frame.assign(
        Model=frame["model"].map(names.model),
        **{"Trained on": frame["train_dataset"].map(names.dataset)},
        **{"Tested on": frame["test_dataset"].map(names.dataset)},
        Dimension=frame["dimension"].map(names.dimension),
        value=frame.apply(cell, axis=1),
    )
    return table.pivot_table(
        index=["Model", "Trained on"],
        columns=["Tested on", "Dimension"],
        values="value",
        aggfunc="first",
        sort=False,
    )


# --- protocol sensitivity, significance, writing ------------------------------------------


def sensitivity_frame(
    sensitivity: pd.DataFrame, names: DisplayNames, types: Mapping[str, str], precision: int
) -> pd.DataFrame:
    """The protocol-sensitivity study with display names: SRCC, PLCC and their differences
    from the reference protocol with 95% intervals."""
    rows = []
    for row in sensitivity.to_dict("records"):
        shown = {
            "Dataset": names.dataset(row["dataset"]),
            "Model": names.model(row["model"]),
            "Dimension": names.dimension(row["dimension"]),
            "Protocol": protocol_caption_label(row["protocol"], types, names),
            "Splits": str(row["n_splits"]),
            "Changes": "–" if row["protocol"] == row["reference"] else str(row["changes"]),
        }
        for metric in ("srcc", "plcc"):
            shown[DISPLAY_NAMES[metric]] = _number(row.get(f"{metric}_mean"), precision)
            shown[f"Δ {DISPLAY_NAMES[metric]} [95% CI]"] = _delta(row, metric, precision)
        rows.append(shown)
    return pd.DataFrame(rows).set_index(["Dataset", "Model", "Dimension", "Protocol"])


def _number(value: float | None, precision: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:.{precision}f}"
    return text_number(f"{0.0:.{precision}f}" if float(text) == 0 else text)


def _delta(row: Mapping, metric: str, precision: int) -> str:
    if row["protocol"] == row["reference"]:
        return "reference"
    value = row.get(f"delta_{metric}", math.nan)
    if value is None or math.isnan(value):
        return "–"
    sign = "+" if value >= 0 else ""
    low = _number(row[f"delta_{metric}_ci_low"], precision)
    high = _number(row[f"delta_{metric}_ci_high"], precision)
    interval = "[–]" if "–" in (low, high) else f"[{low}, {high}]"
    paired = {"splits": "", "unpaired": "†"}.get(str(row.get("pairing")), "")
    return f"{sign}{_number(value, precision)} {interval}{paired}"


SENSITIVITY_CAPTION = (
    "Protocol sensitivity: test SRCC and PLCC per protocol (mean over splits), the factors in "
    "which each differs from {reference}, and the difference from {reference}. The 95% interval "
    "counts training variance: a corrected resampled t interval (Nadeau and Bengio) on the "
    "per-split differences where both protocols test identical folds; otherwise (†) each "
    "protocol's corrected variance of its mean, combined as in Welch's test. Test-selected "
    "protocols pick the epoch on the test split with the model's seed-code rule, as published "
    "code does: their numbers are inflated by design. Image-level protocols let one prompt's "
    "images fall on both sides."
)


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@dataclass(frozen=True)
class PaperInputs:
    """What the paper's tables are made from (the aggregation's intermediate frames)."""

    summary: pd.DataFrame
    comparisons: pd.DataFrame
    marks: Marks
    sensitivity: pd.DataFrame
    settings: ReportSettings
    types: Mapping[str, str]
    names: DisplayNames
    #: The protocol of the combined table and the per-dataset significance matrices.
    reference: str
    #: dataset -> (manifest frame, its dimensions); empty when no manifest is at hand.
    manifests: Mapping[str, tuple[pd.DataFrame, list]] = dataclasses.field(default_factory=dict)
    cross_dataset: pd.DataFrame | None = None


def render_paper_tables(inputs: PaperInputs, out_dir: Path) -> tuple[dict[str, Path], dict]:
    """Write the paper's tables; returns the files and what the paper needs to know of them."""
    out_dir = Path(out_dir)
    names, settings = inputs.names, inputs.settings
    paths: dict[str, Path] = {}
    info: dict = {"datasets": {}, "combined": None}
    tables = dataset_tables(inputs.summary, inputs.marks, settings, inputs.types, names)
    for dataset, table in tables.items():
        paths |= _write_table(table, out_dir)
        paths[f"{table.stem}.csv"] = out_dir / f"{table.stem}.csv"
        rows = inputs.summary[
            (inputs.summary["part"] == "test") & (inputs.summary["dataset"] == dataset)
        ]
        to_wide_csv(rows).to_csv(paths[f"{table.stem}.csv"], index=False)
        significance = _significance(inputs, dataset)
        if significance:
            paths[f"significance-{dataset}.tex"] = write_text(
                out_dir / f"significance-{dataset}.tex", significance
            )
        info["datasets"][dataset] = {
            "table": f"{table.stem}.tex",
            "significance": f"significance-{dataset}.tex" if significance else None,
        }
    combined = combined_table(
        inputs.summary, inputs.marks, settings, inputs.types, names, inputs.reference
    )
    paths |= _write_table(combined, out_dir)
    info["combined"] = {
        "file": "combined.tex",
        "fits": combined.fits_page,
        "width_pt": round(combined.width_pt, 1),
    }
    paths |= _write_sensitivity(inputs, out_dir)
    info["sensitivity"] = "sensitivity.tex" if "sensitivity.tex" in paths else None
    paths |= _write_overview(inputs, out_dir)
    info["overview"] = "datasets.tex" if "datasets.tex" in paths else None
    if inputs.cross_dataset is not None and not inputs.cross_dataset.empty:
        frame = cross_dataset_frame(inputs.cross_dataset, names, settings.precision)
        caption = CROSS_DATASET_CAPTION
        paths["cross_dataset.tex"] = write_text(
            out_dir / "cross_dataset.tex",
            styler_latex(frame, caption, "tab:cross-dataset"),
        )
        paths["cross_dataset.html"] = write_text(
            out_dir / "cross_dataset.html", styler_html(frame, caption)
        )
        info["cross_dataset"] = "cross_dataset.tex"
    return paths, info


def _write_table(table: PaperTable, out_dir: Path) -> dict[str, Path]:
    writers = {"tex": to_latex, "html": to_html, "md": to_markdown}
    return {
        f"{table.stem}.{ext}": write_text(out_dir / f"{table.stem}.{ext}", write(table))
        for ext, write in writers.items()
    }


def _significance(inputs: PaperInputs, dataset: str) -> str | None:
    """The reference protocol's p-value matrices of one dataset, or None without comparisons."""
    frame = inputs.comparisons
    chosen = frame[(frame["dataset"] == dataset) & (frame["protocol"] == inputs.reference)]
    if chosen.empty:
        return None
    models = {*chosen["model_a"], *chosen["model_b"]}
    # Numbered columns: the row labels plus one p-value ("0.001") per model.
    width = max(len(inputs.names.model(m)) + 4 for m in models) * _CHAR["small"]
    width += len(models) * 6 * _CHAR["small"] + _COLUMN_PADDING * (len(models) + 1)
    return significance_latex(
        chosen,
        inputs.settings,
        inputs.types,
        inputs.names,
        f"tab:significance-{dataset}",
        compact=True,
        font=r"\small" if width <= TEXT_WIDTH else r"\footnotesize",
    )


def _write_sensitivity(inputs: PaperInputs, out_dir: Path) -> dict[str, Path]:
    if inputs.sensitivity.empty:
        text = "<p>One protocol only: there is no protocol-sensitivity study to show.</p>"
        return {"sensitivity.html": write_text(out_dir / "sensitivity.html", text)}
    frame = sensitivity_frame(
        inputs.sensitivity, inputs.names, inputs.types, inputs.settings.precision
    )
    reference = inputs.names.protocol(str(inputs.sensitivity["reference"].iloc[0]))
    caption = SENSITIVITY_CAPTION.format(reference=reference, resamples=inputs.settings.resamples)
    return {
        "sensitivity.tex": write_text(
            out_dir / "sensitivity.tex", _sensitivity_latex(frame, caption)
        ),
        "sensitivity.html": write_text(out_dir / "sensitivity.html", styler_html(frame, caption)),
    }


def _sensitivity_latex(frame: pd.DataFrame, caption: str) -> str:
    """One table, or one per metric (SRCC, then PLCC) when both do not fit the line at
    footnote size: split rather than shrunk, so that no text falls under 8 pt."""
    if column_layout(_flat(frame), "footnote")[1] <= TEXT_WIDTH:
        return styler_latex(frame, caption, "tab:sensitivity")
    parts = []
    for metric, other in (("srcc", "plcc"), ("plcc", "srcc")):
        shown = DISPLAY_NAMES[metric]
        dropped = [DISPLAY_NAMES[other], f"Δ {DISPLAY_NAMES[other]} [95% CI]"]
        label = "tab:sensitivity" if metric == "srcc" else f"tab:sensitivity-{metric}"
        part_caption = f"{caption} This table: {shown}."
        parts.append(styler_latex(frame.drop(columns=dropped), part_caption, label))
    return "".join(parts)


def _write_overview(inputs: PaperInputs, out_dir: Path) -> dict[str, Path]:
    if not inputs.manifests:
        text = "<p>No manifest was found next to the runs: no dataset overview.</p>"
        return {"datasets.html": write_text(out_dir / "datasets.html", text)}
    frames = {d: m for d, (m, _) in inputs.manifests.items()}
    dims = {d: dims for d, (_, dims) in inputs.manifests.items()}
    frame = dataset_overview(frames, dims, inputs.names)
    caption = (
        "Datasets: labelled images, prompt groups (a split never separates a group), "
        "text-to-image generators, and rated dimensions with their native scales."
    )
    return {
        "datasets.tex": write_text(
            out_dir / "datasets.tex", styler_latex(frame, caption, "tab:datasets")
        ),
        "datasets.html": write_text(out_dir / "datasets.html", styler_html(frame, caption)),
        "datasets.csv": _csv(frame, out_dir / "datasets.csv"),
    }


def _csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path)
    return path
