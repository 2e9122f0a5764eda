"""DVC helpers: record data/ (``dvc add data`` + ``git add data.dvc``), set up a remote, push/pull.

DVC locks the repository (``.dvc/tmp/lock``), so these must run from one serial step (the
``dvc_track`` localrule, or ``make data-push`` / ``make data-pull``), never from parallel jobs.
A lock failure is reported as such, not as a generic DVC error.

Run as ``python -m agiqa.data.dvc {track,push,pull} [--configfile FILE ...]``; the remote comes
from the config's ``dvc.remote`` section (``name``, ``url``), default a local folder beside the
checkout. ``track --verified results/verified/<dataset>.json ...`` also checks that DVC recorded
at least as many files under each dataset root as were verified there (a linked folder is
recorded as no files).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

import yaml

from agiqa.errors import AgiqaError

DEFAULT_REMOTE = {"name": "local", "url": "../agiqa-dvc-remote"}
LOCK_MESSAGES = ("Unable to acquire lock", "another DVC process")


def dvc_executable() -> str:
    """The dvc next to this Python (a venv's bin may not be on PATH), else the one on PATH."""
    local = Path(sys.executable).parent / "dvc"
    return str(local) if local.exists() else (shutil.which("dvc") or "dvc")


def is_lock_error(text: str) -> bool:
    return any(message in text for message in LOCK_MESSAGES)


def run_dvc(args: Sequence[str], repo: Path = Path(".")) -> str:
    """Run ``dvc ARGS`` in ``repo`` and return its stdout.

    Raises:
        AgiqaError: DVC failed; a lock failure says that another DVC process holds the lock.
    """
    env = os.environ | {"DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(
        [dvc_executable(), *args], cwd=repo, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        if is_lock_error(output):
            raise AgiqaError(
                f"`dvc {' '.join(args)}`: the DVC repository is locked by another DVC process"
                " (.dvc/tmp/lock). Run DVC commands one at a time (never from parallel jobs);"
                f" if no DVC process is running, remove the stale lock. DVC said: {output}"
            )
        raise AgiqaError(f"`dvc {' '.join(args)}` failed ({done.returncode}): {output}")
    return done.stdout


def ensure_remote(url: str, name: str = "local", repo: Path = Path(".")) -> bool:
    """Add ``name`` as the default remote unless a remote of that name exists. True if added.

    The remote goes into ``.dvc/config.local`` (git-ignored), never into the tracked
    ``.dvc/config``: a machine's remote is not part of the repository, and a changed tracked
    file would mark every later run's commit ``-dirty``.
    """
    names = [line.split()[0] for line in run_dvc(["remote", "list"], repo).splitlines() if line]
    if name in names:
        return False
    run_dvc(["remote", "add", "--local", "--default", name, url], repo)
    return True


def track(
    paths: Sequence[str] = ("data",),
    repo: Path = Path("."),
    expected: Mapping[str, int] | None = None,
) -> dict:
    """``dvc add`` the paths, check what DVC recorded, then ``git add`` their .dvc files.

    DVC does not follow a symbolic link to a folder: a dataset root that is such a link (or
    holds one) is recorded as no files, yet ``dvc add`` and ``dvc push`` succeed. So for every
    dataset root in ``expected`` the files DVC recorded under it are counted, and fewer files
    than verified images is an error. More is normal (metadata files, the marker, images no
    manifest row names), so only a shortfall is refused. Nothing is staged in git on error.

    Args:
        paths: paths to track, relative to ``repo``.
        repo: the repository.
        expected: dataset root (relative to ``repo``, or absolute inside it) -> number of
            verified images (see :func:`expected_from_verified`).

    Returns:
        Per path, the recorded md5, number of files and size from its .dvc file.

    Raises:
        AgiqaError: DVC failed, a root is outside the tracked paths, or DVC recorded fewer
            files under a root than it has verified images.
    """
    run_dvc(["add", *paths], repo)
    if expected:
        check_recorded(paths, repo, expected)
    pointers = [f"{path}.dvc" for path in paths]
    if (repo / ".git").exists():
        subprocess.run(
            ["git", "add", "--", *pointers, *ignore_files(paths, repo)], cwd=repo, check=True
        )
    recorded = {}
    for path, pointer in zip(paths, pointers, strict=True):
        out = yaml.safe_load((repo / pointer).read_text())["outs"][0]
        recorded[path] = {k: out.get(k) for k in ("md5", "nfiles", "size")}
    return recorded


def ignore_files(paths: Sequence[str], repo: Path) -> list[str]:
    """The .gitignore files beside the tracked paths (``dvc add`` lists each path in its folder's
    file): staged with the pointers, so that a clone's pulled data is ignored there too."""
    found = {(PurePosixPath(path).parent / ".gitignore").as_posix() for path in paths}
    return sorted(name for name in found if (repo / name).is_file())


def check_recorded(paths: Sequence[str], repo: Path, expected: Mapping[str, int]) -> None:
    """Refuse when DVC recorded fewer files under a dataset root than its verified images."""
    listed = {path: recorded_files(path, repo) for path in paths}
    for root, images in expected.items():
        relative = _inside_repo(root, repo)
        owner = next((p for p in paths if relative.is_relative_to(p)), None)
        if owner is None:
            raise AgiqaError(
                f"dataset root {root} is not under the tracked paths {list(paths)}: DVC would"
                " not record it"
            )
        prefix = relative.relative_to(owner).as_posix()
        under = [f for f in listed[owner] if prefix == "." or f.startswith(prefix + "/")]
        if len(under) < images:
            raise AgiqaError(
                f"DVC recorded {len(under)} files under {root} but {images} images were"
                " verified there: DVC does not follow a symbolic link to a folder (is the root,"
                " or a folder in it, a link?) and skips what .dvcignore lists. Copy the files in"
                " (or link each file, not the folder) and track again; nothing was staged"
            )


def recorded_files(path: str, repo: Path) -> list[str]:
    """The files DVC recorded for a tracked ``path``, relative to it (POSIX)."""
    listing = json.loads(run_dvc(["ls", ".", path, "--recursive", "--dvc-only", "--json"], repo))
    return [entry["path"] for entry in listing if not entry.get("isdir")]


def _inside_repo(root: str, repo: Path) -> PurePosixPath:
    path = Path(root)
    if path.is_absolute():
        try:
            path = path.relative_to(repo.resolve())
        except ValueError:
            raise AgiqaError(f"dataset root {root} is outside the repository {repo}") from None
    return PurePosixPath(path.as_posix())


def expected_from_verified(summaries: Sequence[Path]) -> dict[str, int]:
    """Dataset root -> verified image count, from ``agiqa datasets check --out`` summaries.

    Raises:
        AgiqaError: a summary without a full image verification, ``root`` or ``images``.
    """
    expected: dict[str, int] = {}
    for summary in summaries:
        data = json.loads(summary.read_text())
        if not data.get("images_verified") or "root" not in data or "images" not in data:
            raise AgiqaError(
                f"{summary}: not a summary of a full image check (needs images_verified, root"
                " and images: run `agiqa datasets check NAME --root DIR --out FILE`)"
            )
        expected[str(data["root"])] = int(data["images"])
    return expected


def push(remote: str | None = None, repo: Path = Path(".")) -> str:
    return run_dvc(["push", *(["--remote", remote] if remote else [])], repo)


def pull(remote: str | None = None, repo: Path = Path(".")) -> str:
    return run_dvc(["pull", *(["--remote", remote] if remote else [])], repo)


def remote_of(configfiles: Sequence[Path]) -> dict:
    """The ``dvc.remote`` section of the merged config files (later files win)."""
    remote = dict(DEFAULT_REMOTE)
    for path in configfiles:
        config = yaml.safe_load(path.read_text()) or {}
        remote.update((config.get("dvc") or {}).get("remote") or {})
    return remote


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agiqa.data.dvc", description=__doc__)
    parser.add_argument("command", choices=["track", "push", "pull"])
    parser.add_argument("--configfile", type=Path, action="append", default=[])
    parser.add_argument("--path", action="append", help="path to track (default: data)")
    parser.add_argument("--out", type=Path, help="track: write the JSON summary here too")
    parser.add_argument(
        "--verified",
        type=Path,
        action="append",
        default=[],
        help="track: a results/verified/<dataset>.json; DVC must record at least its images",
    )
    parser.add_argument("--repo", type=Path, default=Path("."))
    args = parser.parse_args(argv)
    remote = remote_of(args.configfile)
    try:
        if ensure_remote(remote["url"], remote["name"], args.repo):
            print(f"added DVC remote {remote['name']} -> {remote['url']}", file=sys.stderr)
        if args.command == "track":
            expected = expected_from_verified(args.verified)
            tracked = track(args.path or ["data"], args.repo, expected)
            summary = {"tracked": tracked, "remote": remote}
            text = json.dumps(summary, indent=2)
            if args.out:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(text + "\n")
            print(text)
        else:
            output = (push if args.command == "push" else pull)(remote["name"], args.repo)
            print(output, end="")
    except AgiqaError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
