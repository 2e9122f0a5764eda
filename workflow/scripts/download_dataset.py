"""Thin adapter: the download_dataset rule -> agiqa.steps.download_dataset."""

from pathlib import Path

from agiqa.steps import download_dataset

snakemake = globals()["snakemake"]
download_dataset(
    snakemake.params.dataset,
    root=str(Path(snakemake.output[0]).parent),
    source=snakemake.params.source,
    download=dict(snakemake.params.download),
    downloads="resources/downloads",
    log_file=snakemake.log[0],
)
