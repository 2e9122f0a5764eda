"""Thin adapter: the cross_train rule -> agiqa.train.fold.run_fold on A's train/val split."""

import logging

from agiqa.cross_dataset import fold_job
from agiqa.logs import configure_logging
from agiqa.train.fold import Preempted, run_fold
from agiqa.train.gpu import acquire_gpu

snakemake = globals()["snakemake"]
configure_logging(snakemake.log[0])
log = logging.getLogger("agiqa.train")
wildcards = snakemake.wildcards
try:
    # Before CUDA starts: pick a free GPU for this job (no-op on CPU-only machines and in SLURM).
    lease = acquire_gpu() if int(snakemake.resources.get("gpu", 0)) > 0 else None
    job = fold_job(snakemake.config, wildcards.dataset, wildcards.model, threads=snakemake.threads)
    run_fold(job)
except Preempted as stop:
    log.warning("%s: the rerun resumes from the last epoch's checkpoint", stop)
    raise
except Exception:
    log.exception("cross-dataset training job failed")
    raise
