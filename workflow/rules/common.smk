import re
from pathlib import Path

from snakemake.utils import validate

from agiqa.config_checks import check_config
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
    model_entry,
    protocol_of,
    reader_options,
    stand_in_backbones,
)


validate(config, schema="../schemas/config.schema.yaml")
# What the schema cannot say: model entries against their model's signature, names, roots.
check_config(config)

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
    tables = [f"{LAYOUT.tables_dir()}/{name}" for name in ("main.md", "val.md")]
    tracked = [f"{LAYOUT.results}/dvc/tracked.json"] if tracked_datasets() else []
    return tables + description_targets(config, LAYOUT.results) + tracked
