"""Thin adapter: the import_external rule -> agiqa.evaluate.external.import_external_step."""

from agiqa.evaluate.external import import_external_step

snakemake = globals()["snakemake"]
import_external_step(
    snakemake.wildcards.external,
    snakemake.input.predictions,
    splits=snakemake.input.splits,
    manifest=snakemake.input.manifest,
    dataset=snakemake.wildcards.dataset,
    protocol=snakemake.wildcards.protocol,
    settings=dict(snakemake.params.protocol),
    out=snakemake.output[0],
    log_file=snakemake.log[0],
)
