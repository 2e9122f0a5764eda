"""Display names of models, datasets, dimensions and protocols for the paper's tables and figures.

Configured as ``display_name`` in a model's or dataset's config entry, and as
``report.display_names: {<dimension or protocol>: <name>}``. Identifiers stay in file names, CSV
files and MLflow; only what a reader sees changes. Unnamed dimensions are capitalised
(``quality`` -> ``Quality``); other unnamed things keep their identifier.

A protocol's fold and repeat counts are facts of its settings, so they are never free text: the
label is derived from the settings ("Prompt-grouped 3-fold", "Image-level 5-fold × 2"), and a
display name names the protocol only ("Literature replica (image-level 5-fold × 2)"). A display
name that states a count itself is refused, since it could disagree with the settings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from agiqa.errors import ConfigError

#: Readable names of the dimensions the dataset readers produce.
DIMENSION_DEFAULTS = {
    "align": "Alignment",
    "alignment": "Alignment",
    "quality": "Quality",
    "overall": "Overall",
    "authenticity": "Authenticity",
    "correspondence": "Correspondence",
}


#: Split counts in free text: "5-fold", "x 2", "× 10", "80/20", "10 splits", "3 repeats".
_COUNTS = re.compile(
    r"\d+\s*-?\s*folds?\b|[x×]\s*\d+\b|\d+\s*/\s*\d+|\d+\s*(?:splits?|repeats?|times)\b",
    re.IGNORECASE,
)
_UNITS = {"prompt": "prompt-grouped", "image": "image-level"}


def protocol_wording(settings: Mapping) -> str:
    """The split scheme a protocol's settings define, e.g. ``prompt-grouped 3-fold`` or
    ``image-level 5-fold × 2`` (5 folds, 2 repeats)."""
    from agiqa.data.splits import Protocol

    protocol = Protocol.from_config(dict(settings))
    repeats = f" × {protocol.repeats}" if protocol.repeats > 1 else ""
    return f"{_UNITS.get(protocol.kind.unit, protocol.kind.unit)} {protocol.folds}-fold{repeats}"


def check_protocol_name(protocol: str, name: str, settings: Mapping | None = None) -> None:
    """Refuse a protocol display name that states split counts (the label derives them)."""
    found = _COUNTS.search(name)
    if found is None:
        return
    derived = f": the label derives '{protocol_wording(settings)}' from them" if settings else ""
    raise ConfigError(
        f"report.display_names.{protocol}: '{name}' states a split count ('{found.group(0)}'). "
        f"Fold and repeat counts come from the protocol's settings{derived}; let the display "
        "name name the protocol only (e.g. 'Literature replica'), or remove it"
    )


@dataclass(frozen=True)
class DisplayNames:
    """Identifier -> name shown to readers, per kind of thing."""

    models: Mapping[str, str] = field(default_factory=dict)
    datasets: Mapping[str, str] = field(default_factory=dict)
    dimensions: Mapping[str, str] = field(default_factory=dict)
    protocols: Mapping[str, str] = field(default_factory=dict)
    #: Protocol -> its resolved settings (agiqa.data.splits.Protocol), for the derived label.
    protocol_settings: Mapping[str, Mapping] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Mapping) -> DisplayNames:
        """Names from a workflow config (entries' ``display_name``, ``report.display_names``)."""

        def entries(section: str) -> dict[str, str]:
            found = (config.get(section) or {}).items()
            return {k: str(v["display_name"]) for k, v in found if v.get("display_name")}

        extra = dict((config.get("report") or {}).get("display_names") or {})
        configured = config.get("protocols") or {}
        protocols = {k: str(extra.pop(k)) for k in list(extra) if k in configured}
        settings = {
            k: {s: v for s, v in dict(entry).items() if s != "models"}
            for k, entry in configured.items()
        }
        for protocol, name in protocols.items():
            check_protocol_name(protocol, name, settings.get(protocol))
        models = {**entries("models"), **entries("external")}  # external: models not trained
        return cls(models, entries("datasets"), extra, protocols, settings)

    def with_protocol_settings(self, settings: Mapping[str, Mapping]) -> DisplayNames:
        """The same names, protocol labels derived from ``settings`` (those the runs used)."""
        return replace(self, protocol_settings={**self.protocol_settings, **settings})

    @classmethod
    def from_dict(cls, raw: Mapping | None) -> DisplayNames:
        """The inverse of ``to_dict`` (what the workflow passes to its report scripts)."""
        raw = raw or {}
        kinds = ("models", "datasets", "dimensions", "protocols", "protocol_settings")
        return cls(**{k: dict(raw.get(k) or {}) for k in kinds})

    def to_dict(self) -> dict[str, dict[str, str]]:
        return {
            "models": dict(self.models),
            "datasets": dict(self.datasets),
            "dimensions": dict(self.dimensions),
            "protocols": dict(self.protocols),
            "protocol_settings": {k: dict(v) for k, v in self.protocol_settings.items()},
        }

    def model(self, name: str) -> str:
        return self.models.get(name, name)

    def dataset(self, name: str) -> str:
        return self.datasets.get(name, name)

    def dimension(self, name: str) -> str:
        default = DIMENSION_DEFAULTS.get(name, name.replace("_", " ").capitalize())
        return self.dimensions.get(name, default)

    def protocol(self, name: str, note: str | None = None) -> str:
        """The protocol's label: its split scheme from its settings, after its display name
        when it has one; ``note`` (e.g. "test-selected") joins the parenthesis."""
        display = self.protocols.get(name)
        settings = self.protocol_settings.get(name)
        if settings is None:
            label = display or name
            return f"{label} ({note})" if note else label
        wording = protocol_wording(settings)
        if display is None:
            label = wording[0].upper() + wording[1:]
            return f"{label} ({note})" if note else label
        return f"{display} ({wording}{', ' + note if note else ''})"
