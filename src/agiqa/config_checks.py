"""Checks of a workflow config that its JSON schema cannot express, run at parse (dry-run) time.

A typo in a model entry (``lrr: 1.0e-3``) must fail before any job starts, naming the entry and
the key, not as a traceback inside a fold job an hour later.
"""

from __future__ import annotations

import inspect
import re

from agiqa.errors import ConfigError

#: Dataset, model, protocol, describer, backbone and experiment names become paths and
#: wildcards: a safe pattern keeps them out of any shell and file-system trouble.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
NAMED_SECTIONS = ("datasets", "models", "protocols", "describers", "pretrained_backbones")


def check_config(config: dict) -> None:
    """Raise a ConfigError naming the first problem: a bad name or a bad model setting."""
    from agiqa.cross_dataset import cross_settings
    from agiqa.pipeline import protocol_models, protocol_of
    from agiqa.report.results import ReportSettings

    _check_names(config)
    for name in config.get("protocols") or {}:
        try:
            protocol_of(config, name)
        except ConfigError as error:
            raise ConfigError(f"protocols.{name}: {error}") from None
        protocol_models(config, name)
    for name in config.get("models") or {}:
        check_model_entry(config, name)
    cross_settings(config)  # names the bad pair, model or setting of cross_dataset
    try:
        ReportSettings.from_config(config.get("report"))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"report: {error}") from None


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


def check_model_entry(config: dict, name: str) -> None:
    """The entry (and each of its per-dataset presets) binds to its model's constructor."""
    from agiqa.models import MODELS
    from agiqa.models.base import PIPELINE_KEYS
    from agiqa.pipeline import model_entry

    datasets = [None, *(config["models"][name].get("per_dataset") or {})]
    for dataset in datasets:
        entry = model_entry(config, name, dataset)
        where = f"models.{name}" + (f".per_dataset.{dataset}" if dataset else "")
        try:
            model_class = MODELS.get(entry["type"])
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from None
        kwargs = {k: v for k, v in entry.items() if k not in PIPELINE_KEYS}
        _bind(model_class, kwargs, where, entry["type"])


def _bind(model_class: type, kwargs: dict, where: str, model_type: str) -> None:
    signature = inspect.signature(model_class.__init__)
    parameters = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    known = [n for n in parameters if n not in ("self", "dimensions")]
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ConfigError(
            f"{where}: unknown setting(s) {unknown} for model type '{model_type}' "
            f"(known: {', '.join(known)})"
        )
    missing = [
        n
        for n in known
        if parameters[n].default is inspect.Parameter.empty
        and parameters[n].kind is not inspect.Parameter.VAR_POSITIONAL
        and n not in kwargs
    ]
    if missing:
        raise ConfigError(f"{where}: model type '{model_type}' needs the setting(s) {missing}")
