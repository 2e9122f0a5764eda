"""DVC round trip with real git and dvc: track, push, clone, pull; downstream is not rebuilt."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agiqa.data import dvc
from agiqa.errors import AgiqaError

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
ENV = os.environ | {"DVC_NO_ANALYTICS": "1", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]

pytestmark = pytest.mark.skipif(
    shutil.which("git") is None or not (BIN / "dvc").exists(), reason="needs git and dvc"
)

# verify reads the dataset tree and its marker through ancient(): a pull that only renews
# timestamps reruns nothing. (Snakemake already skips small files whose checksum is unchanged,
# but not folders or large files, hence the control with plain inputs.)
SNAKEFILE = """
rule all:
    input: "results/table.txt"

rule verify:
    input: {marker}
    output: "results/verified/x.json"
    shell: "ls -a {{input}} > {{output}}"

rule table:
    input: "results/verified/x.json"
    output: "results/table.txt"
    shell: "wc -c < {{input}} > {{output}}"
"""
INPUTS = '{0}("data/raw/x/.agiqa-download.json"), {0}("data/raw/x")'


def sh(*args: str, cwd: Path) -> str:
    done = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
    return done.stdout + done.stderr


def snakemake(cwd: Path, *args: str) -> str:
    return sh(str(BIN / "snakemake"), "--cores", "1", *args, cwd=cwd)


def test_track_push_clone_pull_does_not_rebuild_downstream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    repo, remote, clone = tmp_path / "repo", tmp_path / "remote", tmp_path / "clone"
    repo.mkdir()
    sh(*GIT, "init", "-q", cwd=repo)
    sh(str(BIN / "dvc"), "init", "-q", cwd=repo)
    dataset = repo / "data" / "raw" / "x"
    dataset.mkdir(parents=True)
    (dataset / "a.jpg").write_bytes(b"\xff\xd8 image bytes")
    (dataset / ".agiqa-download.json").write_text('{"dataset": "x"}\n')
    (repo / "Snakefile").write_text(SNAKEFILE.format(marker=INPUTS.format("ancient")))
    (repo / "Plain.smk").write_text(SNAKEFILE.format(marker=INPUTS.format("")))
    (repo / ".gitignore").write_text("results/\n.snakemake/\n")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"dvc": {"remote": {"name": "local", "url": str(remote)}}}))

    # The pipeline's serial step: remote from config, dvc add data, git add data.dvc.
    summary = tmp_path / "tracked.json"
    args = ["track", "--repo", str(repo), "--configfile", str(config), "--out", str(summary)]
    assert dvc.main(args) == 0
    assert json.loads(summary.read_text())["tracked"]["data"]["nfiles"] == 2
    staged = sh("git", "diff", "--cached", "--name-only", cwd=repo).split()
    assert "data.dvc" in staged
    sh("git", "add", "-A", cwd=repo)
    sh(*GIT, "commit", "-q", "-m", "data", cwd=repo)
    dvc.push(repo=repo)
    assert any(remote.rglob("*"))

    sh(*GIT, "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    assert not (clone / "data").exists()
    # the remote is machine-local (.dvc/config.local): a clone sets it up from the config
    pull = ["pull", "--repo", str(clone), "--configfile", str(config)]
    assert dvc.main(pull) == 0
    assert (clone / "data/raw/x/a.jpg").read_bytes() == b"\xff\xd8 image bytes"
    snakemake(clone)
    built = (clone / "results/table.txt").stat().st_mtime_ns

    # A later pull recreates the files: newer timestamps, same content.
    shutil.rmtree(clone / "data")
    assert dvc.main(pull) == 0
    marker = clone / "data/raw/x/.agiqa-download.json"
    assert marker.stat().st_mtime_ns > (clone / "results/verified/x.json").stat().st_mtime_ns
    assert "Nothing to be done" in snakemake(clone, "-n")
    # Control: the same workflow without ancient() would rebuild both jobs.
    assert "verify" in snakemake(clone, "-n", "-s", "Plain.smk")
    snakemake(clone)
    assert (clone / "results/table.txt").stat().st_mtime_ns == built


def test_remote_is_added_once_and_only_locally(tmp_path: Path) -> None:
    sh(*GIT, "init", "-q", cwd=tmp_path)
    sh(str(BIN / "dvc"), "init", "-q", cwd=tmp_path)
    tracked = (tmp_path / ".dvc" / "config").read_text()
    assert dvc.ensure_remote(str(tmp_path / "store"), "local", tmp_path)
    assert not dvc.ensure_remote(str(tmp_path / "other"), "local", tmp_path)
    # `make data-push` used to write the remote into the tracked .dvc/config, so every later
    # run recorded its commit as -dirty; the remote now lives in the git-ignored config.local.
    assert "remote = local" in (tmp_path / ".dvc" / "config.local").read_text()
    assert (tmp_path / ".dvc" / "config").read_text() == tracked
    assert sh("git", "status", "--porcelain", ".dvc", cwd=tmp_path).strip().startswith("A ")
    assert "config.local" not in sh("git", "status", "--porcelain", cwd=tmp_path)


def test_the_repository_itself_tracks_pushes_and_pulls_a_dataset_root(tmp_path: Path) -> None:
    """With the repository's own .gitignore, .dvcignore and .dvc/: what `dvc: true` runs.

    The repository used to ignore /data, so `dvc add data/raw/<name>` refused ("bad DVC file
    name ... is git-ignored"); the other tests wrote their own .gitignore, which hid it.
    """
    repo, remote, clone = tmp_path / "repo", tmp_path / "remote", tmp_path / "clone"
    repo.mkdir()
    sh(*GIT, "init", "-q", cwd=repo)
    for name in (".gitignore", ".dvcignore", ".dvc/config", ".dvc/.gitignore", "data.dvc"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, repo / name)
    sh("git", "add", "-A", cwd=repo)
    sh(*GIT, "commit", "-q", "-m", "repository files", cwd=repo)
    root = repo / "data" / "raw" / "x"
    root.mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        (root / name).write_bytes(name.encode())
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"dvc": {"remote": {"url": str(remote)}}}))
    summary = verified(tmp_path / "x.json", "data/raw/x", 2)
    args = ["--repo", str(repo), "--configfile", str(config)]
    assert dvc.main(["track", *args, "--path", "data/raw/x", "--verified", str(summary)]) == 0
    # the pointer and the .gitignore DVC wrote beside it are staged; the images stay ignored
    staged = sh("git", "diff", "--cached", "--name-only", cwd=repo).split()
    assert staged == ["data/raw/.gitignore", "data/raw/x.dvc"]
    assert sh("git", "check-ignore", "data/raw/x/a.jpg", cwd=repo).strip() == "data/raw/x/a.jpg"
    sh(*GIT, "commit", "-q", "-m", "data", cwd=repo)
    assert dvc.main(["push", *args]) == 0
    assert sh("git", "status", "--porcelain", cwd=repo) == ""

    sh(*GIT, "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    assert dvc.main(["pull", "--repo", str(clone), "--configfile", str(config)]) == 0
    assert (clone / "data/raw/x/b.jpg").read_bytes() == b"b.jpg"
    assert sh("git", "status", "--porcelain", "--untracked-files=all", cwd=clone) == ""


def test_lock_errors_are_reported_as_such(monkeypatch: pytest.MonkeyPatch) -> None:
    said = "ERROR: Unable to acquire lock. Most likely another DVC process is running"
    assert dvc.is_lock_error(said)
    assert not dvc.is_lock_error("ERROR: failed to push data to the cloud")

    def locked(*args: object, **kwargs: object) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(args, 1, stdout="", stderr=said)

    monkeypatch.setattr(dvc.subprocess, "run", locked)
    with pytest.raises(AgiqaError, match="never from parallel jobs"):
        dvc.run_dvc(["add", "data"])


def test_remote_comes_from_the_last_config(tmp_path: Path) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("dvc: {remote: {url: /a}}\n")
    second.write_text("seed: 0\n")
    assert dvc.remote_of([first, second]) == {"name": "local", "url": "/a"}
    assert dvc.remote_of([]) == dvc.DEFAULT_REMOTE


def verified(path: Path, root: str, images: int) -> Path:
    path.write_text(json.dumps({"images_verified": True, "root": root, "images": images}))
    return path


def test_track_refuses_what_dvc_did_not_record_and_ignores_staging(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    sh(*GIT, "init", "-q", cwd=repo)
    sh(str(BIN / "dvc"), "init", "-q", cwd=repo)
    shutil.copy(Path(__file__).resolve().parents[1] / ".dvcignore", repo / ".dvcignore")
    real = repo / "data" / "raw" / "x"
    real.mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", ".agiqa-download.json"):
        (real / name).write_bytes(name.encode())
    staging = repo / "data" / "raw" / ".x.partial-1a2b3c"  # left by a killed install
    staging.mkdir()
    (staging / "half.jpg").write_bytes(b"half")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("c.jpg", "d.jpg"):
        (elsewhere / name).write_bytes(name.encode())
    (repo / "data" / "raw" / "y").symlink_to(elsewhere, target_is_directory=True)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"dvc": {"remote": {"url": str(tmp_path / "remote")}}}))
    x = verified(tmp_path / "x.json", "data/raw/x", 2)
    y = verified(tmp_path / "y.json", str(repo / "data" / "raw" / "y"), 2)  # absolute works too
    base = ["track", "--repo", str(repo), "--configfile", str(config)]

    assert dvc.main([*base, "--verified", str(x), "--verified", str(y)]) == 2
    error = capsys.readouterr().err
    assert "DVC recorded 0 files under" in error and "2 images were verified" in error
    assert "symbolic link" in error
    assert "data.dvc" not in sh("git", "diff", "--cached", "--name-only", cwd=repo).split()

    out = tmp_path / "tracked.json"
    assert dvc.main([*base, "--verified", str(x), "--out", str(out)]) == 0
    # the staging folder is not recorded: .dvcignore lists the pattern
    assert json.loads(out.read_text())["tracked"]["data"]["nfiles"] == 3
    assert sorted(dvc.recorded_files("data", repo)) == [
        "raw/x/.agiqa-download.json",
        "raw/x/a.jpg",
        "raw/x/b.jpg",
    ]


def test_expected_counts_need_a_full_image_check(tmp_path: Path) -> None:
    summary = tmp_path / "v.json"
    summary.write_text(json.dumps({"images_verified": False, "root": "data/raw/x", "images": None}))
    with pytest.raises(AgiqaError, match="full image check"):
        dvc.expected_from_verified([summary])
    assert dvc.expected_from_verified([verified(summary, "data/raw/x", 7)]) == {"data/raw/x": 7}


def test_the_shipped_data_dvc_tracks_nothing_and_a_fresh_clone_pulls(tmp_path: Path) -> None:
    # The old data.dvc pointed at a 1-file placeholder nobody had pushed: `make data-pull` on a
    # fresh clone failed with missing cache files. Tracking is opt-in per dataset now.
    shipped = Path(__file__).resolve().parents[1] / "data.dvc"
    assert yaml.safe_load(shipped.read_text())["outs"] == []
    repo = tmp_path / "clone"
    repo.mkdir()
    sh(*GIT, "init", "-q", cwd=repo)
    sh(str(BIN / "dvc"), "init", "-q", cwd=repo)
    shutil.copy(shipped, repo / "data.dvc")
    config = repo / "config.yaml"
    config.write_text(yaml.safe_dump({"dvc": {"remote": {"url": str(tmp_path / "remote")}}}))
    (tmp_path / "remote").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "agiqa.data.dvc", "pull", "--configfile", str(config)],
        cwd=repo,
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_data_records_leave_the_commit_clean_code_changes_do_not(tmp_path: Path) -> None:
    """`dvc_track` stages pointers mid-run; the jobs after it recorded their commit `-dirty`."""
    from agiqa.provenance import commit_of

    sh(*GIT, "init", "-q", cwd=tmp_path)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "code.py").write_text("x = 1\n")
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("[core]\n")
    sh("git", "add", "-A", cwd=tmp_path)
    sh(*GIT, "commit", "-q", "-m", "code", cwd=tmp_path)
    head = sh("git", "rev-parse", "HEAD", cwd=tmp_path).strip()
    (tmp_path / "data" / "raw").mkdir(parents=True)
    for name in ("x.dvc", ".gitignore"):
        (tmp_path / "data" / "raw" / name).write_text("outs: []\n")
    (tmp_path / ".dvc" / "config").write_text("[core]\n    remote = local\n")
    sh("git", "add", "data", ".dvc", cwd=tmp_path)
    assert commit_of(tmp_path / "src") == head
    (tmp_path / "src" / "code.py").write_text("x = 2\n")
    assert commit_of(tmp_path / "src") == f"{head}-dirty"
