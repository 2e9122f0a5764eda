"""Decoded, shrunk images shared by every job of a dataset, so each image is decoded once.

Without it, 5 folds x N models decode every image of a dataset 5N times; a 512-1024 px JPEG or
PNG costs milliseconds to decode and shrink, most of a small fold job's data time.

Entries are keyed by content, like the feature cache (agiqa.train.feature_cache): the SHA-256 of
the image file's bytes, the decoder (its identity string and the Pillow version, since another
libjpeg can round differently) and the target short side. An entry is the decoded RGB image as
a uint8 ``[height, width, 3]`` ``.npy`` file, written atomically (temporary file, then
``os.replace``), so a killed job never leaves a torn entry and readers never lock.

Parallel jobs: the first job that misses entries takes a lock on the key's folder and decodes
them (with its threads) while the others wait, then they read what it wrote; no image is
decoded twice, and jobs that find everything cached never wait. File hashes are memoised by
(path, size, mtime) in ``hashes.json``.

Disk: about 3 x short_side^2 bytes per square image (196 kB at 256 px: 0.6 GB for AGIQA-3K,
3.9 GB for AIGIQA-20K). Delete the folder to reclaim it; it refills on the next run.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import PIL
from filelock import FileLock
from PIL import Image

from agiqa.train.feature_cache import FileHashes, atomic_write_bytes

log = logging.getLogger(__name__)


class ImageCache:
    """One folder per (decoder, Pillow version, short side); one ``.npy`` per image content.

    Args:
        root: The cache directory (config ``image_cache_dir``), shared by every job.
        short_side: The short side images are shrunk to (``decode_cache_short_side``).
        decoder: Identity of the decoding function, e.g. ``agiqa.train.data.SHRINK_DECODER``.
    """

    def __init__(self, root: str | Path, short_side: int, decoder: str) -> None:
        self.root = Path(root)
        self.key = f"{decoder}-pillow{PIL.__version__}-short{int(short_side)}"
        self.folder = self.root / self.key
        self.short_side = int(short_side)
        self.hashes = FileHashes(self.root / "hashes.json")
        self.decoded = 0  # images this process decoded; the others came from the cache

    def path(self, digest: str) -> Path:
        return self.folder / digest[:2] / f"{digest}.npy"

    def get(self, digest: str) -> np.ndarray | None:
        """The cached image, or None when absent or not a valid entry (then it is rewritten)."""
        try:
            array = np.load(self.path(digest), allow_pickle=False)
        except (FileNotFoundError, ValueError, OSError, EOFError):
            return None
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
            return None
        return array if min(array.shape[:2]) <= self.short_side else None

    def put(self, digest: str, array: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array, dtype=np.uint8), allow_pickle=False)
        atomic_write_bytes(self.path(digest), buffer.getvalue())

    def images(
        self, paths: Sequence[Path], decode: Callable[[int], Image.Image], threads: int
    ) -> list[np.ndarray]:
        """RGB ``[height, width, 3]`` uint8 arrays of ``paths`` in order.

        ``decode(i)`` makes (and caches) the missing ones; the others are read as stored, never
        converted to PIL images (a fold job needs arrays, and PIL conversion costs 0.1 ms each).

        Args:
            paths: Image files; their contents key the entries.
            decode: Index -> the decoded, shrunk RGB image of ``paths[index]``.
            threads: Threads that hash, read and decode in parallel.
        """
        before = self.decoded
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            digests = list(pool.map(self._digest, paths))
            self.hashes.save()
            # An unreadable file has no key: decode() raises the error naming it and its row.
            uncached = {i: np.asarray(decode(i)) for i, d in enumerate(digests) if d is None}
            keys = [d for d in dict.fromkeys(digests) if d is not None]
            # Reading is mostly parsing in Python: threads only contend for the GIL here.
            found = {d: self.get(d) for d in keys}
            images = {d: a for d, a in found.items() if a is not None}
            row_of = {d: i for i, d in enumerate(digests)}  # any row of that content will do
            missing = {d: row_of[d] for d, a in found.items() if a is None}
            if missing:
                images.update(self._fill(missing, decode, pool))
        log.info(
            "image cache %s: %d of %d images decoded, the others read from the cache",
            self.key,
            self.decoded - before,
            len(paths),
        )
        return [uncached[i] if d is None else images[d] for i, d in enumerate(digests)]

    def _digest(self, path: Path) -> str | None:
        try:
            return self.hashes.sha256(path)
        except OSError:
            return None

    def _fill(
        self,
        missing: dict[str, int],
        decode: Callable[[int], Image.Image],
        pool: ThreadPoolExecutor,
    ) -> dict[str, np.ndarray]:
        """Decode and store the missing entries, one job at a time per cache folder."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{self.folder}.lock"):
            # Another job may have written some of them while this one waited for the lock.
            arrays = dict(zip(missing, pool.map(self.get, missing), strict=True))
            images = {d: a for d, a in arrays.items() if a is not None}
            todo = [d for d, a in arrays.items() if a is None]
            decoded = pool.map(lambda d: self._decode(d, missing[d], decode), todo)
            images.update(zip(todo, decoded, strict=True))
            self.decoded += len(todo)
        return images

    def _decode(self, digest: str, index: int, decode: Callable[[int], Image.Image]) -> np.ndarray:
        array = np.asarray(decode(index))
        self.put(digest, array)
        return array
