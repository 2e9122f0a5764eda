# Quick start: `make demo` (set up + run the pipeline on the embedded default), `make test`.
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
BIN := $(abspath $(VENV))/bin
# Rules call the `agiqa` command: the venv's bin folder goes first on PATH.
export PATH := $(BIN):$(PATH)

# torch is installed first, pinned, because that release installs from the build machines' disk.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test lint dry-run-paper clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	snakemake --cores $(CORES)
	@echo
	@cat results/tables/main.md

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check src tests workflow/scripts
	$(BIN)/ruff format --check src tests workflow/scripts

dry-run-paper: setup
	snakemake -n --configfile config/paper.yaml

clean:
	rm -rf results logs benchmarks .snakemake
