"""What the workflow needs to know about describers: targets, env vars, resources.

Config section (each entry is one describer; the keys beside ``backend`` and ``datasets`` go
to the job and to the backend, see ``RunSettings`` and the backends' ``Options``)::

    describers:
      published:
        backend: published
      doubao:
        backend: openai
        base_url: https://ark.cn-beijing.volces.com/api/v3
        model: doubao-1-5-vision-pro-32k-250115
        template: content_first
        api_key_env: ARK_API_KEY
        concurrency: 8
        rpm: 600
        budget_tokens: 5000000
        failure_patterns: ['^error', '^sorry']  # replaces the defaults (failures.py)
        datasets: [agiqa-3k]      # default: every dataset the backend applies to

Entries are checked when the config is read, before any of their values become params (which
Snakemake records in ``.snakemake/metadata`` and its log): a credential (an ``api_key:`` key, a
URL with ``user:key@``) is refused with a ConfigError pointing to ``api_key_env``
(``credentials.py``), and each of ``failure_patterns`` must be a valid regular expression.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agiqa.describe.credentials import check_no_credentials
from agiqa.describe.failures import check_patterns
from agiqa.errors import ConfigError

DEFAULT_CACHE_DIR = "resources/vlm_cache"


def description_path(dataset: str, describer: str, results: str = "results") -> str:
    """Output table of one (dataset, describer) job under an experiment's ``results`` folder."""
    return f"{results}/descriptions/{dataset}/{describer}.csv"


def describers(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    entries = config.get("describers") or {}
    for name, entry in entries.items():
        if not isinstance(entry, Mapping) or "backend" not in entry:
            raise ConfigError(f"describer '{name}' needs a mapping with a 'backend'")
        check_no_credentials(entry, f"describer '{name}'")
        try:
            check_patterns(entry.get("failure_patterns"))
        except ValueError as error:
            raise ConfigError(f"describer '{name}': {error}") from None
        _check_options(name, entry)
    return dict(entries)


def _check_options(name: str, entry: Mapping[str, Any]) -> None:
    """Every key of the entry is a job setting or an option of its backend (``modle:`` fails
    the dry run, not the job)."""
    from agiqa.describe.backends import BACKENDS
    from agiqa.describe.backends.base import parse_options
    from agiqa.describe.runner import split_entry

    owner = f"describer '{name}'"
    backend, _, options = split_entry(entry, owner)
    try:
        options_class = BACKENDS.get(backend).Options
    except ConfigError as error:
        raise ConfigError(f"{owner}: {error}") from None
    parse_options(options_class, options, owner)


def describer_entry(config: Mapping[str, Any], describer: str) -> dict[str, Any]:
    try:
        return dict(describers(config)[describer])
    except KeyError:
        raise ConfigError(f"describer '{describer}' is not in the config's describers") from None


def describe_params(config: Mapping[str, Any], describer: str) -> dict[str, Any]:
    """The describer entry as the job's params (the cache defaults to ``DEFAULT_CACHE_DIR``),
    without its backend's location options: Snakemake reruns a job whose params change, and a
    new mirror of hash-pinned files changes no output."""
    content, _ = _split_locations(describer_entry(config, describer))
    return {"cache_dir": DEFAULT_CACHE_DIR, **content}


def describe_locations(config: Mapping[str, Any], describer: str) -> dict[str, Any]:
    """The location options ``describe_params`` leaves out; the job reads them from the config."""
    _, locations = _split_locations(describer_entry(config, describer))
    return locations


def _split_locations(entry: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the entry without its backend's location options, those options)."""
    from agiqa.describe.backends import BACKENDS

    names = BACKENDS.get(str(entry["backend"])).location_options
    content = {k: v for k, v in entry.items() if k not in names}
    return content, {k: v for k, v in entry.items() if k in names}


def applies_to(config: Mapping[str, Any], describer: str, dataset: str) -> bool:
    """Whether a describer can describe a dataset (published tables exist for three only)."""
    entry = describer_entry(config, describer)
    if entry["backend"] != "published":
        return True
    from agiqa.describe.backends.published import SOURCES

    dataset_entry = config.get("datasets", {}).get(dataset) or {}
    if "synthesize" in dataset_entry:
        return False  # rendered images share a reader format, not the published images
    names = (entry.get("source"), dataset_entry.get("reader"), dataset)
    return any(name in SOURCES for name in names)


def describer_datasets(config: Mapping[str, Any], describer: str) -> list[str]:
    """The datasets a describer runs on: its ``datasets`` list, or all it applies to."""
    entry = describer_entry(config, describer)
    known = list(config.get("datasets", {}))
    listed = entry.get("datasets")
    if listed is None:
        return [d for d in known if applies_to(config, describer, d)]
    unknown = [d for d in listed if d not in known]
    if unknown:
        raise ConfigError(f"describer '{describer}': unknown dataset(s) {', '.join(unknown)}")
    return list(listed)


def description_targets(config: Mapping[str, Any], results: str = "results") -> list[str]:
    """Every description table the config asks for (add to ``rule all``)."""
    return [
        description_path(dataset, describer, results)
        for describer in describers(config)
        for dataset in describer_datasets(config, describer)
    ]


def describe_envvars(config: Mapping[str, Any]) -> list[str]:
    """Names of the API-key variables the configured openai describers read."""
    names = set()
    for entry in describers(config).values():
        if entry["backend"] == "openai":
            names.add(entry.get("api_key_env", "OPENAI_API_KEY"))
    return sorted(name for name in names if name)


def describe_gpus(config: Mapping[str, Any], describer: str) -> int:
    """1 for a local model that may use a GPU, else 0."""
    entry = describer_entry(config, describer)
    return int(entry["backend"] == "local" and entry.get("device", "auto") != "cpu")


def describe_api_slots(config: Mapping[str, Any], describer: str) -> int:
    """1 for a job that calls a remote API (cap them with ``--resources vlm_api=N``)."""
    return int(describer_entry(config, describer)["backend"] == "openai")
