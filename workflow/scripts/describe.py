"""Thin adapter: the describe rule -> agiqa.describe.cli.run_job (same path as `agiqa describe`)."""

import sys

from agiqa.describe.cli import run_job
from agiqa.describe.workflow import describe_locations

snakemake = globals()["snakemake"]
describer = snakemake.wildcards.describer
sys.exit(
    run_job(
        {**snakemake.params.describer, **describe_locations(snakemake.config, describer)},
        dataset=snakemake.wildcards.dataset,
        out=snakemake.output[0],
        manifest=snakemake.input.manifest,
        root=snakemake.params.root,
        reader=snakemake.params.reader,
        log_file=snakemake.log[0],
    )
)
