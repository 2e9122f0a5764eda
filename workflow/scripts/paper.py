"""Thin adapter: the paper rule -> agiqa.report.steps.paper_step."""

from agiqa.report.steps import paper_step

snakemake = globals()["snakemake"]
paper_step(
    tables=snakemake.params.tables,
    figures=snakemake.params.figures,
    out=snakemake.output.pdf,
    experiment=snakemake.params.experiment,
    log_file=snakemake.log[0],
)
