"""Frozen-encoder features, computed once and shared by every fold and config that can use them.

Features are keyed by content: the model's ``feature_key()`` (encoder weights and eval transform)
plus the SHA-256 of the image file's bytes or of the prompt text. Each entry is one ``.npy`` file
written atomically (temporary file, then ``os.replace``), so parallel jobs can fill the cache at
the same time: two jobs that compute the same entry write the same bytes.

File hashes are memoised by (path, size, mtime) in ``hashes.json`` so that a large dataset is
read once, not once per fold.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

log = logging.getLogger(__name__)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as handle:
        handle.write(data)
        temporary = Path(handle.name)
    os.replace(temporary, path)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class FileHashes:
    """SHA-256 of files, memoised by (resolved path, size, mtime_ns) across runs."""

    def __init__(self, memo_path: Path) -> None:
        self.memo_path = memo_path
        try:
            self.memo: dict[str, str] = json.loads(memo_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            self.memo = {}
        self.changed = False

    def sha256(self, path: Path) -> str:
        stat = path.stat()
        memo_key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        if memo_key not in self.memo:
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            self.memo[memo_key] = digest.hexdigest()
            self.changed = True
        return self.memo[memo_key]

    def save(self) -> None:
        if self.changed:
            # Another job may have added entries meanwhile: merge rather than overwrite.
            fresh = FileHashes(self.memo_path).memo
            fresh.update(self.memo)
            atomic_write_bytes(self.memo_path, json.dumps(fresh).encode())
            self.changed = False


class FeatureCache:
    """One folder per feature key; one ``.npy`` per (kind, content hash)."""

    def __init__(self, root: str | Path, key: str) -> None:
        self.root = Path(root)
        self.folder = self.root / key
        self.hashes = FileHashes(self.root / "hashes.json")
        self.encoded_rows = 0  # rows that went through the encoders in this process

    def path(self, kind: str, content_hash: str) -> Path:
        return self.folder / kind / content_hash[:2] / f"{content_hash}.npy"

    def get(self, kind: str, content_hash: str) -> np.ndarray | None:
        """The cached features, or None when absent or not a valid entry (then recomputed):
        never an object array (no unpickling), never non-finite values."""
        try:
            array = np.load(self.path(kind, content_hash), allow_pickle=False)
        except (FileNotFoundError, ValueError, OSError, EOFError):
            return None  # absent, or half-written by a killed job before atomic writes
        if array.dtype.kind not in "fiu" or not np.isfinite(array).all():
            return None
        return array

    def put(self, kind: str, content_hash: str, array: np.ndarray) -> None:
        buffer = _npy_bytes(array)
        atomic_write_bytes(self.path(kind, content_hash), buffer)

    def features(
        self,
        image_paths: Sequence[Path],
        prompts: Sequence[str],
        encode_rows: Callable[[list[int]], dict[str, torch.Tensor]],
        uses_text: bool,
    ) -> dict[str, torch.Tensor]:
        """Features of every row; ``encode_rows(indices)`` runs the encoders on missing rows."""
        if not image_paths:  # e.g. the validation part of a protocol that has none
            return {}
        image_keys = [self.hashes.sha256(path) for path in image_paths]
        self.hashes.save()
        text_keys = [text_sha256(prompt) for prompt in prompts]
        # One job encodes a key's missing rows while the others wait, then read what it wrote:
        # parallel fold jobs of one model would otherwise all run the encoders at once.
        self.folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.folder / ".lock")):
            return self._features(image_keys, text_keys, encode_rows, uses_text)

    def _features(
        self,
        image_keys: list[str],
        text_keys: list[str],
        encode_rows: Callable[[list[int]], dict[str, torch.Tensor]],
        uses_text: bool,
    ) -> dict[str, torch.Tensor]:
        found = {"image": [self.get("image", key) for key in image_keys]}
        if uses_text:
            found["text"] = [self.get("text", key) for key in text_keys]
        missing = sorted(
            {i for values in found.values() for i, value in enumerate(values) if value is None}
        )
        if missing:
            log.info("feature cache: encoding %d of %d rows", len(missing), len(image_keys))
            encoded = encode_rows(missing)
            self.encoded_rows += len(missing)
            for kind, keys in (("image", image_keys), ("text", text_keys)):
                if kind not in found:
                    continue
                for position, row in enumerate(missing):
                    array = encoded[kind][position].float().cpu().numpy()
                    self.put(kind, keys[row], array)
                    found[kind][row] = array
        else:
            log.info("feature cache: all %d rows cached", len(image_keys))
        return {kind: torch.from_numpy(np.stack(values)) for kind, values in found.items()}


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
