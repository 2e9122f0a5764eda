"""What a rehearsal overlay may change in config/paper.yaml: amounts and locations, nothing else.

The rule is a list of key-path patterns (``*`` stands for one name that must already exist in
the paper config: a dataset, model, protocol or describer), not a frozen copy of paper.yaml, so
the paper config can grow and the rule still holds. On top of the paths:

- an overlay never adds a dataset, model, protocol or describer (``*`` must name one of the
  paper's);
- a protocol's ``models`` list (which models it runs) may shrink, but on the merged config
  every model x dataset cell still runs under at least one protocol, and every protocol runs
  at least one model;
- ``cross_dataset.pairs`` may shrink to a list of pairs of the paper's datasets; the models that
  cross stay the paper's, so each trainable model still runs every pair that is left.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

#: Allowed key paths (``*``: one existing name; a final path covers everything below it).
ALLOWED = (
    # how many images, folds, repeats, threads, resamples: amounts
    "train_threads",
    "datasets.*.max_images",
    "protocols.*.folds",
    "protocols.*.repeats",
    "protocols.*.models",
    "models.*.train.epochs",
    "models.*.anchors",
    "models.*.train.batch_size",
    "models.*.train.eval_batch_size",
    "models.*.per_dataset.*.train.batch_size",
    "models.*.per_dataset.*.train.eval_batch_size",
    "cross_dataset.pairs",
    "report.resamples",
    # where things are: the device, cache folders, endpoints, the DVC remote, the MLflow store
    "device",
    "feature_cache_dir",
    "image_cache_dir",
    "describers.*.base_url",
    "describers.*.download_dir",
    "describers.*.cache_dir",
    "dvc.remote.url",
    "mlflow.db",
)
#: Top-level sections whose ``*`` names a paper entry.
NAMED = ("datasets", "models", "protocols", "describers")


def key_paths(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every leaf path of a nested mapping (lists and scalars are leaves)."""
    for key, value in tree.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping) and value:
            yield from key_paths(value, path)
        else:
            yield path


def _matches(path: tuple[str, ...], pattern: str) -> bool:
    parts = pattern.split(".")
    return len(path) == len(parts) and all(
        p in ("*", name) for p, name in zip(parts, path, strict=True)
    )


def problems(paper: Mapping[str, Any], overlay: Mapping[str, Any]) -> list[str]:
    """Why ``overlay`` is not a rehearsal overlay of ``paper`` (empty: it is one)."""
    found = []
    for path in key_paths(overlay):
        dotted = ".".join(path)
        if not any(_matches(path, pattern) for pattern in ALLOWED):
            found.append(f"{dotted}: not an amount or a location the rehearsal may change")
            continue
        for section, name in _named(path):
            if name not in (paper.get(section) or {}):
                found.append(f"{dotted}: {section} has no '{name}' in the paper config")
    if not found:
        found += _coverage(paper, overlay)
    return found


def _named(path: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    """(section, name) of each ``*`` position of a path: the paper entries it must name."""
    if path[0] in NAMED and len(path) > 1:
        yield path[0], path[1]
    if path[0] == "models" and len(path) > 3 and path[2] == "per_dataset":
        yield "datasets", path[3]


def merged(paper: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``overlay`` over ``paper`` key by key, as Snakemake merges ``--configfile`` files."""
    result = copy.deepcopy(dict(paper))
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _coverage(paper: Mapping[str, Any], overlay: Mapping[str, Any]) -> list[str]:
    config = merged(paper, overlay)
    models, datasets = list(config["models"]), list(config["datasets"])
    runs = {
        name: set(protocol["models"] if protocol.get("models") is not None else models)
        for name, protocol in config["protocols"].items()
    }
    found = [f"protocols.{name}.models: runs no model" for name, ran in runs.items() if not ran]
    unknown = sorted({m for ran in runs.values() for m in ran} - set(models))
    found += [f"protocols: unknown model '{m}'" for m in unknown]
    found += [
        f"model '{m}' runs under no protocol"
        for m in models
        if not any(m in r for r in runs.values())
    ]
    pairs = (config.get("cross_dataset") or {}).get("pairs", "all")
    if "cross_dataset" in overlay and pairs != "all":
        for pair in pairs if isinstance(pairs, list) else [pairs]:
            tests = pair.get("test") if isinstance(pair, Mapping) else None
            named = [pair.get("train")] if isinstance(pair, Mapping) else [None]
            named += tests if isinstance(tests, list) else [tests]
            if not named[1:] or any(name not in datasets for name in named):
                found.append(f"cross_dataset.pairs: {pair!r} is not a pair of paper datasets")
    return found


def check(paper: Mapping[str, Any], *overlays: Mapping[str, Any]) -> None:
    """Raise ValueError listing every problem of every overlay."""
    listed = [f"overlay {i + 1}: {p}" for i, o in enumerate(overlays) for p in problems(paper, o)]
    if listed:
        raise ValueError("not a rehearsal overlay of the paper config:\n" + "\n".join(listed))
