from agiqa.report.files import figure_files
from agiqa.report.names import DisplayNames

REPORT = config.get("report") or {}
NAMES = DisplayNames.from_config(config)
TABLES_DIR = LAYOUT.tables_dir()
FIGURES_DIR = f"{LAYOUT.results}/figures"
PAPER_PDF = f"{LAYOUT.results}/paper/paper.pdf"
#: (file, caption, labels) of the HTML tables shown in the Snakemake report.
HTML_TABLES = [
    ("combined.html", "combined.rst", {"table": "all datasets, means", "dataset": "all"}),
    *[
        (f"dataset-{d}.html", "dataset_table.rst", {"table": "per dataset", "dataset": NAMES.dataset(d)})
        for d in DATASETS
    ],
    ("sensitivity.html", "sensitivity.rst", {"table": "protocol sensitivity", "dataset": "all"}),
    ("datasets.html", "datasets.rst", {"table": "datasets", "dataset": "all"}),
]
FIGURES = (
    figure_files(DATASETS, cross_dataset=bool(CROSS_PREDICTIONS))
    if REPORT.get("figures", True)
    else []
)


def figure_item(name):
    """A PNG figure as a report item (captioned, grouped by kind); PDFs are plain outputs."""
    path = f"{FIGURES_DIR}/{name}"
    if not name.endswith(".png"):
        return path
    kind, _, dataset = name.removesuffix(".png").partition("-")
    return report(
        path,
        caption=f"../report/figure_{kind}.rst",
        category="Figures",
        subcategory=NAMES.dataset(dataset) if dataset else "All datasets",
        labels={"figure": kind, "dataset": NAMES.dataset(dataset) if dataset else "all"},
    )


# The single writer of the shared stores (MLflow database, tables, figures). `report` holds the
# settings that change the numbers (logistic, significance test, resamples), so editing them
# reruns this job only, never a training job.
rule aggregate:
    input:
        runs=[
            f"{run}/{name}" for run in run_dirs() for name in RUN_FILES if name != "checkpoint.pt"
        ],
        # The overview and per-generator breakdown read the manifests.
        manifests=[LAYOUT.manifest(d) for d in DATASETS],
        # Cross-dataset results (config cross_dataset): their own table and figure only.
        cross=[f"{d}/{name}" for d in CROSS_PREDICTIONS for name in cross.PREDICT_FILES],
    output:
        tables=[
            report(
                f"{TABLES_DIR}/{name}",
                caption=f"../report/{caption}",
                category="Files",
                labels={"file": name},
            )
            for name, caption in (("main.md", "tables.rst"), ("val.md", "val.rst"))
        ],
        html=[
            report(f"{TABLES_DIR}/{name}", caption=f"../report/{caption}", category="Tables", labels=labels)
            for name, caption, labels in HTML_TABLES
        ],
        info=f"{TABLES_DIR}/paper.json",
        figures=[figure_item(name) for name in FIGURES],
        cross=[f"{TABLES_DIR}/cross_dataset.csv"] if CROSS_PREDICTIONS else [],
    log:
        f"{LAYOUT.logs}/aggregate.log",
    benchmark:
        f"benchmarks/{EXPERIMENT}/aggregate.tsv"
    localrule: True
    params:
        runs=run_dirs(),
        cross=CROSS_PREDICTIONS,
        tables=TABLES_DIR,
        figures=FIGURES_DIR if FIGURES else None,
        db=config["mlflow"]["db"],
        experiment=config["mlflow"].get("experiment") or EXPERIMENT,
        # `pdf` only adds the paper to the default target: it changes nothing here.
        report={k: v for k, v in REPORT.items() if k != "pdf"},
        names=NAMES.to_dict(),
    script:
        "../scripts/aggregate.py"


# The paper PDF: `make paper` (or `snakemake paper`); part of the default target only with
# `report: {pdf: true}`. Needs pdflatex (Debian: texlive-latex-base texlive-latex-recommended).
rule paper:
    input:
        info=f"{TABLES_DIR}/paper.json",
        figures=[f"{FIGURES_DIR}/{name}" for name in FIGURES if name.endswith(".pdf")],
    output:
        pdf=report(PAPER_PDF, caption="../report/paper.rst", category="Paper"),
        tex=f"{LAYOUT.results}/paper/paper.tex",
    log:
        f"{LAYOUT.logs}/paper.log",
    benchmark:
        f"benchmarks/{EXPERIMENT}/paper.tsv"
    localrule: True
    params:
        tables=TABLES_DIR,
        figures=FIGURES_DIR,
        experiment=EXPERIMENT,
    script:
        "../scripts/paper.py"


# `rule all` (Snakefile) asks for final_outputs(); with `report.pdf: true` the paper joins it.
if REPORT.get("pdf", False):
    _outputs_without_paper = final_outputs

    def final_outputs():
        return _outputs_without_paper() + [PAPER_PDF]
