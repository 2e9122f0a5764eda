"""Thin adapter: the synthesize rule -> agiqa.steps.synthesize."""

from agiqa.steps import synthesize

snakemake = globals()["snakemake"]
synthesize(snakemake.params.out, dict(snakemake.params.options), snakemake.log[0])
