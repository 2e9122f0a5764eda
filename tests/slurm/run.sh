#!/usr/bin/env bash
# `make test-slurm`: run a small demo pipeline locally and through profiles/slurm on a
# single-node SLURM cluster started here, and require identical result tables.
# It starts daemons (munged, slurmctld, slurmd) and stops them on exit; it fails, never skips,
# when SLURM cannot be brought up.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d /tmp/agiqa-slurm-test.XXXXXX)
cluster=$work/cluster
cleanup() {
  SLURM_CONF=$cluster/slurm.conf scancel -u "$(id -un)" 2>/dev/null || true
  "$repo/tests/slurm/cluster.sh" stop "$cluster" || true
}
trap cleanup EXIT

# A small configuration: the demo's models and protocol, fewer images, folds and epochs.
mkdir -p "$work/local/config" "$work/slurm/config"
python - "$repo/config/config.yaml" "$work/local/config/config.yaml" <<'PY'
import sys, yaml
config = yaml.safe_load(open(sys.argv[1]))
config["datasets"]["synthetic"]["synthesize"].update(n_prompts=20, images_per_prompt=3)
config["protocols"]["kfold_grouped"]["folds"] = 2
# As the SLURM run's --set-threads below: both runs must compute with the same thread count.
config["train_threads"] = 2
for entry in config["models"].values():
    if "train" in entry:
        entry["train"]["epochs"] = 2
for stand_in in (config.get("pretrained_backbones") or {}).values():
    stand_in["synthesize"] = {**stand_in["synthesize"], "n_prompts": 16, "images_per_prompt": 2}
    stand_in.update(epochs=1, batch_size=8)
yaml.safe_dump(config, open(sys.argv[2], "w"))
PY
cp "$work/local/config/config.yaml" "$work/slurm/config/config.yaml"

echo "== local run"
(cd "$work/local" && snakemake --snakefile "$repo/Snakefile" --cores 2 \
  --configfile config/config.yaml --workflow-profile none > run.log 2>&1) \
  || { tail -40 "$work/local/run.log"; exit 1; }

echo "== starting a single-node SLURM cluster"
eval "$("$repo/tests/slurm/cluster.sh" start "$cluster")"

echo "== SLURM run (profiles/slurm)"
# The test node has 2 CPUs and no GPU: jobs ask for what it has.
(cd "$work/slurm" && snakemake --snakefile "$repo/Snakefile" \
  --workflow-profile "$repo/profiles/slurm" --configfile config/config.yaml \
  --set-threads train_fold=2 \
  --set-resources train_fold:gpu=0 train_fold:mem_mb=2000 train_fold:runtime=30 \
  --default-resources mem_mb=1000 runtime=30 > run.log 2>&1) \
  || { tail -60 "$work/slurm/run.log"; exit 1; }

submitted=$(grep -c "submitted with SLURM jobid" "$work/slurm/run.log" || true)
echo "== $submitted jobs went through SLURM"
[[ $submitted -gt 0 ]] || { echo "no job was submitted to SLURM" >&2; exit 1; }
# The displayed table must be identical; the CSV's full-precision numbers may differ in the last
# digits (BLAS threads differ between a job step and a local process).
if python - "$work/local/results/demo/tables" "$work/slurm/results/demo/tables" <<'PY'
import sys
from pathlib import Path

import numpy as np
import pandas as pd

local, slurm = (Path(p) for p in sys.argv[1:3])
same_text = (local / "main.md").read_text() == (slurm / "main.md").read_text()
a, b = pd.read_csv(local / "main.csv"), pd.read_csv(slurm / "main.csv")
numbers = a.select_dtypes("number").columns
same_numbers = a.drop(columns=numbers).equals(b.drop(columns=numbers)) and np.allclose(
    a[numbers], b[numbers], rtol=1e-6, atol=1e-6, equal_nan=True
)
sys.exit(0 if same_text and same_numbers else 1)
PY
then
  echo "SLURM and local tables agree: 1 passed, 0 failed"
else
  diff "$work/local/results/demo/tables/main.md" "$work/slurm/results/demo/tables/main.md" || true
  echo "SLURM and local tables differ: 0 passed, 1 failed"
  exit 1
fi
