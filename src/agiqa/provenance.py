"""What produced a result: the code's commit, library versions and the inputs' sha256.

Recorded in every run's ``config.yaml`` and ``metrics.json`` and in its MLflow params, so a
number in a table can be traced to the code, the split file and the manifest it came from.
"""

from __future__ import annotations

import hashlib
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

#: Distributions whose versions change results; recorded under their import names.
LIBRARIES = {
    "agiqa": "agiqa",
    "torch": "torch",
    "torchvision": "torchvision",
    "open_clip": "open_clip_torch",
    "transformers": "transformers",
    "timm": "timm",
    "numpy": "numpy",
    "scipy": "scipy",
}


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


#: DVC's records of the data (pointers, the folders' .gitignore files, .dvc/): a dataset's
#: `dvc_track` stages new pointers mid-run, and the data is recorded by the manifests' sha256, so
#: they never make the code's commit ``-dirty``.
DATA_RECORDS = (":(exclude,top)data", ":(exclude,top,glob)**/*.dvc", ":(exclude,top).dvc")


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of agiqa's source tree, with ``-dirty`` for uncommitted changes to tracked
    files (DVC's data records aside), or ``unknown`` (an installed copy, or no git)."""
    return commit_of(Path(__file__).resolve().parent)


def commit_of(folder: Path) -> str:
    """The commit of the git checkout holding ``folder`` (see ``git_commit``)."""
    try:
        head = _git(folder, "rev-parse", "HEAD")
        dirty = _git(folder, "status", "--porcelain", "--untracked-files=no", "--", *DATA_RECORDS)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout.strip()


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    versions = {}
    for name, distribution in LIBRARIES.items():
        try:
            versions[name] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def provenance(split_file: str | Path, manifest: str | Path) -> dict:
    """The provenance block of a fold job's outputs."""
    return {
        "commit": git_commit(),
        "versions": library_versions(),
        "split_sha256": file_sha256(split_file),
        "manifest_sha256": file_sha256(manifest),
    }
