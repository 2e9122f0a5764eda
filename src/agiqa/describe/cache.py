"""Persistent description cache: one small JSON file per request key.

Layout: ``<root>/<key[:2]>/<key>.json``, where ``key`` is the sha256 of the canonical JSON of
everything that can change the answer (image content hash, backend, model, endpoint, system and
user text, generation parameters). Files are written to a temporary name in the same folder and
renamed with ``os.replace``, which is atomic, so concurrent jobs never see a half-written entry
and a killed job leaves either the whole entry or nothing. No lock is needed: two jobs that
describe the same image write equivalent entries and the last rename wins.

Only usable descriptions are stored: the caller never hands over an error, an empty or a
truncated reply, and ``put`` refuses an empty description as a last guard. Entries hold the
description, model, usage and a timestamp, never credentials or the endpoint URL.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("agiqa.describe")

CACHE_VERSION = 1


def cache_key(fields: Mapping[str, Any]) -> str:
    """The sha256 of the canonical JSON of ``fields`` (sorted keys, no whitespace)."""
    canonical = json.dumps(
        {"cache_version": CACHE_VERSION, **fields},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class DescriptionCache:
    """Description entries under ``root``, safe for concurrent readers and writers."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The entry for ``key``, or None when absent or unreadable (then it is redone)."""
        path = self.path(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            log.warning("ignoring unreadable cache entry %s: %s", path, error)
            return None
        if not isinstance(entry, dict) or not str(entry.get("description", "")).strip():
            log.warning("ignoring cache entry %s without a description", path)
            return None
        return entry

    def put(self, key: str, entry: Mapping[str, Any]) -> Path:
        """Store ``entry`` atomically; it must carry a non-empty ``description``."""
        if not str(entry.get("description", "")).strip():
            raise ValueError("refusing to cache an empty description")
        record = {**entry, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(record, ensure_ascii=False, indent=1, sort_keys=True) + "\n"
        _atomic_write(path, data.encode("utf-8"))
        return path

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("*/*.json")) if self.root.is_dir() else 0


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            # fsync so that a crash right after the rename cannot leave an empty file behind
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
