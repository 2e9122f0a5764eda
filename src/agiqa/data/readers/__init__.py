"""Dataset readers: each turns one dataset's official metadata files into the canonical Manifest.

Readers register themselves in ``READERS`` under the names ``agiqa-1k``, ``agiqa-3k``,
``aigciqa2023`` and ``aigiqa-20k``; each is called as ``read(root, dataset, **options)``.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from agiqa.data.manifest import Manifest
from agiqa.data.readers import agiqa1k, agiqa3k, aigciqa2023, aigiqa20k
from agiqa.data.readers._common import READERS, ReaderFn
from agiqa.errors import ConfigError

__all__ = ["READERS", "ReaderFn", "read_dataset"]

# imported for their registration side effect
_REGISTERED = (agiqa1k, agiqa3k, aigciqa2023, aigiqa20k)


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
