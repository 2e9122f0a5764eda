"""Thin adapter: the split_info rule -> agiqa.data.split_info.split_info_step."""

from agiqa.data.split_info import split_info_step

snakemake = globals()["snakemake"]
split_info_step(
    snakemake.input.splits,
    snakemake.input.manifest,
    dataset=snakemake.wildcards.dataset,
    protocol=snakemake.wildcards.protocol,
    settings=dict(snakemake.params.protocol),
    log_file=snakemake.log[0],
)
