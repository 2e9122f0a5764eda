"""Every key of a workflow config checked when it is read: the workflow's parse (dry run) and
the ``agiqa`` commands' ``--configfile`` run ``validate_config``.

A typo anywhere (``lrr: 1.0e-3``, ``backbone: {archh: ...}``, a describer's ``modle``) must fail
before any job starts, naming the file and the key, not as a traceback inside a job an hour
later. The checks derive from the code they protect, so a new key needs no list here: the
closed JSON schema (``workflow/schemas/config.schema.yaml``), each model's constructor and its
``check_settings`` (the parsers its constructor runs), each reader's signature and declared
dimensions, each describer backend's ``Options``. Credentials in a URL are refused first, so no
message (and no Snakemake param) ever carries one.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path

from agiqa.errors import ConfigError
from agiqa.safe_names import SAFE_NAME

NAMED_SECTIONS = ("datasets", "models", "protocols", "describers", "pretrained_backbones")


#: What to do instead of writing a credential into the config (any section).
CREDENTIALS_HINT = (
    "config values are recorded in .snakemake/metadata, the Snakemake log and the job logs, so "
    "credentials come from the environment only (a describer's api_key_env); a dataset archive "
    "behind a login can be downloaded by hand into resources/downloads/"
)


#: The closed JSON schema of the workflow config (absent from an installed copy of the package).
SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def validate_config(
    config: dict, files: Sequence[str | Path] = (), *, complete: bool = True
) -> None:
    """Check every key of every section, as the workflow's parse does; name the file and key.

    Args:
        config: The merged config.
        files: The config files it came from (named in the error).
        complete: False for a command that reads only some sections (``agiqa models list`` on
            a file with only ``models``): the schema's required top-level sections may be absent.

    Raises:
        ConfigError: ``"<files>: <key path>: <problem>"`` for the first problem found.
    """
    where = ", ".join(str(f) for f in files) or "the config"
    try:
        check_config(config, complete=complete)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def check_config(config: dict, *, complete: bool = True) -> None:
    """Raise a ConfigError naming the first problem: a credential, a key or value the schema
    refuses, a bad name, a bad model, dataset, describer or stand-in setting."""
    from agiqa.cross_dataset import cross_settings
    from agiqa.describe.credentials import check_no_credentials
    from agiqa.describe.workflow import describers
    from agiqa.pipeline import experiment_of, protocol_models, protocol_of
    from agiqa.report.results import ReportSettings

    # First, so that no later message echoes a secret: download URLs, DVC remotes, MLflow URIs;
    # describer entries refuse credential-like keys too, pointing to api_key_env.
    others = {key: value for key, value in config.items() if key != "describers"}
    check_no_credentials(others, "config", CREDENTIALS_HINT, names=False)
    for name, entry in (config.get("describers") or {}).items():
        if isinstance(entry, dict):
            check_no_credentials(entry, f"describer '{name}'")
    _check_schema(config, complete)
    _check_names(config)
    experiment_of(config)  # names from mlflow.experiment become folders too
    for name in config.get("protocols") or {}:
        try:
            protocol_of(config, name)
        except ConfigError as error:
            raise ConfigError(f"protocols.{name}: {error}") from None
        protocol_models(config, name)
    _check_datasets(config)
    for name in config.get("models") or {}:
        check_model_entry(config, name)
    _check_dimensions(config)
    _check_references(config)
    _check_stand_ins(config)
    describers(config)  # each key a job setting or an option of its backend
    cross_settings(config)  # names the bad pair, model or setting of cross_dataset
    check_external(config)
    try:
        ReportSettings.from_config(config.get("report"))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"report: {error}") from None


def _check_schema(config: dict, complete: bool) -> None:
    """The closed schema, with the offending key's path (never the whole config) in the error."""
    if not SCHEMA.is_file():
        return
    import jsonschema
    import yaml

    validator = jsonschema.Draft202012Validator(yaml.safe_load(SCHEMA.read_text()))
    errors = [
        e
        for e in validator.iter_errors(config)
        if complete or not (e.validator == "required" and not e.absolute_path)
    ]
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        path = ".".join(str(part) for part in error.absolute_path) or "top level"
        raise ConfigError(f"{path}: {error.message}")


def _check_datasets(config: dict) -> None:
    """Each dataset's reader exists and takes every option the entry gives it."""
    from agiqa.data.readers import READERS
    from agiqa.pipeline import reader_options

    for name, entry in (config.get("datasets") or {}).items():
        reader = entry.get("reader")
        if reader not in READERS.names():
            raise ConfigError(
                f"datasets.{name}.reader: unknown reader {reader!r} (known: "
                f"{', '.join(READERS.names())})"
            )
        options = reader_options(config, name)
        try:
            inspect.signature(READERS.get(reader)).bind(Path("."), name, **options)
        except TypeError as error:
            raise ConfigError(f"datasets.{name}: the {reader} reader: {error}") from None


def _check_dimensions(config: dict) -> None:
    """A model's ``dimensions`` are rated by every dataset it runs on (when the reader declares
    its dimensions without reading files), and its ``per_dataset`` presets name datasets."""
    from agiqa.data.readers import READERS, declared_dimensions
    from agiqa.pipeline import model_entry, reader_options

    datasets = config.get("datasets") or {}
    for model, entry in (config.get("models") or {}).items():
        for preset in entry.get("per_dataset") or {}:
            if preset not in datasets and preset not in READERS.names():
                raise ConfigError(
                    f"models.{model}.per_dataset.{preset}: no dataset {preset!r} in the config "
                    f"(datasets: {', '.join(datasets)}); a preset for a dataset this config does "
                    f"not run must be named after an official one ({', '.join(READERS.names())})"
                )
        for dataset, dataset_entry in datasets.items():
            wanted = model_entry(config, model, dataset).get("dimensions")
            rated = declared_dimensions(dataset_entry["reader"], reader_options(config, dataset))
            unknown = [d for d in wanted or () if rated is not None and d not in rated]
            if unknown:
                raise ConfigError(
                    f"models.{model}.dimensions: {unknown} not rated in dataset '{dataset}' "
                    f"(it rates {list(rated or ())})"
                )


def _check_references(config: dict) -> None:
    """Names that point elsewhere in the config: a model's describer, ``report.display_names``
    keys (a protocol, or a dimension a dataset rates)."""
    from agiqa.data.readers import declared_dimensions
    from agiqa.pipeline import model_entry, reader_options

    describers = config.get("describers") or {}
    datasets = config.get("datasets") or {}
    for model in config.get("models") or {}:
        for dataset in [None, *datasets]:
            describer = model_entry(config, model, dataset).get("descriptions")
            if describer is not None and describer not in describers:
                raise ConfigError(
                    f"models.{model}.descriptions: no describer {describer!r} in the config "
                    f"(describers: {', '.join(describers) or 'none'})"
                )
    rated = [
        declared_dimensions(e["reader"], reader_options(config, d)) for d, e in datasets.items()
    ]
    if any(names is None for names in rated):
        return  # a reader that learns its dimensions from its files: nothing to compare with
    known = {*(config.get("protocols") or {}), *(name for names in rated for name in names or ())}
    for key in (config.get("report") or {}).get("display_names") or {}:
        if key not in known:
            raise ConfigError(
                f"report.display_names.{key}: neither a protocol nor a dimension of the "
                f"datasets (known: {', '.join(sorted(known))})"
            )


def _check_stand_ins(config: dict) -> None:
    """A stand-in reference that is a misspelt ``pretrained_backbones`` name fails here, not as
    an unknown open_clip tag inside the job; a ``vit.checkpoint`` must exist or be a stand-in."""
    import difflib

    from agiqa.pipeline import STAND_IN_SLOTS, model_entry

    for name, stand_in in (config.get("pretrained_backbones") or {}).items():
        _check_stand_in(name, stand_in)
    known = list(config.get("pretrained_backbones") or {})
    for model in config.get("models") or {}:
        entry = model_entry(config, model)
        for section, key in STAND_IN_SLOTS:
            value = (entry.get(section) or {}).get(key)
            if not isinstance(value, str) or value in known or Path(value).is_file():
                continue
            close = difflib.get_close_matches(value, known, n=1, cutoff=0.8)
            if close or (section, key) == ("vit", "checkpoint"):
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(
                    f"models.{model}.{section}.{key}: {value!r} is neither a pretrained_backbones "
                    f"entry ({', '.join(known) or 'none'}) nor an existing file{hint}"
                )


#: The keys of a ``pretrained_backbones`` entry that belong to one kind only (the first one is
#: required for that kind).
STAND_IN_KIND_KEYS = {"clip": ("arch",), "vit": ("vit",), "mllm": ("mllm", "image_size", "tasks")}


def _check_stand_in(name: str, entry: dict) -> None:
    kind = entry.get("kind", "clip")
    where = f"pretrained_backbones.{name}"
    own = STAND_IN_KIND_KEYS.get(kind, ())
    if own and own[0] not in entry:
        raise ConfigError(f"{where}: kind {kind} needs '{own[0]}'")
    foreign = sorted(
        key for other, keys in STAND_IN_KIND_KEYS.items() if other != kind for key in keys
    )
    stray = [key for key in foreign if key in entry and key not in own]
    if stray:
        raise ConfigError(f"{where}: {stray} do not apply to kind {kind}")
    if kind == "mllm":
        from agiqa.models.mllm.backbone import TinySpec

        try:
            TinySpec.from_dict(entry["mllm"])
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from None


def _check_names(config: dict) -> None:
    names = [("experiment", config["experiment"])] if config.get("experiment") else []
    for section in NAMED_SECTIONS:
        names += [(f"{section}.{name}", name) for name in config.get(section) or {}]
    for where, name in names:
        if not SAFE_NAME.match(str(name)):
            raise ConfigError(
                f"{where}: the name {name!r} must match {SAFE_NAME.pattern} (it becomes a "
                "folder and a wildcard)"
            )


def check_external(config: dict) -> None:
    """``external:`` entries name a free row (not a trained model's) and a configured protocol
    and dataset for each predictions file."""
    models = config.get("models") or {}
    for name, entry in (config.get("external") or {}).items():
        if not SAFE_NAME.match(str(name)):
            raise ConfigError(f"external.{name}: the name must match {SAFE_NAME.pattern}")
        if name in models:
            raise ConfigError(
                f"external.{name}: a model of the same name is trained (models.{name})"
            )
        for protocol, files in (entry.get("predictions") or {}).items():
            where = f"external.{name}.predictions.{protocol}"
            if protocol not in (config.get("protocols") or {}):
                raise ConfigError(f"{where}: no protocol '{protocol}' in the config's protocols")
            for dataset, path in files.items():
                if dataset not in config["datasets"]:
                    raise ConfigError(f"{where}.{dataset}: no dataset '{dataset}' in the config")
                if not isinstance(path, str) or not path:
                    raise ConfigError(f"{where}.{dataset}: a predictions file path, not {path!r}")


def check_model_entry(config: dict, name: str) -> None:
    """The entry (and each of its per-dataset presets) binds to its model's constructor."""
    from agiqa.models.base import check_entry
    from agiqa.pipeline import model_entry

    datasets = [None, *(config["models"][name].get("per_dataset") or {})]
    for dataset in datasets:
        entry = model_entry(config, name, dataset)
        check_entry(entry, f"models.{name}" + (f".per_dataset.{dataset}" if dataset else ""))
