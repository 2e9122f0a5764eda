"""Display names of models, datasets, dimensions and protocols for the paper's tables and figures.

Configured as ``display_name`` in a model's or dataset's config entry, and as
``report.display_names: {<dimension or protocol>: <name>}``. Identifiers stay in file names, CSV
files and MLflow; only what a reader sees changes. Unnamed dimensions are capitalised
(``quality`` -> ``Quality``); other unnamed things keep their identifier.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: Readable names of the dimensions the dataset readers produce.
DIMENSION_DEFAULTS = {
    "align": "Alignment",
    "alignment": "Alignment",
    "quality": "Quality",
    "overall": "Overall",
    "authenticity": "Authenticity",
    "correspondence": "Correspondence",
}


@dataclass(frozen=True)
class DisplayNames:
    """Identifier -> name shown to readers, per kind of thing."""

    models: Mapping[str, str] = field(default_factory=dict)
    datasets: Mapping[str, str] = field(default_factory=dict)
    dimensions: Mapping[str, str] = field(default_factory=dict)
    protocols: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Mapping) -> DisplayNames:
        """Names from a workflow config (entries' ``display_name``, ``report.display_names``)."""

        def entries(section: str) -> dict[str, str]:
            found = (config.get(section) or {}).items()
            return {k: str(v["display_name"]) for k, v in found if v.get("display_name")}

        extra = dict((config.get("report") or {}).get("display_names") or {})
        protocols = {k: extra.pop(k) for k in list(extra) if k in (config.get("protocols") or {})}
        models = {**entries("models"), **entries("external")}  # external: models not trained
        return cls(models, entries("datasets"), extra, protocols)

    @classmethod
    def from_dict(cls, raw: Mapping | None) -> DisplayNames:
        """The inverse of ``to_dict`` (what the workflow passes to its report scripts)."""
        raw = raw or {}
        return cls(
            **{k: dict(raw.get(k) or {}) for k in ("models", "datasets", "dimensions", "protocols")}
        )

    def to_dict(self) -> dict[str, dict[str, str]]:
        return {
            "models": dict(self.models),
            "datasets": dict(self.datasets),
            "dimensions": dict(self.dimensions),
            "protocols": dict(self.protocols),
        }

    def model(self, name: str) -> str:
        return self.models.get(name, name)

    def dataset(self, name: str) -> str:
        return self.datasets.get(name, name)

    def dimension(self, name: str) -> str:
        default = DIMENSION_DEFAULTS.get(name, name.replace("_", " ").capitalize())
        return self.dimensions.get(name, default)

    def protocol(self, name: str) -> str:
        return self.protocols.get(name, name)
