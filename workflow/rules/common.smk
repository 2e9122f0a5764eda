import re

from snakemake.utils import validate

from agiqa.describe.workflow import description_targets
from agiqa.models import MODELS
from agiqa.pipeline import (
    TABLE_FILES,
    Layout,
    dataset_root,
    descriptions_of,
    grid,
    model_entry,
    protocol_of,
    stand_in_backbones,
)


validate(config, schema="../schemas/config.schema.yaml")

LAYOUT = Layout()
DATASETS = list(config["datasets"])
SYNTHETIC = [d for d in DATASETS if "synthesize" in config["datasets"][d]]
STAND_INS = config.get("pretrained_backbones") or {}


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


def dataset_source(wildcards):
    """What a dataset's verification waits for: the rendered CSV of a synthetic dataset."""
    if wildcards.dataset in SYNTHETIC:
        return f"{LAYOUT.synthetic_root(wildcards.dataset)}/data.csv"
    return []


def downloaded_dataset(wildcards):
    """A real dataset's download marker, ancient: a `dvc pull` only renews its timestamp."""
    if wildcards.dataset in SYNTHETIC:
        return []
    return ancient(f"data/raw/{wildcards.dataset}/.agiqa-download.json")


def protocol_flags(wildcards):
    protocol = protocol_of(config, wildcards.protocol)
    return (
        f"--protocol {protocol.type} --folds {protocol.folds} --repeats {protocol.repeats} "
        f"--test-fraction {protocol.test_fraction} --val-fraction {protocol.val_fraction} "
        f"--seed {protocol.seed}"
    )


def descriptions_input(wildcards):
    """The description table a description-reading model consumes, if its entry names one."""
    path = descriptions_of(config, wildcards.dataset, wildcards.model)
    return [] if path is None else path


def stand_in_weights(wildcards):
    """The stand-in checkpoints a model entry names (config pretrained_backbones)."""
    entry = model_entry(config, wildcards.model, wildcards.dataset)
    return [LAYOUT.backbone(name) for name in stand_in_backbones(config, entry)]


def gpus_for(wildcards):
    model_type = config["models"][wildcards.model]["type"]
    return int(MODELS.get(model_type).uses_gpu)


def run_dirs():
    return [LAYOUT.run_dir(*job) for job in grid(config)]


def final_outputs():
    tables = [f"{LAYOUT.tables_dir()}/{name}" for name in TABLE_FILES]
    tracked = ["results/dvc/tracked.json"] if len(SYNTHETIC) < len(DATASETS) else []
    return tables + description_targets(config) + tracked
