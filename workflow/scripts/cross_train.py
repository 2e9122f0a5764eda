"""Thin adapter: the cross_train rule -> agiqa.steps.train_job on A's train/val split."""

from functools import partial

from agiqa.cross_dataset import fold_job
from agiqa.steps import train_job

snakemake = globals()["snakemake"]
wildcards = snakemake.wildcards
make_job = partial(
    fold_job, snakemake.config, wildcards.dataset, wildcards.model, threads=snakemake.threads
)
train_job(make_job, gpu=int(snakemake.resources.get("gpu", 0)) > 0, log_file=snakemake.log[0])
