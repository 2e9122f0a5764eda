"""Thin adapter: the cross_split rule -> agiqa.cross_dataset.split_step."""

from agiqa.cross_dataset import split_step

snakemake = globals()["snakemake"]
split_step(
    snakemake.input.manifest,
    dict(snakemake.params.settings),
    snakemake.output[0],
    snakemake.log[0],
)
