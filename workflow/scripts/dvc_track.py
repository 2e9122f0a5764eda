"""Thin adapter: the dvc_track rule -> agiqa.steps.track_datasets."""

from agiqa.steps import track_datasets

snakemake = globals()["snakemake"]
track_datasets(
    list(snakemake.params.paths),
    verified=list(snakemake.input),
    remote=dict(snakemake.params.remote),
    out=snakemake.output[0],
    log_file=snakemake.log[0],
)
