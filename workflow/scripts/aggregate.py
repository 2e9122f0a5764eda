"""Thin adapter: the aggregate rule -> agiqa.steps.aggregate_runs."""

from agiqa.steps import aggregate_runs

snakemake = globals()["snakemake"]
aggregate_runs(
    list(snakemake.params.runs),
    tables=snakemake.params.tables,
    db=snakemake.params.db,
    experiment=snakemake.params.experiment,
    report=dict(snakemake.params.report),
    log_file=snakemake.log[0],
)
