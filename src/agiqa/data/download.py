"""Download, verify and install a dataset, all or nothing.

Files are fetched into ``<downloads>/<filename>.part`` with HTTP Range resume and retried with
exponential backoff and jitter on 5xx, 429, timeouts and dropped connections; a file is renamed to
its final name only once complete. A server that answers another byte range than the one asked
for makes the partial file worthless: it is discarded and the download restarts from byte 0.

Every file must match a pinned sha256. A file that does not (or an HTML page where an archive was
expected) is never deleted, since the user may have put it there by hand: it is moved aside to
``<name>.rejected`` (``.rejected.2``, ``.rejected.3``, ... when that exists) and the error names
both sums and what to do.

The dataset tree is built in a staging folder ``.<root name>.partial-<random>`` beside the root
(same filesystem, created with the user's umask, like any folder). Before anything is extracted,
every archive member path is checked (no absolute path, no ``..``, no link leaving the tree, no
device file), and so are the sizes: the declared total must fit the free disk space, and the
declared/compressed ratio must stay under ``max_ratio`` (default 100:1) per member and overall, a
zip bomb's signature. The staging folder is renamed onto the root in one step, so a failure never
leaves a half-extracted tree at the root. The marker ``.agiqa-download.json`` is written inside
the tree before that rename, so a root with a marker is always complete.

Interrupted installs: SIGTERM removes the staging folder and exits with status 143. SIGKILL (or a
power cut) cannot be handled, so each staging folder holds a lock file, ``flock``-ed by the
installing process for its whole life; the kernel drops the lock when the process dies, however
it dies. The next install of that dataset removes every staging folder of the root whose lock it
can take (nobody holds it), and keeps the ones a live process holds. A staging folder without a
lock file (only during the instant it is created or renamed, or from an older version) is removed
only once it is ``LOCKLESS_GRACE_S`` old. ``.dvcignore`` keeps these folders out of DVC.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import random
import secrets
import shutil
import signal
import stat
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict
from http.client import HTTPException
from pathlib import Path, PurePosixPath
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from agiqa.data.sources import DOWNLOADS_DIR, Source
from agiqa.errors import DataError

MARKER = ".agiqa-download.json"
CHUNK = 1 << 20
STAGING_LOCK = ".agiqa-staging.lock"
# a lock-less staging folder younger than this may be one being created or renamed right now
LOCKLESS_GRACE_S = 600.0
# declared/compressed size above which an archive is refused as a possible zip bomb
MAX_RATIO = 100.0
# members (and archives) smaller than this are never refused for their ratio: harmless, and a
# tiny text or blank image can legitimately compress far better than 100:1
RATIO_FLOOR_BYTES = 1 << 20
# Folders that macOS zips add and that never belong to a dataset.
JUNK = {"__MACOSX"}

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _Transient(Exception):
    """A failure worth retrying: 5xx, 429, or a connection closed before the end."""


# ---------------------------------------------------------------------------------------------
# Fetching


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    url: str,
    dest: Path,
    *,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: bool = False,
    log: Log = _stderr,
) -> Path:
    """Download ``url`` to ``dest``, resuming from ``dest.part`` across attempts and runs.

    Args:
        url: the URL to fetch.
        dest: final path; written only once the download is complete.
        retries: extra attempts after transient failures.
        backoff: base delay in seconds, doubled each attempt, times a random factor in [1, 2).
        timeout: socket timeout in seconds.
        progress: show a rich progress bar.
        log: receives one-line status messages.

    Raises:
        DataError: a permanent HTTP error, or still failing after all retries.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, timeout=timeout, progress=progress)
            break
        except (_Transient, URLError, HTTPException, OSError) as error:
            if attempt == retries:
                raise DataError(
                    f"download failed after {retries + 1} attempts: {error}; run again to resume"
                    f" from {part}",
                    file=url,
                ) from error
            delay = backoff * 2**attempt * (1 + random.random())
            log(f"{url}: {error}; retrying in {delay:.1f} s ({attempt + 1}/{retries})")
            time.sleep(delay)
    os.replace(part, dest)
    return dest


def _fetch_once(url: str, part: Path, *, timeout: float, progress: bool) -> None:
    start = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "agiqa-downloader/1"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as error:
        if error.code == 416 and start:
            if _range_total(error.headers.get("Content-Range", "")) == start:
                return  # the partial file is already complete
            part.unlink()
            raise _Transient("stale partial file discarded") from error
        if error.code >= 500 or error.code == 429:
            raise _Transient(f"HTTP {error.code}") from error
        raise DataError(f"HTTP {error.code} {error.reason}", file=url) from error
    with response:
        resumed = start > 0 and response.status == 206
        answered = response.headers.get("Content-Range", "")
        if resumed and not answered.startswith(f"bytes {start}-"):
            # retrying the same Range would get the same answer forever: start again from 0
            part.unlink()
            raise _Transient(
                f"asked for bytes {start}- but the server answered {answered!r}; the partial"
                " file was discarded and the download restarts from byte 0"
            )
        offset = start if resumed else 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length else None
        with part.open("ab" if resumed else "wb") as out, _Bar(url, total, offset, progress) as bar:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                bar(len(chunk))
    size = part.stat().st_size
    if total is not None and size < total:
        raise _Transient(f"connection closed at byte {size} of {total}")


def _range_total(content_range: str) -> int | None:
    _, _, total = content_range.rpartition("/")
    return int(total) if total.isdigit() else None


class _Bar:
    """A rich progress bar when asked for, a no-op otherwise."""

    def __init__(self, url: str, total: int | None, done: int, enabled: bool):
        self.progress = None
        if enabled:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TransferSpeedColumn,
            )

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                transient=True,
            )
            self.task = self.progress.add_task(url.rsplit("/", 1)[-1][:40], total=total)
            self.progress.update(self.task, completed=done)

    def __enter__(self) -> Callable[[int], None]:
        if self.progress is None:
            return lambda n: None
        self.progress.start()
        return lambda n: self.progress.advance(self.task, n)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


def looks_like_html(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(512).lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


def set_aside(path: Path) -> Path:
    """Rename ``path`` to ``<name>.rejected`` (numbered when taken) and return the new path.

    A rejected file is never deleted: the user may have placed it by hand, and it may be the
    right file with a sha256 nobody has pinned yet.
    """
    for number in range(1, 10_000):
        suffix = ".rejected" if number == 1 else f".rejected.{number}"
        target = path.with_name(path.name + suffix)
        if not target.exists():
            os.replace(path, target)
            return target
    raise DataError(f"too many rejected copies beside {path}; delete some", file=path)


def check_sha256(path: Path, expected: str, url: str) -> None:
    """Raise DataError unless the sha256 of ``path`` is ``expected``; a mismatch is set aside."""
    actual = sha256_of(path)
    if actual != expected.lower():
        aside = set_aside(path)
        raise DataError(
            f"checksum mismatch for {path.name}: expected sha256 {expected}, found {actual}."
            f" The file was moved aside to {aside} (not deleted). If you trust it (a newer"
            f" release, say), move it back to {path} and pin --sha256 {actual} (or the config's"
            f" datasets.<name>.download.sha256); otherwise delete {aside} and run again to"
            " download a fresh copy",
            file=url,
        )


def obtain(
    source: Source,
    downloads: Path,
    *,
    dataset: str,
    progress: bool = False,
    log: Log = _stderr,
    **fetch_options: float,
) -> Path:
    """The verified local copy of one source, downloading it unless already in ``downloads``.

    Raises:
        DataError: a manual source not yet in place, an HTML page instead of an archive, a
            checksum mismatch, or no pinned sha256.
    """
    path = downloads / source.filename
    if not path.exists():
        if source.manual:
            raise DataError(_manual_message(source, path, dataset))
        log(f"downloading {source.url} -> {path}")
        fetch(source.url, path, progress=progress, log=log, **fetch_options)
    if source.kind == "archive" and looks_like_html(path):
        aside = set_aside(path)
        raise DataError(
            f"got an HTML page where an archive was expected (moved aside to {aside}; Google"
            " Drive asks a browser to confirm large files, other hosts may want a login). "
            + _manual_message(source, path, dataset),
            file=source.url,
        )
    if source.sha256 is None:
        actual = sha256_of(path)
        raise DataError(
            f"no sha256 is pinned for {source.filename}, so it is not used. Its sha256 is"
            f" {actual}: if you trust {path}, pin it with"
            f" `agiqa datasets download {dataset} --sha256 {actual} ...` or in the"
            " config's datasets.<name>.download.sha256",
            file=source.url,
        )
    check_sha256(path, source.sha256, source.url)
    return path


def _manual_message(source: Source, path: Path, dataset: str) -> str:
    where = source.manual_instructions or source.url
    return (
        f"{source.filename} for '{dataset}' must be fetched by hand. 1) Download it from: {where}"
        f". 2) Put it at: {path.resolve()}. 3) Run the download again (with --sha256 <its"
        " sha256> if none is pinned); it is then verified and extracted."
    )


# ---------------------------------------------------------------------------------------------
# Archives


def safe_member(name: str) -> PurePosixPath:
    """The relative path of an archive member, or DataError if it could leave the target."""
    unified = name.replace("\\", "/")
    path = PurePosixPath(unified)
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        raise DataError(f"archive member has an absolute path: {name!r}")
    if ".." in path.parts:
        raise DataError(f"archive member escapes the target folder: {name!r}")
    return path


def _inside(base: PurePosixPath, link: str) -> bool:
    """Whether ``link``, taken relative to ``base``, stays inside the archive root."""
    if link.startswith("/"):
        return False
    depth = 0
    for part in (base / link).parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                return False
        elif part not in ("", "."):
            depth += 1
    return True


def _check_zip(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    members = []
    for info in archive.infolist():
        path = safe_member(info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise DataError(f"archive member is a symbolic link: {info.filename!r}")
        if path.parts and path.parts[0] not in JUNK:
            members.append(info)
    return members


def _check_tar(archive: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members = []
    for member in archive.getmembers():
        path = safe_member(member.name)
        if member.isdev():
            raise DataError(f"archive member is a device or FIFO: {member.name!r}")
        if member.issym() and not _inside(path.parent, member.linkname):
            raise DataError(f"archive symlink points outside: {member.name!r} -> {member.linkname}")
        if member.islnk() and not _inside(PurePosixPath(), member.linkname):
            raise DataError(f"archive hard link points outside: {member.name!r}")
        if path.parts and path.parts[0] not in JUNK:
            members.append(member)
    return members


def unpack(archive: Path, dest: Path, *, max_ratio: float = MAX_RATIO) -> None:
    """Check every member of a zip or tar archive and the sizes, then extract it into ``dest``.

    Args:
        archive: the zip or tar (optionally compressed) archive.
        dest: an existing folder to extract into.
        max_ratio: the largest declared/compressed size ratio accepted, per zip member and for
            the whole archive (tar members have no size of their own once compressed). Members
            and archives under ``RATIO_FLOOR_BYTES`` are exempt.

    Raises:
        DataError: an unknown format, a corrupt archive, an unsafe member, a ratio above
            ``max_ratio``, or more declared bytes than free disk space (nothing written for
            these: all is checked before the first member is extracted).
    """
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as handle:
                members = _check_zip(handle)
                sizes = [(m.filename, m.file_size, m.compress_size) for m in members]
                check_sizes(archive, sizes, dest, max_ratio)
                _unpack_zip(handle, members, dest)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive, "r:*") as handle:
                members = _check_tar(handle)
                sizes = [(m.name, m.size, None) for m in members if m.isfile()]
                check_sizes(archive, sizes, dest, max_ratio)
                handle.extractall(dest, members=members, filter="data")
        else:
            raise DataError("not a zip or tar archive (corrupt or wrong file)", file=archive)
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError) as error:
        raise DataError(f"corrupt archive: {error}", file=archive) from error


def check_sizes(
    archive: Path,
    sizes: Sequence[tuple[str, int, int | None]],
    dest: Path,
    max_ratio: float = MAX_RATIO,
) -> None:
    """Refuse a zip bomb or an archive too big for the disk, from the declared sizes alone.

    Args:
        archive: the archive (its file size is the compressed size of the whole).
        sizes: per member, (name, declared size, compressed size or None when unknown).
        dest: the folder the members would be extracted into.
        max_ratio: the largest declared/compressed ratio accepted.

    Raises:
        DataError: with the sizes, the ratio and the limit, or the bytes needed and free.
    """
    for name, size, packed in sizes:
        if packed is not None and size >= RATIO_FLOOR_BYTES and size > max_ratio * packed:
            raise DataError(
                _ratio_message(f"member {name!r}", size, packed, max_ratio), file=archive
            )
    total = sum(size for _, size, _ in sizes)
    packed = archive.stat().st_size
    if total >= RATIO_FLOOR_BYTES and total > max_ratio * packed:
        raise DataError(_ratio_message("the archive", total, packed, max_ratio), file=archive)
    free = shutil.disk_usage(dest).free
    if total > free:
        raise DataError(
            f"extracting needs {total:,} bytes ({total / 2**30:.2f} GiB) but only {free:,} bytes"
            f" ({free / 2**30:.2f} GiB) are free at {dest}; free some space and run again",
            file=archive,
        )


def _ratio_message(what: str, size: int, packed: int, max_ratio: float) -> str:
    ratio = f"{size / packed:,.0f}:1" if packed else "unbounded"
    return (
        f"{what} declares {size:,} bytes from {packed:,} compressed bytes (ratio {ratio}), above"
        f" the limit of {max_ratio:g}:1: refused as a possible zip bomb. If you trust this"
        " archive, raise the limit (--max-ratio)"
    )


def _unpack_zip(handle: zipfile.ZipFile, members: Iterable[zipfile.ZipInfo], dest: Path) -> None:
    for info in members:
        target = dest.joinpath(*safe_member(info.filename).parts)
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        # Reading to the end checks the CRC, so a damaged member raises BadZipFile here; zipfile
        # stops at the declared size, so a lying header fails that check instead of filling disk.
        with handle.open(info) as src, target.open("wb") as out:
            shutil.copyfileobj(src, out, CHUNK)


def _strip(folder: Path, components: int | None) -> Path:
    """The folder inside ``folder`` after dropping wrapping folders (None: one, if single)."""
    entries = [e for e in folder.iterdir() if e.name not in JUNK]
    if components is None:
        single = len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink()
        return entries[0] if single else folder
    for _ in range(components):
        if len(entries) != 1 or not entries[0].is_dir():
            raise DataError(f"cannot strip a folder level: {len(entries)} entries in {folder}")
        folder = entries[0]
        entries = [e for e in folder.iterdir() if e.name not in JUNK]
    return folder


def _merge(src: Path, dest: Path, log: Log) -> None:
    """Move ``src`` to ``dest``; where both are folders, merge; an existing file is kept."""
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
    elif dest.is_dir() and src.is_dir():
        for child in src.iterdir():
            _merge(child, dest / child.name, log)
    else:
        log(f"kept the checksummed {dest.name}; the archive's copy is ignored")


# ---------------------------------------------------------------------------------------------
# Installing a dataset


def install_dataset(
    dataset: str,
    root: Path,
    sources: Sequence[Source],
    *,
    downloads: Path = Path(DOWNLOADS_DIR),
    force: bool = False,
    progress: bool = False,
    log: Log = _stderr,
    max_ratio: float = MAX_RATIO,
    **fetch_options: float,
) -> dict:
    """Fetch, verify and install every source of a dataset at ``root`` in one step.

    Staging folders of ``root`` left by a killed install are removed first (see the module
    docstring). SIGTERM during the install removes this install's staging folder and exits with
    status 143.

    Args:
        dataset: dataset name (messages and marker only).
        root: the dataset root; it must be absent or empty, or hold a previous install.
        sources: what to fetch, in order; file sources win over same-named archive members.
        downloads: where downloads are kept (and where manual archives must be put).
        force: replace an existing root.
        progress: show progress bars.
        log: receives one-line status messages.
        max_ratio: the largest declared/compressed size ratio accepted (:func:`unpack`).
        **fetch_options: ``retries``, ``backoff``, ``timeout`` for :func:`fetch`.

    Returns:
        The marker's content, also written to ``root/.agiqa-download.json``.

    Raises:
        DataError: anything wrong; then nothing new is left at ``root``.
        SystemExit: status 143 on SIGTERM, after the staging folder is removed.
    """
    with _exit_on_sigterm(log):
        clean_stale_staging(root, log)
        marker = root / MARKER
        if marker.exists() and not force:
            log(f"{root} is already installed ({MARKER} present)")
            return json.loads(marker.read_text())
        if _has_content(root) and not force:
            raise DataError(
                f"{root} already holds files but no {MARKER}: move it away, pass --force to"
                " replace it, or --adopt to keep it as is"
            )
        paths = [
            obtain(s, downloads, dataset=dataset, progress=progress, log=log, **fetch_options)
            for s in sources
        ]
        with _staging(root) as staging:
            for source, path in zip(sources, paths, strict=True):
                _install_one(source, path, staging, log, max_ratio)
            (staging / STAGING_LOCK).unlink()  # not part of the dataset
            info = _marker(dataset, sources, staging)
            (staging / MARKER).write_text(json.dumps(info, indent=2) + "\n")
            with _sigterm_deferred():  # never stop between moving the old tree and the new one
                _swap_in(staging, root)
    log(f"installed {dataset} at {root}: {info['files']} files")
    return info


class _Terminated(SystemExit):
    """SIGTERM arrived: unwind (removing the staging folder) and exit with 128 + 15."""


@contextlib.contextmanager
def _exit_on_sigterm(log: Log) -> Iterator[None]:
    # signal handlers can only be set from the main thread; elsewhere SIGTERM keeps its default
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        log("terminated (SIGTERM): cleaning up")
        raise _Terminated(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _sigterm_deferred() -> Iterator[None]:
    # a blocked signal stays pending and is handled as soon as it is unblocked
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def _staging(root: Path) -> Iterator[Path]:
    """A new staging folder beside ``root``, locked while in use, removed unless renamed away."""
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = _new_staging_folder(root)
    handle = os.open(staging / STAGING_LOCK, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(handle, f"{os.getpid()}\n".encode())  # for people; the lock is what counts
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # nothing left once renamed onto the root
        os.close(handle)


def _new_staging_folder(root: Path) -> Path:
    # os.mkdir applies the umask (mkdtemp would force 0700 onto the installed root)
    for _ in range(100):
        candidate = root.parent / f"{staging_prefix(root)}{secrets.token_hex(6)}"
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise DataError(f"cannot create a staging folder beside {root}")


def staging_prefix(root: Path) -> str:
    """The name prefix of the staging folders of ``root`` (also listed in ``.dvcignore``)."""
    return f".{root.name}.partial-"


def clean_stale_staging(root: Path, log: Log = _stderr) -> list[Path]:
    """Remove the staging folders of ``root`` that no live install holds; return them."""
    removed = []
    if not root.parent.is_dir():
        return removed
    for folder in sorted(root.parent.glob(glob.escape(staging_prefix(root)) + "*")):
        if folder.is_symlink() or not folder.is_dir():
            continue
        if _held(folder):
            log(f"kept {folder}: a running install holds it")
            continue
        with contextlib.suppress(FileNotFoundError):  # another install cleaned it meanwhile
            shutil.rmtree(folder)
        removed.append(folder)
        log(f"removed {folder}, left by an interrupted install")
    return removed


def _held(folder: Path) -> bool:
    """Whether a live process holds the staging folder's lock (or may be about to)."""
    try:
        handle = os.open(folder / STAGING_LOCK, os.O_RDWR)
    except FileNotFoundError:
        # no lock file: just created, about to be renamed in, or from an older version
        try:
            return time.time() - folder.stat().st_mtime < LOCKLESS_GRACE_S
        except FileNotFoundError:
            return True  # gone already: nothing to remove
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(handle)  # closing drops a lock we took
    return False


def _install_one(source: Source, path: Path, staging: Path, log: Log, max_ratio: float) -> None:
    target = staging / source.extract_to if source.extract_to else staging
    if source.kind == "file":
        dest = target / source.filename
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
        return
    scratch = Path(tempfile.mkdtemp(prefix=".unpack-", dir=staging))
    log(f"extracting {path.name}")
    unpack(path, scratch, max_ratio=max_ratio)
    top = _strip(scratch, source.strip_components)
    if top == scratch:
        for child in list(scratch.iterdir()):
            if child.name not in JUNK:
                _merge(child, target / child.name, log)
    else:
        _merge(top, target, log)
    shutil.rmtree(scratch)


def _has_content(root: Path) -> bool:
    return root.exists() and (not root.is_dir() or any(root.iterdir()))


def _swap_in(staging: Path, root: Path) -> None:
    """Rename ``staging`` onto ``root``; an old tree is moved aside first, then deleted."""
    old = None
    if root.exists():
        if _has_content(root):
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            os.replace(root, old / root.name)
        else:
            root.rmdir()  # e.g. created empty by Snakemake for the marker output
    os.replace(staging, root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _marker(dataset: str, sources: Sequence[Source], tree: Path) -> dict:
    files = [p for p in tree.rglob("*") if p.is_file()]
    return {
        "dataset": dataset,
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "sources": [
            {k: v for k, v in asdict(s).items() if k in ("url", "filename", "sha256", "kind")}
            for s in sources
        ],
    }


def adopt(dataset: str, root: Path) -> dict:
    """Write the marker for a dataset already in place (e.g. copied by hand)."""
    if not root.is_dir() or not any(root.iterdir()):
        raise DataError(f"nothing to adopt: {root} is missing or empty")
    info = _marker(dataset, [], root) | {"adopted": True}
    (root / MARKER).write_text(json.dumps(info, indent=2) + "\n")
    return info
