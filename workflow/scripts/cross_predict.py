"""Thin adapter: the cross_predict rule -> agiqa.cross_dataset.predict_step."""

from agiqa.cross_dataset import predict_step

snakemake = globals()["snakemake"]
wildcards = snakemake.wildcards
predict_step(
    snakemake.config,
    wildcards.dataset,
    wildcards.model,
    wildcards.test,
    threads=snakemake.threads,
    gpu=int(snakemake.resources.get("gpu", 0)) > 0,
    log_file=snakemake.log[0],
)
