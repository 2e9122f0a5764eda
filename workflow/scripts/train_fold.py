"""Thin adapter: the train_fold rule's inputs -> agiqa.train.fold.run_fold."""

import logging

from agiqa.logs import configure_logging
from agiqa.pipeline import fold_job
from agiqa.train.fold import Preempted, run_fold
from agiqa.train.gpu import acquire_gpu

snakemake = globals()["snakemake"]
configure_logging(snakemake.log[0])
log = logging.getLogger("agiqa.train")
wildcards = snakemake.wildcards
try:
    # Before CUDA starts: pick a free GPU for this job (no-op on CPU-only machines and in SLURM).
    lease = acquire_gpu() if int(snakemake.resources.get("gpu", 0)) > 0 else None
    job = fold_job(
        snakemake.config,
        wildcards.protocol,
        wildcards.dataset,
        wildcards.model,
        int(wildcards.split),
        threads=snakemake.threads,
    )
    run_fold(job)
except Preempted as stop:
    log.warning("%s: the rerun resumes from the last epoch's checkpoint", stop)
    raise
except Exception:
    log.exception("fold job failed")
    raise
