"""Generic reader (registered as ``csv``): one's own study from a CSV or XLSX table, no code.

Layout: ``<root>/<metadata>`` (a CSV or an .xlsx whose first sheet is read), one header row, one
row per image; the images under ``<root>/<images>/``. Every option comes from the dataset's
config entry:

- ``metadata``: the table's path under the root (default ``data.csv``).
- ``columns``: which header names hold what. ``image`` (default ``image``) and ``prompt``
  (default ``prompt``) are required; ``prompt_group`` and ``generator`` are optional. Without a
  ``prompt_group`` column, identical prompt strings share a group (``p<index>``); with one, its
  values are the group ids as written. Without a ``generator`` column, the generator is
  ``unknown`` (noted in the manifest).
- ``dimensions``: rated dimension name -> ``{column, kind, low, high, std}``. ``column`` (default:
  the dimension's name) holds the MOS; ``kind`` is ``quality`` (image alone), ``alignment``
  (needs the prompt) or ``overall`` (one score mixing both; each model states how it maps it,
  docs/methods.md); ``[low, high]`` is the native scale, and a score outside it is an error;
  ``std`` optionally names a column of per-image standard deviations. At least one dimension.
- ``images``: sub-folder of the root holding the images (default: the root); manifest paths
  start with it.

Every row is labelled (an empty score is an error, never filled). Bad cells are DataErrors naming
the file and row; bad options are ConfigErrors.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

from agiqa.data.manifest import DIMENSION_KINDS, Dimension, Manifest
from agiqa.data.readers._common import (
    READERS,
    Table,
    build_frame,
    check_unique,
    group_ids,
    image_paths,
    images_folder,
    require_file,
    score_column,
    std_column,
    table_with_header,
    text_column,
)
from agiqa.errors import ConfigError

ROLES = ("image", "prompt", "prompt_group", "generator")
DEFAULT_COLUMNS = {"image": "image", "prompt": "prompt"}
DIMENSION_KEYS = ("column", "kind", "low", "high", "std")
# becomes part of the manifest's mos_<name> column, so it must be a plain identifier
DIMENSION_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
SUFFIXES = (".csv", ".xlsx")


@READERS.register("csv")
def read_csv_dataset(
    root: Path,
    dataset: str = "csv",
    *,
    dimensions: Mapping[str, Mapping[str, object]] | None = None,
    metadata: str = "data.csv",
    columns: Mapping[str, str] | None = None,
    images: str = "",
) -> Manifest:
    """Read one's own CSV/XLSX table into a manifest; see the module docstring for the options.

    Args:
        root: the dataset root.
        dataset: the manifest's dataset name.
        dimensions: rated dimension name -> ``{column, kind, low, high, std}``.
        metadata: the table's path under ``root``.
        columns: role (image, prompt, prompt_group, generator) -> header name.
        images: sub-folder of ``root`` holding the images.

    Raises:
        ConfigError: a missing or malformed option.
        DataError: a bad table or cell, naming the file and row.
    """
    dims, score_of, std_of = _dimensions(dimensions)
    roles = _columns(columns)
    path = require_file(Path(root) / _metadata_path(metadata), _layout(metadata, roles), Path(root))
    required = [*roles.values(), *score_of.values(), *std_of.values()]
    table = table_with_header(path, list(dict.fromkeys(required)))
    names = image_paths(text_column(table, roles["image"]), table.rows, path, images)
    check_unique(names, table.rows, path)
    prompts = text_column(table, roles["prompt"])
    notes: list[str] = []
    base = {
        "image": names,
        "prompt": prompts,
        "prompt_group": _groups(table, roles, prompts),
        "generator": _generators(table, roles, notes),
        "subset": ["all"] * len(table),
        "labelled": [True] * len(table),
    }
    scores: dict[str, list[float]] = {}
    for dim in dims:
        scores[dim.mos_column] = score_column(table, score_of[dim.name], dim)
        if dim.has_std:
            scores[dim.std_column] = std_column(table, std_of[dim.name])
    return Manifest(dataset, build_frame(base, scores), dims, notes, str(path))


def _metadata_path(metadata: str) -> str:
    if not isinstance(metadata, str) or Path(metadata).suffix.lower() not in SUFFIXES:
        raise ConfigError(f"metadata must name a .csv or .xlsx file, not {metadata!r}")
    relative = images_folder(metadata, "metadata")  # the rule of every path under the root
    if not relative:
        raise ConfigError(f"metadata must name a file under the root, not {metadata!r}")
    return relative


def _layout(metadata: str, roles: Mapping[str, str]) -> str:
    listed = ", ".join(roles.values())
    return f"<root>/{metadata} with a header row naming the columns {listed} and the scores"


def _columns(columns: Mapping[str, str] | None) -> dict[str, str]:
    """Role -> header name, with the defaults filled in for image and prompt."""
    given = dict(columns or {})
    unknown = sorted(set(given) - set(ROLES))
    if unknown:
        raise ConfigError(f"columns: unknown role(s) {unknown}; the roles are {list(ROLES)}")
    for role, name in given.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"columns.{role} must be a column name, not {name!r}")
    return DEFAULT_COLUMNS | {role: name.strip() for role, name in given.items()}


def _dimensions(
    dimensions: Mapping[str, Mapping[str, object]] | None,
) -> tuple[tuple[Dimension, ...], dict[str, str], dict[str, str]]:
    """The dimensions, and per dimension its MOS column and (when given) its std column."""
    if not dimensions or not isinstance(dimensions, Mapping):
        raise ConfigError(
            "the csv reader needs dimensions: name -> {column, kind, low, high, std},"
            " e.g. {quality: {column: mos, kind: quality, low: 1, high: 5}}"
        )
    dims: list[Dimension] = []
    score_of: dict[str, str] = {}
    std_of: dict[str, str] = {}
    for name, spec in dimensions.items():
        dim, column, std = _dimension(name, spec)
        dims.append(dim)
        score_of[name] = column
        if std is not None:
            std_of[name] = std
    return tuple(dims), score_of, std_of


def declared_dimensions(options: Mapping[str, object]) -> tuple[str, ...] | None:
    """The dimension names the ``dimensions`` option defines (``readers.declared_dimensions``)."""
    dimensions = options.get("dimensions")
    return tuple(str(name) for name in dimensions) if isinstance(dimensions, Mapping) else None


def _dimension(name: str, spec: object) -> tuple[Dimension, str, str | None]:
    where = f"dimensions.{name}"
    if not isinstance(name, str) or not DIMENSION_NAME.match(name):
        raise ConfigError(f"{where}: a dimension name is letters, digits and _, from a letter")
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where} must be a mapping with keys {list(DIMENSION_KEYS)}")
    unknown = sorted(set(spec) - set(DIMENSION_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; the keys are {DIMENSION_KEYS}")
    if spec.get("kind") not in DIMENSION_KINDS:
        raise ConfigError(f"{where}.kind must be one of {DIMENSION_KINDS}")
    low, high = (_bound(spec.get(key), f"{where}.{key}") for key in ("low", "high"))
    if not high > low:
        raise ConfigError(f"{where}: the scale [{low:g}, {high:g}] is empty (high <= low)")
    column = _column_name(spec.get("column", name), f"{where}.column")
    std = spec.get("std")
    std = None if std is None else _column_name(std, f"{where}.std")
    return Dimension(name, str(spec["kind"]), low, high, has_std=std is not None), column, std


def _bound(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a finite number, not {value!r}")
    return float(value)


def _column_name(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} must be a column name, not {value!r}")
    return value.strip()


def _groups(table: Table, roles: Mapping[str, str], prompts: list[str]) -> list[str]:
    if "prompt_group" in roles:
        return text_column(table, roles["prompt_group"])
    return group_ids(prompts)


def _generators(table: Table, roles: Mapping[str, str], notes: list[str]) -> list[str]:
    if "generator" in roles:
        return text_column(table, roles["generator"])
    notes.append("no generator column configured; generator = 'unknown'")
    return ["unknown"] * len(table)
