"""The compiled paper: one LaTeX document with every table and figure, the protocol in words and
the provenance, built from what the aggregation wrote (``tables/paper.json`` and the fragments).

``build_paper`` copies the fragments and figure PDFs into ``results/<experiment>/paper/`` (so the
folder is a self-contained, citable artifact), writes ``paper.tex`` and runs ``pdflatex`` twice
(for the references). It needs only LaTeX's base and recommended packages (Debian:
``texlive-latex-base texlive-latex-recommended``).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

from PIL import Image

from agiqa.errors import AgiqaError
from agiqa.report.names import DisplayNames
from agiqa.report.paper_tables import latex_text
from agiqa.report.results import ReportSettings, RunResult

log = logging.getLogger(__name__)

PAPER = "paper"
#: Underfull lines this bad fail the build (LaTeX's worst, an empty-looking stretched line).
BAD_UNDERFULL = 10000
#: Text width of the document below (inches; 10 pt, one column, 1 in margins on US letter).
TEXT_WIDTH_IN = 6.5
FIGURE_DPI = 200  # agiqa.report.figures.DPI: PNG pixels -> inches

# One column: every table and figure is as wide as the text at most, so none is shrunk (no text
# under 8 pt: body 10 pt, captions 9 pt, tables 9 and 8 pt, figures drawn at 8 pt and placed at
# their natural size), and a float can stay right after the text that cites it.
PREAMBLE = r"""\documentclass[10pt]{article}
\usepackage[margin=1in]{geometry}
\usepackage{booktabs}
\usepackage{array}
\usepackage{graphicx}
% Table captions go above their tables: give them the space LaTeX only puts above a caption.
\usepackage{caption}
\captionsetup{font=small}
\captionsetup[table]{position=top,skip=4pt}
\usepackage[hidelinks]{hyperref}
% Several floats per page, and no page for a single small float.
\setcounter{topnumber}{3}
\setcounter{bottomnumber}{2}
\setcounter{totalnumber}{5}
\renewcommand{\topfraction}{0.85}
\renewcommand{\bottomfraction}{0.6}
\renewcommand{\textfraction}{0.1}
\renewcommand{\floatpagefraction}{0.7}
\extrafloats{200}
\setlength{\emergencystretch}{3em}
"""


class PaperError(AgiqaError):
    """The paper cannot be built: no LaTeX, a LaTeX error (with the log's first error), or a
    layout defect (an overfull box, a line stretched to badness 10000)."""


@dataclass(frozen=True)
class Figure:
    """A figure file (PDF) with its natural width (it is placed at that width: never shrunk)."""

    name: str
    kind: str
    dataset: str | None
    width_in: float


# --- what the aggregation records for the paper ---------------------------------------------


def paper_info(
    runs: Sequence[RunResult],
    settings: ReportSettings,
    names: DisplayNames,
    reference: str,
    tables: dict,
    figures: Sequence[str],
) -> dict:
    """What the paper needs besides the table and figure files: names, protocols, provenance."""
    from agiqa.provenance import library_versions

    protocols = {}
    for run in runs:
        spec = run.protocol_spec
        entry = protocols.setdefault(
            run.protocol,
            {
                "name": names.protocol(run.protocol),
                "type": spec.type,
                "description": spec.kind.description,
                "selection": spec.selection,
                "validation": spec.kind.carves_validation,
                "unit": spec.kind.unit,
                "folds": spec.folds,
                "repeats": spec.repeats,
                "val_fraction": spec.val_fraction,
                "seed": spec.seed,
                "splits": set(),
            },
        )
        entry["splits"].add(run.split)
    for entry in protocols.values():
        entry["splits"] = len(entry["splits"])
    # Models agiqa did not train: rows from checked predictions files (agiqa.evaluate.external).
    external = [run for run in runs if "external" in run.provenance]
    return {
        "reference": reference,
        "datasets": {d: names.dataset(d) for d in dict.fromkeys(r.dataset for r in runs)},
        "models": {m: names.model(m) for m in dict.fromkeys(r.model for r in runs)},
        "protocols": protocols,
        "settings": {k: v for k, v in asdict(settings).items() if k != "display_names"},
        "n_runs": len(runs) - len(external),
        "external": {m: names.model(m) for m in dict.fromkeys(r.model for r in external)},
        "provenance": {
            "commits": sorted({run.commit for run in runs}),
            "versions": _versions(runs),
            "report_versions": library_versions(),
            "inputs": sorted(
                {
                    (
                        run.dataset,
                        run.protocol,
                        run.split_sha256,
                        str(run.provenance.get("manifest_sha256", "")),
                    )
                    for run in runs
                }
            ),
        },
        "tables": tables,
        "figures": list(figures),
    }


def _versions(runs: Sequence[RunResult]) -> dict[str, list[str]]:
    """Library -> every version the runs were trained with (one, when all agree)."""
    found: dict[str, set[str]] = {}
    for run in runs:
        for name, version in (run.provenance.get("versions") or {}).items():
            found.setdefault(name, set()).add(str(version))
    return {name: sorted(values) for name, values in sorted(found.items())}


# --- captions --------------------------------------------------------------------------------


def figure_caption(figure: Figure, info: Mapping) -> str:
    """What a figure shows and how it was computed (plain text)."""
    reference = info["protocols"][info["reference"]]
    dataset = info["datasets"].get(figure.dataset or "", "")
    logistic = {"logistic4": "4-parameter", "logistic5": "5-parameter (VQEG)"}[
        info["settings"]["logistic"]
    ]
    captions = {
        "scatter": (
            f"{dataset}: predicted score against MOS, per model (columns) and dimension (rows): "
            f"the test predictions of every {reference['name']} split pooled "
            f"({reference['description']}). Red: the fitted monotonic {logistic} logistic "
            "function; SRCC and PLCC of the pooled predictions above each panel."
        ),
        "splits": (
            f"{dataset}: test SRCC of every split (dots), its mean over splits (bar) and the 95% "
            "confidence interval of the mean (whisker; Student t, variance corrected for "
            "overlapping training sets as in Nadeau and Bengio), per model and protocol. The "
            "spread shows how much one split can mislead."
        ),
        "generators": (
            f"{dataset}: test SRCC per text-to-image generator and model, on the pooled test "
            f"predictions of the {reference['name']} splits. Generators with fewer than 10 test "
            "images are left blank."
        ),
        "protocols": (
            f"Protocol sensitivity: each protocol's mean test SRCC minus that of "
            f"{reference['name']}, per dataset, dimension and model, with 95% intervals that "
            "count training variance (paired by split where both protocols test identical "
            "folds, else Welch's combination of their corrected variances). Test-selected "
            "protocols choose the epoch on the test split and are inflated by design."
        ),
        "cross_dataset": (
            "Cross-dataset generalisation: SRCC of each model trained on one dataset (rows) and "
            "tested on another (columns)."
        ),
    }
    return captions[figure.kind]


def protocol_text(info: Mapping) -> list[str]:
    """The evaluation protocol in words, as LaTeX paragraphs."""
    settings = info["settings"]
    items = []
    for protocol in info["protocols"].values():
        repeats = f" $\\times$ {protocol['repeats']} repeats" if protocol["repeats"] > 1 else ""
        validation = (
            f", validation part {protocol['val_fraction']:.0%} of the training folds"
            if protocol.get("validation", protocol["selection"] == "val")
            else ""
        )
        items.append(
            rf"\item \textbf{{{latex_text(protocol['name'])}}}: "
            + latex_text(
                f"{protocol['description']}; {protocol['folds']} folds{repeats}"
                f"{validation}; {protocol['splits']} splits, seed {protocol['seed']}."
            )
        )
    test = {
        "bootstrap": (
            "a paired cluster bootstrap over test prompt groups, resampled within each split "
            f"({settings['resamples']:,} resamples), which holds the trained models fixed"
        ),
        "corrected_t": (
            "the corrected resampled t-test across splits (Nadeau and Bengio), which counts "
            "training variance"
        ),
    }[settings["significance_test"]]
    return [
        r"\begin{itemize}",
        *items,
        r"\end{itemize}",
        latex_text(
            "Every model is trained on the training part of a split, its epoch chosen on the "
            "validation part (on the test part only in the test-selected protocols, which exist "
            "to measure that inflation), and the test part is predicted once. A prompt-grouped "
            "split keeps all images of one prompt on the same side."
        ),
        "",
        latex_text(
            "Metrics are computed per split on the native MOS scale: SRCC, KRCC, PLCC on the raw "
            "predictions, and PLCC after a monotonic "
            f"{settings['logistic'].replace('logistic', '')}-parameter logistic mapping fitted "
            "per split. Tables report the mean over splits, the sample standard deviation "
            "(ddof = 1) and the 95% confidence interval of the mean (Student t with Nadeau and "
            "Bengio's correction for overlapping training sets). Bold marks a model "
            f"significantly better than every other model ({test}, two-sided, α = "
            f"{settings['alpha']}); underlined models are tied for best."
        ),
    ]


# --- the document ------------------------------------------------------------------------------


def read_figures(figures_dir: Path, names: list[str], datasets: Mapping[str, str]) -> list[Figure]:
    """The PDF figures listed in ``paper.json``, with widths read from their PNG twins."""
    found = []
    for name in sorted(names, key=_figure_order):
        if not name.endswith(".pdf"):
            continue
        stem = name.removesuffix(".pdf")
        kind, _, dataset = stem.partition("-")
        with Image.open(figures_dir / f"{stem}.png") as png:
            width = png.width / FIGURE_DPI
        found.append(Figure(name, kind, dataset if dataset in datasets else None, width))
    return found


#: The order a dataset's figures are shown in: the predictions, their spread, the breakdown.
FIGURE_ORDER = ("scatter", "splits", "generators", "protocols", "cross_dataset")


def _figure_order(name: str) -> tuple[int, str]:
    kind = name.removesuffix(".pdf").partition("-")[0]
    return (FIGURE_ORDER.index(kind) if kind in FIGURE_ORDER else len(FIGURE_ORDER), name)


def _include_figure(figure: Figure, info: Mapping) -> list[str]:
    width = min(figure.width_in, TEXT_WIDTH_IN)
    return [
        r"\begin{figure}[!htbp]",
        r"\centering",
        rf"\includegraphics[width={width:.2f}in,height=0.8\textheight,keepaspectratio]"
        rf"{{figures/{figure.name}}}",
        r"\caption{" + latex_text(figure_caption(figure, info)) + "}",
        rf"\label{{{_figure_label(figure)}}}",
        r"\end{figure}",
    ]


def _figure_label(figure: Figure) -> str:
    return f"fig:{figure.name.removesuffix('.pdf')}"


def _lead(dataset: str, entry: Mapping, figures: list[Figure]) -> list[str]:
    """One sentence that cites the dataset's floats, so its heading never stands alone."""
    pieces = []
    if entry.get("table"):
        pieces.append(rf"Table~\ref{{tab:dataset-{dataset}}} gives the test results")
    shown = {
        "scatter": "the predictions against the MOS",
        "splits": "the spread over splits",
        "generators": "the results per generator",
    }
    for figure in figures:
        if figure.dataset == dataset and figure.kind in shown:
            pieces.append(rf"Figure~\ref{{{_figure_label(figure)}}} {shown[figure.kind]}")
    if entry.get("significance"):
        pieces.append(rf"Table~\ref{{tab:significance-{dataset}}} the p-values of the comparisons")
    if not pieces:
        return []
    return ["; ".join(pieces) + "."]


def breakable(text: str, every: int = 8) -> str:
    """A long identifier (a commit hash) in typewriter type that may break every few
    characters: a line never overflows or stretches around it."""
    chunks = [latex_text(text[i : i + every]) for i in range(0, len(text), every)]
    return r"\texttt{" + r"\allowbreak{}".join(chunks) + "}"


def _input(name: str | None) -> list[str]:
    return [rf"\input{{tables/{name.removesuffix('.tex')}}}"] if name else []


def _results(info: Mapping, figures: list[Figure]) -> list[str]:
    tables = info["tables"]
    lines = [r"\section{Results}"]
    combined = tables.get("combined")
    if combined and combined["fits"] and len(info["datasets"]) > 1:
        lines += [
            latex_text("Table ")
            + r"\ref{tab:combined}"
            + latex_text(
                " compares every model on every dataset; the per-dataset tables give "
                "the spread over splits and the confidence intervals."
            ),
            *_input(combined["file"]),
        ]
    elif combined and len(info["datasets"]) > 1:
        lines.append(
            latex_text(
                "The combined table is too wide for a two-column page at a legible size "
                f"({combined['width_pt']:.0f} pt); the per-dataset tables below carry every number "
                "(tables/combined.html has it whole)."
            )
        )
    for dataset, name in info["datasets"].items():
        entry = tables["datasets"].get(dataset, {})
        lines += [rf"\subsection{{{latex_text(name)}}}", *_lead(dataset, entry, figures)]
        lines += _input(entry.get("table"))
        for figure in figures:
            if figure.dataset == dataset:
                lines += _include_figure(figure, info)
        lines += _input(entry.get("significance"))
    return lines


def _sensitivity(info: Mapping, figures: list[Figure]) -> list[str]:
    sensitivity = info["tables"].get("sensitivity")
    if not sensitivity:
        return []
    lines = [
        r"\section{Protocol sensitivity}",
        latex_text(
            "How much do the numbers depend on the protocol? Each protocol's results minus the "
            f"reference protocol's ({info['protocols'][info['reference']]['name']})."
        ),
        *_input(sensitivity),
    ]
    for figure in figures:
        if figure.kind == "protocols":
            lines += _include_figure(figure, info)
    return lines


def _cross_dataset(info: Mapping, figures: list[Figure]) -> list[str]:
    table = info["tables"].get("cross_dataset")
    shown = [f for f in figures if f.kind == "cross_dataset"]
    if not table and not shown:
        return []
    lines = [r"\section{Cross-dataset generalisation}", *_input(table)]
    for figure in shown:
        lines += _include_figure(figure, info)
    return lines


def _provenance(info: Mapping, experiment: str, built: str) -> list[str]:
    provenance = info["provenance"]
    commits = ", ".join(breakable(commit) for commit in provenance["commits"])
    versions = [
        rf"{latex_text(name)} & {latex_text(', '.join(values))} \\"
        for name, values in provenance["versions"].items()
    ]
    inputs = [
        rf"{latex_text(info['datasets'].get(d, d))} & {latex_text(p)} & "
        rf"\texttt{{{split[:12]}}} & \texttt{{{manifest[:12]}}} \\"
        for d, p, split, manifest in provenance["inputs"]
    ]
    settings = info["settings"]
    return [
        r"\section{Provenance}",
        # Ragged right: runs from several commits list several hashes, and a justified line
        # of hash pieces stretches to badness 10000 (the build refuses that).
        r"{\raggedright "
        + latex_text(f"Cite this document as: agiqa benchmark results, experiment {experiment}, ")
        + f"code commit {commits}, "
        + latex_text(
            f"built {built} from {info['n_runs']} training runs. Every number "
            "was recomputed from the runs' prediction files by the aggregation step; the "
            "library versions below are those the runs were trained with."
        )
        + r"\par}",
        "",
        latex_text(
            f"Report settings: {settings['precision']} decimals, {settings['logistic']} mapping, "
            f"{settings['significance_test']} test at α = {settings['alpha']}, "
            f"{settings['resamples']:,} resamples, seed {settings['seed']}."
        ),
        r"\begin{table}[!htbp]",
        r"\centering\small",
        r"\caption{Library versions of the training runs.}",
        r"\label{tab:versions}",
        r"\begin{tabular}{ll}",
        r"\toprule",
        r"Library & Version \\",
        r"\midrule",
        *versions,
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
        r"\begin{table}[!htbp]",
        r"\centering\small",
        r"\caption{Inputs: sha256 prefixes of each split file and manifest.}",
        r"\label{tab:inputs}",
        r"\begin{tabular}{llll}",
        r"\toprule",
        r"Dataset & Protocol & Split file & Manifest \\",
        r"\midrule",
        *inputs,
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]


def paper_tex(info: Mapping, figures: list[Figure], experiment: str, built: str) -> str:
    """The whole LaTeX document."""
    models = ", ".join(info["models"].values())
    datasets = ", ".join(info["datasets"].values())
    abstract = (
        f"This document reports the agiqa benchmark of {len(info['models'])} AI-generated image "
        f"quality models ({models}) on {len(info['datasets'])} dataset(s) ({datasets}) under "
        f"{len(info['protocols'])} evaluation protocol(s), from {info['n_runs']} training runs. "
        "It was generated by the pipeline: every table and figure comes from the runs' "
        "prediction files."
    )
    if info.get("external"):
        abstract += (
            f" Not trained by agiqa: {', '.join(info['external'].values())}; their rows come "
            "from their own predictions on the same split files, checked against the protocol "
            "and evaluated with the same statistics."
        )
    lines = [
        PREAMBLE,
        r"\title{" + latex_text(f"AGIQA benchmark: {experiment}") + "}",
        r"\author{" + latex_text("agiqa (generated)") + "}",
        r"\date{" + latex_text(built) + "}",
        r"\begin{document}",
        r"\maketitle",
        r"\suppressfloats[t]",  # the abstract, not a float, opens the first page
        r"\begin{abstract}",
        latex_text(abstract),
        r"\end{abstract}",
        r"\section{Evaluation protocol}",
        *protocol_text(info),
    ]
    if info["tables"].get("overview"):
        lines += [r"\section{Datasets}", *_input(info["tables"]["overview"])]
    lines += _results(info, figures)
    lines += _sensitivity(info, figures)
    lines += _cross_dataset(info, figures)
    lines += _provenance(info, experiment, built)
    lines.append(r"\end{document}")
    return "\n".join(lines) + "\n"


# --- building ----------------------------------------------------------------------------------


def stage_inputs(tables_dir: Path, figures_dir: Path, out_dir: Path, info: Mapping) -> None:
    """Copy every fragment and figure the document inputs into the paper folder."""
    for sub in ("tables", "figures"):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
        (out_dir / sub).mkdir(parents=True)
    for fragment in tables_dir.glob("*.tex"):
        shutil.copy2(fragment, out_dir / "tables" / fragment.name)
    for name in info["figures"]:
        if name.endswith(".pdf"):
            shutil.copy2(figures_dir / name, out_dir / "figures" / name)


def compile_pdf(tex: Path, timeout: float = 300) -> None:
    """Run pdflatex twice and check the layout in its log.

    Raises:
        PaperError: pdflatex is not installed, LaTeX stopped with an error, or the log reports
            an overfull box or a line stretched to badness 10000 (``layout_problems``).
    """
    if shutil.which("pdflatex") is None:
        raise PaperError(
            "pdflatex is not on PATH: install LaTeX (Debian: apt-get install -y "
            "texlive-latex-base texlive-latex-recommended) to build the PDF"
        )
    command = ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", tex.name]
    for _ in range(2):  # the second pass resolves \ref
        done = subprocess.run(
            command, cwd=tex.parent, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise PaperError(f"pdflatex failed on {tex}: {_first_error(tex.with_suffix('.log'))}")
    problems = layout_problems(tex.with_suffix(".log").read_text(errors="replace"))
    if problems:
        raise PaperError(
            f"{tex}: {len(problems)} layout defect(s) in {tex.with_suffix('.log').name}: "
            + " / ".join(problems[:5])
        )


def _first_error(log_file: Path) -> str:
    if not log_file.exists():
        return "no log written"
    lines = log_file.read_text(errors="replace").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("!")), None)
    return " / ".join(lines[start : start + 4]) if start is not None else lines[-1]


def overfull_boxes(log_text: str) -> list[str]:
    """The log's overfull-box warnings (LaTeX reports those over \\hfuzz, 0.1 pt)."""
    return re.findall(r"(Overfull \\[hv]box \([\d.]+pt too (?:wide|high)\)[^\n]*)", log_text)


def layout_problems(log_text: str) -> list[str]:
    """Overfull boxes and lines stretched to ``BAD_UNDERFULL``: what fails the build."""
    underfull = re.findall(r"(Underfull \\hbox \(badness (\d+)\)[^\n]*)", log_text)
    bad = [line for line, badness in underfull if int(badness) >= BAD_UNDERFULL]
    return overfull_boxes(log_text) + bad


def build_paper(
    tables_dir: Path,
    figures_dir: Path,
    out_dir: Path,
    experiment: str,
    compile_it: bool = True,
    built: str | None = None,
) -> Path:
    """Write (and compile) ``<out_dir>/paper.tex``; returns the PDF (or the .tex if not compiled).

    Args:
        tables_dir: The aggregation's tables folder (with ``paper.json``).
        figures_dir: Its figures folder.
        out_dir: The paper folder, e.g. ``results/<experiment>/paper``.
        experiment: The experiment's name, for the title and the citation.
        compile_it: Run pdflatex (False: only write the LaTeX sources).
        built: The date printed in the document (default today).
    """
    tables_dir, figures_dir, out_dir = Path(tables_dir), Path(figures_dir), Path(out_dir)
    info_path = tables_dir / "paper.json"
    if not info_path.is_file():
        raise PaperError(f"{info_path} is missing: run the aggregation first")
    info = json.loads(info_path.read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    stage_inputs(tables_dir, figures_dir, out_dir, info)
    figures = read_figures(figures_dir, info["figures"], info["datasets"])
    tex = out_dir / f"{PAPER}.tex"
    tex.write_text(paper_tex(info, figures, experiment, built or date.today().isoformat()))
    if not compile_it:
        return tex
    compile_pdf(tex)
    return tex.with_suffix(".pdf")
