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
        # Models agiqa does not train (config external): their checked predictions, as runs.
        external=external_dirs(),
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
        runs=run_dirs() + external_run_dirs(),
        cross=CROSS_PREDICTIONS,
        tables=lambda wc, output: folder_of(output.info),
        figures=lambda wc, output: folder_of(output.figures[0]) if FIGURES else None,
        db=config["mlflow"]["db"],
        experiment=mlflow_experiment(config),
        # `pdf` only adds the paper to the default target: it changes nothing here.
        report={k: v for k, v in REPORT.items() if k != "pdf"},
        names=NAMES.to_dict(),
    conda:
        "../../envs/agiqa.yaml"
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
        tables=lambda wc, input: folder_of(input.info),
        figures=lambda wc, input: folder_of(input.figures[0]) if input.figures else FIGURES_DIR,
        experiment=EXPERIMENT,
    conda:
        "../../envs/agiqa.yaml"
    script:
        "../scripts/paper.py"
