"""Thin adapter: the train_fold rule's inputs -> agiqa.train.fold.run_fold."""

import logging

from agiqa.pipeline import fold_job
from agiqa.train.fold import configure_logging, run_fold

snakemake = globals()["snakemake"]
configure_logging(snakemake.log[0])
wildcards = snakemake.wildcards
try:
    job = fold_job(
        snakemake.config,
        wildcards.protocol,
        wildcards.dataset,
        wildcards.model,
        int(wildcards.split),
        threads=snakemake.threads,
    )
    run_fold(job)
except Exception:
    logging.getLogger("agiqa.train").exception("fold job failed")
    raise
