"""Thin adapter: the train_fold rule's inputs -> agiqa.steps.train_job (run_fold)."""

from functools import partial

from agiqa.pipeline import fold_job, live_tracking
from agiqa.steps import train_job

snakemake = globals()["snakemake"]
wildcards = snakemake.wildcards
make_job = partial(
    fold_job,
    snakemake.config,
    wildcards.protocol,
    wildcards.dataset,
    wildcards.model,
    int(wildcards.split),
    threads=snakemake.threads,
)
train_job(
    make_job,
    gpu=int(snakemake.resources.get("gpu", 0)) > 0,
    log_file=snakemake.log[0],
    tracking=live_tracking(snakemake.config),
)
