"""Dataset readers: each turns one dataset's official metadata files into the canonical Manifest.

Readers register themselves in ``READERS`` under the names ``agiqa-1k``, ``agiqa-3k``,
``aigciqa2023``, ``aigiqa-20k`` and ``csv`` (one's own study, configured by options); each is
called as ``read(root, dataset, **options)``. Every reader normalises its image names
(``readers._common.image_paths``) and takes an ``images`` option: the sub-folder of the root
holding the images, which then starts every manifest path.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from pathlib import Path

from agiqa.data.manifest import Dimension, Manifest
from agiqa.data.readers import agiqa1k, agiqa3k, aigciqa2023, aigiqa20k, generic_csv
from agiqa.data.readers._common import READERS, ReaderFn
from agiqa.errors import ConfigError

__all__ = ["READERS", "ReaderFn", "declared_dimensions", "options_from_json", "read_dataset"]

# imported for their registration side effect
_REGISTERED = (agiqa1k, agiqa3k, aigciqa2023, aigiqa20k, generic_csv)


def read_dataset(
    reader: str, root: str | Path, dataset: str | None = None, **options: object
) -> Manifest:
    """Read a dataset with the named reader and check the manifest against its contract.

    ``dataset`` (default: the reader name) names the result, so one format can serve several
    datasets (the synthetic dataset is read with ``agiqa-3k``). Unknown options are a ConfigError.
    """
    read = READERS.get(reader)
    name = dataset or reader
    try:
        inspect.signature(read).bind(Path(root), name, **options)
    except TypeError as exc:
        raise ConfigError(f"dataset reader '{reader}': {exc}") from None
    manifest = read(Path(root), name, **options)
    manifest.validate()
    return manifest


def declared_dimensions(reader: str, options: Mapping[str, object]) -> tuple[str, ...] | None:
    """The dimension names a reader rates, known without reading a file (None when unknown).

    A reader module declares them as ``DIMENSIONS`` (or one ``DIMENSION``), or, when options
    define them, with a ``declared_dimensions(options)`` function (the csv reader).
    """
    module = inspect.getmodule(READERS.get(reader))
    from_options = getattr(module, "declared_dimensions", None)
    if callable(from_options):
        return from_options(options)
    declared = getattr(module, "DIMENSIONS", None) or (getattr(module, "DIMENSION", None),)
    names = tuple(dim.name for dim in declared if isinstance(dim, Dimension))
    return names or None


def options_from_json(text: str | None) -> dict[str, object]:
    """Reader options given on a command line as one JSON object (None or empty: none).

    Raises:
        ConfigError: not JSON, or not an object.
    """
    if not text or not text.strip():
        return {}
    try:
        options = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"reader options are not valid JSON ({exc}): {text}") from None
    if not isinstance(options, dict):
        raise ConfigError(f"reader options must be a JSON object, not {text}")
    return options
