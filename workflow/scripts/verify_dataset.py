"""Thin adapter: the verify_dataset rule -> agiqa.steps.verify_dataset."""

from agiqa.steps import verify_dataset

snakemake = globals()["snakemake"]
verify_dataset(
    snakemake.wildcards.dataset,
    reader=snakemake.params.reader,
    root=snakemake.params.root,
    options=dict(snakemake.params.options),
    allowed_link_roots=list(snakemake.params.allowed_link_roots),
    out=snakemake.output[0],
    log_file=snakemake.log[0],
    max_images=snakemake.params.max_images,
)
