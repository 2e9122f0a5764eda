"""Thin adapter: the manifest rule -> agiqa.steps.build_manifest."""

from agiqa.steps import build_manifest

snakemake = globals()["snakemake"]
build_manifest(
    snakemake.wildcards.dataset,
    reader=snakemake.params.reader,
    root=snakemake.params.root,
    options=dict(snakemake.params.options),
    out=snakemake.output.csv,
    log_file=snakemake.log[0],
    max_images=snakemake.params.max_images,
)
