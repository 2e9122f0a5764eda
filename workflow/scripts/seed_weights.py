"""Thin adapter: the seed_weights rule -> agiqa.steps.seed_weights.

A missing weights package is a setup problem, not a bug: the job's log holds the one message
(the profiles show failed logs), the job exits without a traceback, and the jobs that need the
weights never start.
"""

import sys

from agiqa.errors import AgiqaError
from agiqa.steps import seed_weights

snakemake = globals()["snakemake"]
try:
    seed_weights(snakemake.wildcards.weights, snakemake.output[0], snakemake.log[0])
except AgiqaError:
    sys.exit(1)  # job_log wrote the message to the log
