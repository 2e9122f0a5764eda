"""Results tables (LaTeX booktabs fragments, Markdown, CSV) from the per-split summary.

Files written by ``render_all`` (``<name>.tex|md|csv``):

- ``main``: test results. Rows are models (grouped by protocol when there are several); columns
  are a three-level header dataset / dimension / metric. Cells show mean ± sample std over splits
  and the 95% confidence interval of the mean. Marks come from significance tests, not from the
  order of the means (see agiqa.report.compare; by default the corrected resampled t-test, which
  counts training variance): bold = best, significantly better than every other model; underlined =
  tied for best. NaN cells show a dash.
- ``val``: the same layout from the selected epoch's validation metrics. Tune on this table.
- ``significance``: every pairwise comparison (CSV), and p-value matrices (LaTeX).
- ``protocols``: the protocol-sensitivity table (each protocol minus the reference, with CIs and
  the factors that differ); ``protocols.md`` ends with the single-factor contrasts, which are also
  ``protocol_factors.csv|tex``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from agiqa.data.splits import PROTOCOLS
from agiqa.evaluate.metrics import METRICS
from agiqa.report.compare import BEST, TIE
from agiqa.report.names import DisplayNames
from agiqa.report.results import ReportSettings

DISPLAY_NAMES = {
    "srcc": "SRCC",
    "krcc": "KRCC",
    "plcc": "PLCC",
    "plcc_logistic": "PLCC (logistic)",
    "rmse": "RMSE",
    "rmse_logistic": "RMSE (logistic)",
}
LATEX_NAMES = {
    **DISPLAY_NAMES,
    "plcc_logistic": r"PLCC$_\mathrm{log}$",
    "rmse_logistic": r"RMSE$_\mathrm{log}$",
}
LOGISTIC_NAMES = {"logistic4": "4-parameter", "logistic5": "5-parameter (VQEG)"}
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
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}

Column = tuple[str, str, str]  # dataset, dimension, metric
Row = tuple[str, str]  # protocol, model
Marks = Mapping[tuple[str, ...], str]


@dataclass(frozen=True)
class Cell:
    """One displayed table cell: rounded strings and its significance mark (or None)."""

    mean: str | None
    std: str | None
    ci: tuple[str, str] | None = None
    mark: str | None = None


@dataclass(frozen=True)
class Grid:
    """The table independent of output format."""

    rows: list[Row]
    columns: list[Column]
    cells: dict[tuple[Row, Column], Cell]
    multi_protocol: bool
    caption: str  # plain text; each renderer formats it
    label: str = "tab:main"
    #: protocol -> its row label
    protocol_labels: Mapping[str, str] = field(default_factory=dict)


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters in plain text."""
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in str(text))


def format_number(value: float | None, precision: int) -> str | None:
    """Round for display; None for NaN. Negative zero prints as zero."""
    if value is None or math.isnan(value):
        return None
    text = f"{value:.{precision}f}"
    return f"{0.0:.{precision}f}" if float(text) == 0 else text


def protocol_label(protocol: str, protocol_types: Mapping[str, str] | None = None) -> str:
    """A protocol's row label; test-selected protocols say so wherever they appear."""
    kind = (protocol_types or {}).get(protocol, protocol)
    if kind in PROTOCOLS and PROTOCOLS.get(kind).selection == "test":
        return f"{protocol} (test-selected)"
    return protocol


def build_grid(
    summary: pd.DataFrame,
    metrics: Sequence[str],
    precision: int,
    marks: Marks | None = None,
    part: str = "test",
    caption: str = "",
    protocol_types: Mapping[str, str] | None = None,
) -> Grid:
    """Lay out the summary rows of one part as rows x columns of formatted, marked cells."""
    _check_summary(summary, metrics)
    summary = summary[summary["part"] == part] if "part" in summary else summary
    if summary.empty:
        raise ValueError(f"no {part} results to tabulate")
    protocols = list(dict.fromkeys(summary["protocol"]))
    model_rows = dict.fromkeys(zip(summary["protocol"], summary["model"], strict=True))
    # Keep each protocol's models together so every protocol forms one block of rows.
    rows = [row for protocol in protocols for row in model_rows if row[0] == protocol]
    datasets = list(dict.fromkeys(summary["dataset"]))
    pairs = list(dict.fromkeys(zip(summary["dataset"], summary["dimension"], strict=True)))
    # Group columns by dataset even when the summary interleaves datasets.
    columns = [(ds, dim, m) for ds in datasets for d, dim in pairs if d == ds for m in metrics]
    lookup = {
        (r.protocol, r.model, r.dataset, r.dimension): r._asdict()
        for r in summary.itertuples(index=False)
    }
    cells: dict[tuple[Row, Column], Cell] = {}
    for row in rows:
        for column in columns:
            entry = lookup.get((*row, column[0], column[1]))
            mark = (marks or {}).get((row[0], column[0], column[1], part, column[2], row[1]))
            cells[row, column] = _cell(entry, column[2], precision, mark)
    labels = {p: protocol_label(p, protocol_types) for p in protocols}
    return Grid(rows, columns, cells, len(protocols) > 1, caption, f"tab:{part}", labels)


def _cell(entry: dict | None, metric: str, precision: int, mark: str | None) -> Cell:
    if entry is None:
        return Cell(None, None)
    mean = format_number(entry[f"{metric}_mean"], precision)
    if mean is None:
        return Cell(None, None)
    # With one split there is no spread to show; "± 0.000" would suggest there was.
    several = entry["n_splits"] > 1
    std = format_number(entry[f"{metric}_std"], precision) if several else None
    low = format_number(entry.get(f"{metric}_ci_low", math.nan), precision - 1)
    high = format_number(entry.get(f"{metric}_ci_high", math.nan), precision - 1)
    ci = (low, high) if several and low is not None and high is not None else None
    return Cell(mean, std, ci, mark)


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


def marks_test_text(settings: ReportSettings) -> str:
    """The test behind the best/tie marks, in words, with what it covers."""
    return {
        "bootstrap": "paired cluster bootstrap over test prompt groups resampled within each "
        f"split, {settings.resamples:,} resamples; it holds the trained models fixed, so "
        "training variance is not counted",
        "corrected_t": "Nadeau and Bengio's corrected resampled t-test on the per-split "
        "differences, which counts the variance of retraining as well as of the test folds",
    }[settings.significance_test]


def results_caption(
    summary: pd.DataFrame,
    settings: ReportSettings,
    part: str,
    protocol_types: Mapping[str, str],
    names: DisplayNames | None = None,
) -> str:
    """What a results table shows, how it was computed and what its marks mean.

    Protocols are named by ``names`` when given (the paper's tables), else by identifier.
    """
    rows = summary[summary["part"] == part] if "part" in summary else summary
    parts = []
    for protocol in dict.fromkeys(rows["protocol"]):
        counts = rows.loc[rows["protocol"] == protocol, "n_splits"]
        low, high = int(counts.min()), int(counts.max())
        n = str(low) if low == high else f"{low}–{high}"
        kind = PROTOCOLS.get(protocol_types.get(protocol, protocol))
        label = names.protocol(protocol) if names is not None else protocol
        parts.append(f"{label}: {n} split{'s' if high > 1 else ''}, {kind.description}")
    what = "Test results" if part == "test" else "Validation results (selected epoch)"
    tests = marks_test_text(settings)
    return (
        f"{what}: mean ± sample standard deviation (ddof=1) over splits, and in brackets the 95% "
        "confidence interval of the mean (Student t, variance corrected for overlapping "
        "training sets as in Nadeau and Bengio; correlations clipped to [\u22121, 1]). Protocols — "
        + "; ".join(parts)
        + ". "
        "PLCC is computed on the raw predictions; PLCC (logistic) after a monotonically "
        f"increasing {LOGISTIC_NAMES[settings.logistic]} logistic fitted per split on the "
        f"evaluated part. Bold: best, significantly better than every other model ({tests}, "
        f"two-sided, α = {settings.alpha}); underlined: tied for best (the top model and every "
        "model not significantly different from it). Unmarked columns have a single model."
        + split_citation(rows, names)
    )


#: Hex digits of a split file's sha256 that captions cite.
CITED_HASH = 12


def split_citation(rows: pd.DataFrame, names: DisplayNames | None = None) -> str:
    """`` Split files (sha256): protocol / dataset 3861a7ae92be; ...``, the split files the rows
    were computed on ("" when the summary does not say)."""
    if "split_sha256" not in rows or rows.empty:
        return ""
    cited = []
    for (protocol, dataset), group in rows.groupby(["protocol", "dataset"], sort=False):
        hashes = dict.fromkeys(h[:CITED_HASH] for v in group["split_sha256"] for h in v.split())
        if not hashes:
            continue
        shown = (names.protocol(protocol), names.dataset(dataset)) if names else (protocol, dataset)
        cited.append(f"{shown[0]} / {shown[1]} {', '.join(hashes)}")
    return f" Split files (sha256 prefix): {'; '.join(cited)}." if cited else ""


# --- LaTeX -----------------------------------------------------------------------------------


def to_latex(grid: Grid) -> str:
    """A booktabs ``table`` fragment (no preamble) for ``\\input``."""
    lead = 2 if grid.multi_protocol else 1
    spec = "l" * lead + "c" * len(grid.columns)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{" + _latex_caption(grid.caption) + "}",
        rf"\label{{{grid.label}}}",
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
    return (
        latex_escape(caption)
        .replace("±", r"$\pm$")
        .replace("–", "--")
        .replace("—", "---")
        .replace("α", r"$\alpha$")
        .replace("×", r"$\times$")
        .replace("\u2212", r"\ensuremath{-}")
    )


def spans(labels: list[tuple[str, ...]]) -> list[tuple[tuple[str, ...], int]]:
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
    for label, width in spans(labels):
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


def _latex_number(text: str) -> str:
    # A proper minus sign in text mode.
    return text.replace("-", r"\textminus{}") if text.startswith("-") else text


def _latex_cell(cell: Cell) -> str:
    if cell.mean is None:
        return "--"
    mean = _latex_number(cell.mean)
    wrap = {BEST: r"\textbf", TIE: r"\underline"}.get(cell.mark or "")
    text = f"{wrap}{{{mean}}}" if wrap else mean
    if cell.std is not None:
        text += rf"{{\scriptsize$\pm${cell.std}}}"
    if cell.ci is not None:
        low, high = (_latex_number(v) for v in cell.ci)
        text += rf"{{\scriptsize\,[{low}, {high}]}}"
    return text


def _latex_body(grid: Grid) -> list[str]:
    lines: list[str] = []
    previous = None
    for row in grid.rows:
        protocol, model = row
        lead = [latex_escape(model)]
        if grid.multi_protocol:
            if previous is not None and protocol != previous:
                lines.append(r"\midrule")
            label = latex_escape(grid.protocol_labels.get(protocol, protocol))
            lead.insert(0, label if protocol != previous else "")
            previous = protocol
        cells = [_latex_cell(grid.cells[(row, c)]) for c in grid.columns]
        lines.append(" & ".join(lead + cells) + r" \\")
    return lines


# --- Markdown --------------------------------------------------------------------------------


def _md_text(text: str) -> str:
    return str(text).replace("|", r"\|")


def md_number(text: str) -> str:
    """A real minus sign (U+2212) for Markdown and HTML."""
    return "\u2212" + text[1:] if text.startswith("-") else text


def _md_cell(cell: Cell) -> str:
    if cell.mean is None:
        return "–"
    value = md_number(cell.mean)
    mean = {BEST: f"**{value}**", TIE: f"<u>{value}</u>"}.get(cell.mark or "", value)
    text = mean + (f" ± {cell.std}" if cell.std is not None else "")
    if cell.ci is None:
        return text
    return text + f" [{md_number(cell.ci[0])}, {md_number(cell.ci[1])}]"


def to_markdown(grid: Grid) -> str:
    """A GitHub-flavoured Markdown table; the three header levels are joined with " / "."""
    names = ["Protocol", "Model"] if grid.multi_protocol else ["Model"]
    header = names + [_md_text(f"{ds} / {dim} / {DISPLAY_NAMES[m]}") for ds, dim, m in grid.columns]
    align = [":--"] * len(names) + [":-:"] * len(grid.columns)
    lines = [grid.caption, "", _md_row(header), _md_row(align)]
    for row in grid.rows:
        lead = [_md_text(row[1])]
        if grid.multi_protocol:
            lead.insert(0, _md_text(grid.protocol_labels.get(row[0], row[0])))
        lines.append(_md_row(lead + [_md_cell(grid.cells[(row, c)]) for c in grid.columns]))
    return "\n".join(lines) + "\n"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


# --- CSV -------------------------------------------------------------------------------------


def to_wide_csv(summary: pd.DataFrame) -> pd.DataFrame:
    """Machine-readable summary: one row per (protocol, model, dataset, dimension), numbers only."""
    keys = ["protocol", "model", "dataset", "dimension", "n_splits"]
    stats = ("mean", "std", "ci_low", "ci_high")
    values = [f"{m}_{s}" for m in METRICS for s in stats if f"{m}_{s}" in summary]
    return summary[keys + values].reset_index(drop=True)


# --- significance matrices -------------------------------------------------------------------


def format_p(value: float) -> str:
    if value is None or math.isnan(value):
        return "--"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def significance_latex(
    comparisons: pd.DataFrame,
    settings: ReportSettings,
    protocol_types: Mapping[str, str] | None = None,
    names: DisplayNames | None = None,
    label: str = "tab:significance",
    compact: bool = False,
    font: str = r"\small",
) -> str:
    """One p-value matrix per (protocol, dataset, dimension) for the first table metric.

    Upper triangle: paired bootstrap; lower triangle: corrected resampled t-test. ``names``
    (the paper's display names) replaces identifiers; ``label`` is the LaTeX label. ``compact``
    (the paper's version) numbers the models, so a column is as wide as a p-value, not as a
    model's name, and the matrix keeps its natural size in ``font``.
    """
    names = names or DisplayNames()
    metric = settings.metrics[0]
    chosen = comparisons[(comparisons["part"] == "test") & (comparisons["metric"] == metric)]
    blocks = []
    for (protocol, dataset, dim), group in chosen.groupby(
        ["protocol", "dataset", "dimension"], sort=False
    ):
        models = list(dict.fromkeys([*group["model_a"], *group["model_b"]]))
        lookup = {(r.model_a, r.model_b): r for r in group.itertuples(index=False)}
        heads = [f"({k})" for k in range(1, len(models) + 1)] if compact else None
        lines = [
            r"\begin{tabular}{l" + "c" * len(models) + "}",
            r"\toprule",
            " & ".join(["", *(heads or (latex_escape(names.model(m)) for m in models))]) + r" \\",
            r"\midrule",
        ]
        for i, row_model in enumerate(models):
            name = latex_escape(names.model(row_model))
            cells = [f"({i + 1}) {name}" if compact else name]
            for j, column_model in enumerate(models):
                if i == j:
                    cells.append("--")
                    continue
                pair = lookup.get((row_model, column_model)) or lookup.get(
                    (column_model, row_model)
                )
                value = math.nan
                if pair is not None:
                    value = pair.p_bootstrap if i < j else pair.p_corrected_t
                text = latex_escape(format_p(value))
                cells.append(r"\textbf{" + text + "}" if value < settings.alpha else text)
            lines.append(" & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        kind = (protocol_types or {}).get(protocol, protocol)
        test_selected = kind in PROTOCOLS and PROTOCOLS.get(kind).selection == "test"
        shown = names.protocol(protocol, "test-selected" if test_selected else None)
        title = _latex_caption(f"{shown} / {names.dataset(dataset)} / {names.dimension(dim)}")
        blocks.append(r"\par\smallskip\noindent " + title + r"\\" + "\n" + "\n".join(lines))
    marks_by = {"corrected_t": "lower", "bootstrap": "upper"}[settings.significance_test]
    caption = (
        f"Two-sided p-values of pairwise {DISPLAY_NAMES[metric]} differences on the test parts. "
        f"Upper triangle: paired cluster bootstrap over test prompt groups within each split "
        f"({settings.resamples:,} resamples; the trained models held fixed); lower triangle: "
        f"corrected resampled t-test across splits (Nadeau and Bengio; counts training "
        f"variance). The table marks use the {marks_by} triangle. Bold: p < α = {settings.alpha}."
    )
    if compact:
        caption += " Columns are numbered as the rows."
    return (
        f"\\begin{{table}}[{'!htbp' if compact else 't'}]\n\\centering\n{font}\n\\caption{{"
        + _latex_caption(caption)
        + f"}}\n\\label{{{label}}}\n"
        + "\n".join(blocks)
        + "\n\\end{table}\n"
    )


# --- protocol sensitivity --------------------------------------------------------------------

SENSITIVITY_SHOWN = ("srcc", "plcc")


def _delta_text(row: Mapping, metric: str, precision: int) -> str:
    if row["protocol"] == row["reference"]:
        return "reference"
    delta = format_number(row.get(f"delta_{metric}", math.nan), precision)
    if delta is None:
        return "–"
    sign = "+" if not delta.startswith("-") else ""
    low = format_number(row[f"delta_{metric}_ci_low"], precision)
    high = format_number(row[f"delta_{metric}_ci_high"], precision)
    if low is None or high is None:
        return f"{sign}{delta} [–]"
    return f"{sign}{delta} [{low}, {high}]"


#: How a protocol difference's interval was formed, as the tables say it.
PAIRING_TEXT = {"splits": "by split", "unpaired": "unpaired"}

INTERVALS_TEXT = (
    "The 95% interval counts training variance: where both protocols test identical folds, a "
    "corrected resampled t interval (Nadeau and Bengio) on the per-split differences (paired by "
    "split); otherwise each protocol's corrected variance of its mean, combined as in Welch's "
    "test (unpaired; conservative, since both protocols score the same dataset). "
    "{csv} also gives a paired cluster bootstrap interval over test prompt groups "
    "({resamples:,} resamples), which holds the trained models fixed and so covers only the "
    "draw of test prompts. "
)


def sensitivity_caption(sensitivity: pd.DataFrame, settings: ReportSettings) -> str:
    reference = sensitivity["reference"].iloc[0]
    return (
        "Protocol sensitivity: test SRCC and raw PLCC per protocol (mean over splits), the "
        f"factors in which each protocol differs from {reference}, and the difference from "
        f"{reference}. "
        + INTERVALS_TEXT.format(csv="protocols.csv", resamples=settings.resamples)
        + "Test-selected protocols pick the epoch on the test split with the model's seed-code "
        "rule: their numbers are inflated by design. Image-level protocols let prompts appear "
        "on both sides of a split."
    )


def contrasts_caption(settings: ReportSettings) -> str:
    return (
        "Single-factor contrasts: each row compares two protocols that differ in one factor "
        "only, from the honest level to the other (split unit: prompt groups to images; "
        "selection: validation with agiqa's rule to the test fold with the seed code's rule; "
        "training-set size: training folds minus the validation part to all training folds), "
        "so each factor's effect is measured alone. "
        + INTERVALS_TEXT.format(csv="protocol_factors.csv", resamples=settings.resamples)
    )


def _sensitivity_label(row: Mapping) -> str:
    test_selected = " (test-selected)" if row["selection"] == "test" else ""
    return f"{row['protocol']}{test_selected}"


def _pairing(row: Mapping) -> str:
    return PAIRING_TEXT.get(str(row.get("pairing")), "–")


def sensitivity_markdown(
    sensitivity: pd.DataFrame, settings: ReportSettings, contrasts: pd.DataFrame | None = None
) -> str:
    header = ["Dataset", "Model", "Dimension", "Protocol", "Splits", "Changes", "Paired"]
    for metric in SENSITIVITY_SHOWN:
        header += [DISPLAY_NAMES[metric], f"Δ {DISPLAY_NAMES[metric]} [95% CI]"]
    lines = [sensitivity_caption(sensitivity, settings), "", _md_row(header)]
    lines.append(_md_row([":--"] * 7 + [":-:"] * (2 * len(SENSITIVITY_SHOWN))))
    for row in sensitivity.to_dict("records"):
        cells = [row["dataset"], row["model"], row["dimension"], _sensitivity_label(row)]
        reference = row["protocol"] == row["reference"]
        cells += [str(row["n_splits"]), "–" if reference else row["changes"], _pairing(row)]
        for metric in SENSITIVITY_SHOWN:
            mean = format_number(row.get(f"{metric}_mean", math.nan), settings.precision)
            cells.append(mean or "–")
            cells.append(_delta_text(row, metric, settings.precision))
        lines.append(_md_row([_md_text(c) for c in cells]))
    if contrasts is not None and not contrasts.empty:
        lines += ["", contrasts_markdown(contrasts, settings).rstrip("\n")]
    return "\n".join(lines) + "\n"


def contrasts_markdown(contrasts: pd.DataFrame, settings: ReportSettings) -> str:
    header = ["Dataset", "Model", "Dimension", "Factor", "From", "To", "Paired"]
    header += [f"Δ {DISPLAY_NAMES[m]} [95% CI]" for m in SENSITIVITY_SHOWN]
    lines = [contrasts_caption(settings), "", _md_row(header)]
    lines.append(_md_row([":--"] * 7 + [":-:"] * len(SENSITIVITY_SHOWN)))
    for row in contrasts.to_dict("records"):
        cells = [row["dataset"], row["model"], row["dimension"], row["factor"]]
        cells += [row["reference"], _sensitivity_label(row), _pairing(row)]
        cells += [_delta_text(row, m, settings.precision) for m in SENSITIVITY_SHOWN]
        lines.append(_md_row([_md_text(c) for c in cells]))
    return "\n".join(lines) + "\n"


def sensitivity_latex(sensitivity: pd.DataFrame, settings: ReportSettings) -> str:
    header = ["Dataset", "Model", "Dim.", "Protocol", "$J$", "Changes"]
    for metric in SENSITIVITY_SHOWN:
        header += [LATEX_NAMES[metric], r"$\Delta$ " + LATEX_NAMES[metric] + " [95\\% CI]"]
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{" + _latex_caption(sensitivity_caption(sensitivity, settings)) + "}",
        r"\label{tab:protocols}",
        r"\begin{tabular}{llllcl" + "c" * (2 * len(SENSITIVITY_SHOWN)) + "}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
    ]
    for row in sensitivity.to_dict("records"):
        cells = [latex_escape(row[k]) for k in ("dataset", "model", "dimension")]
        cells += [latex_escape(_sensitivity_label(row)), str(row["n_splits"])]
        reference = row["protocol"] == row["reference"]
        cells.append("--" if reference else latex_escape(_changes_with_pairing(row)))
        for metric in SENSITIVITY_SHOWN:
            mean = format_number(row.get(f"{metric}_mean", math.nan), settings.precision)
            cells.append(_latex_number(mean) if mean else "--")
            cells.append(_latex_delta(row, metric, settings.precision))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def contrasts_latex(contrasts: pd.DataFrame, settings: ReportSettings) -> str:
    header = ["Dataset", "Model", "Dim.", "Factor", "From", "To"]
    header += [r"$\Delta$ " + LATEX_NAMES[m] + " [95\\% CI]" for m in SENSITIVITY_SHOWN]
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\caption{" + _latex_caption(contrasts_caption(settings)) + "}",
        r"\label{tab:protocol-factors}",
        r"\begin{tabular}{llllll" + "c" * len(SENSITIVITY_SHOWN) + "}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
    ]
    for row in contrasts.to_dict("records"):
        cells = [latex_escape(row[k]) for k in ("dataset", "model", "dimension")]
        cells.append(latex_escape(f"{row['factor']} ({_pairing(row)})"))
        cells += [latex_escape(row["reference"]), latex_escape(_sensitivity_label(row))]
        cells += [_latex_delta(row, m, settings.precision) for m in SENSITIVITY_SHOWN]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _changes_with_pairing(row: Mapping) -> str:
    return f"{row['changes']} ({_pairing(row)})"


def _latex_delta(row: Mapping, metric: str, precision: int) -> str:
    return _delta_text(row, metric, precision).replace("-", r"\textminus{}").replace("–", "--")


# --- entry point -----------------------------------------------------------------------------


def render_tables(
    summary: pd.DataFrame,
    out_dir: Path,
    metrics: Sequence[str] = ("srcc", "plcc", "plcc_logistic"),
    precision: int = 3,
    marks: Marks | None = None,
    part: str = "test",
    caption: str = "",
    name: str = "main",
    protocol_types: Mapping[str, str] | None = None,
) -> dict[str, Path]:
    """Write ``<name>.tex``, ``<name>.md`` and ``<name>.csv`` of one part into ``out_dir``."""
    grid = build_grid(summary, metrics, precision, marks, part, caption, protocol_types)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"{name}.{ext}" for ext in ("tex", "md", "csv")}
    paths["tex"].write_text(to_latex(grid), encoding="utf-8")
    paths["md"].write_text(to_markdown(grid), encoding="utf-8")
    rows = summary[summary["part"] == part] if "part" in summary else summary
    to_wide_csv(rows).to_csv(paths["csv"], index=False)
    return paths


def render_all(
    summary: pd.DataFrame,
    comparisons: pd.DataFrame,
    marks: Marks,
    sensitivity: pd.DataFrame,
    out_dir: Path,
    settings: ReportSettings,
    protocol_types: Mapping[str, str] | None = None,
    contrasts: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """Every table of an experiment; returns ``{"main.md": path, ...}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    types = dict(protocol_types or {})
    paths: dict[str, Path] = {}
    for part, name in (("test", "main"), ("val", "val")):
        if not (summary["part"] == part).any():
            continue
        caption = results_caption(summary, settings, part, types)
        written = render_tables(
            summary,
            out_dir,
            settings.metrics,
            settings.precision,
            marks,
            part,
            caption,
            name,
            types,
        )
        paths.update({f"{name}.{ext}": path for ext, path in written.items()})
    paths["significance.csv"] = out_dir / "significance.csv"
    comparisons.to_csv(paths["significance.csv"], index=False)
    paths["significance.tex"] = out_dir / "significance.tex"
    paths["significance.tex"].write_text(significance_latex(comparisons, settings, types))
    if not sensitivity.empty:
        paths["protocols.csv"] = out_dir / "protocols.csv"
        sensitivity.to_csv(paths["protocols.csv"], index=False)
        paths["protocols.md"] = out_dir / "protocols.md"
        paths["protocols.md"].write_text(sensitivity_markdown(sensitivity, settings, contrasts))
        paths["protocols.tex"] = out_dir / "protocols.tex"
        paths["protocols.tex"].write_text(sensitivity_latex(sensitivity, settings))
    if contrasts is not None and not contrasts.empty:
        paths["protocol_factors.csv"] = out_dir / "protocol_factors.csv"
        contrasts.to_csv(paths["protocol_factors.csv"], index=False)
        paths["protocol_factors.tex"] = out_dir / "protocol_factors.tex"
        paths["protocol_factors.tex"].write_text(contrasts_latex(contrasts, settings))
    return paths
