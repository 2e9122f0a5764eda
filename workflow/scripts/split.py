"""Thin adapter: the split rule -> agiqa.steps.write_split."""

from agiqa.steps import write_split

snakemake = globals()["snakemake"]
write_split(
    snakemake.input[0], dict(snakemake.params.protocol), snakemake.output[0], snakemake.log[0]
)
