"""Thin adapter: the aggregate rule -> agiqa.report.steps.aggregate_step."""

from agiqa.report.steps import aggregate_step

snakemake = globals()["snakemake"]
aggregate_step(
    list(snakemake.params.runs),
    tables=snakemake.params.tables,
    figures=snakemake.params.figures,
    db=snakemake.params.db,
    experiment=snakemake.params.experiment,
    report=dict(snakemake.params.report),
    names=dict(snakemake.params.names),
    cross=list(snakemake.params.cross),
    log_file=snakemake.log[0],
)
