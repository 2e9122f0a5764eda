"""The describe rule under Snakemake, against the local fake endpoint."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from agiqa.data.readers import read_dataset
from agiqa.describe.fake_server import FakeOpenAIServer
from test_describe_support import KEY_ENV, REPO, SECRET, make_dataset, table

BIN = Path(sys.executable).parent
SNAKEFILE = f"""
from agiqa.describe.workflow import description_targets

configfile: "config.yaml"

include: "{REPO}/workflow/rules/common.smk"
include: "{REPO}/workflow/rules/data.smk"
include: "{REPO}/workflow/rules/describe.smk"

rule all:
    input:
        description_targets(config, LAYOUT.results),
"""


# the outputs of the experiment "tiny" (every config below names it)
RESULTS = "results/tiny"
# where a Snakemake run records params, logs and outputs: none may hold the key
RECORDS = (".snakemake", "logs", "results", "resources")


def _prepare(tmp_path: Path, n: int) -> tuple[Path, Path]:
    """(dataset root, workdir) with the dataset verified and its manifest built."""
    root = tmp_path / "ds"
    make_dataset(root, n)
    work = tmp_path / "work"
    (work / RESULTS / "verified").mkdir(parents=True)
    # the dataset is already verified and its manifest built: only the describe job runs
    (work / RESULTS / "verified" / "tiny.json").write_text("{}\n")
    read_dataset("agiqa-3k", root, dataset="tiny").save(work / RESULTS / "manifests/tiny.csv")
    (work / "Snakefile").write_text(SNAKEFILE)
    return root, work


def _snakemake(work: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, KEY_ENV: SECRET, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [str(BIN / "snakemake"), "--cores", "1", "--snakefile", "Snakefile"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _files_holding(secret: str, work: Path) -> list[Path]:
    files = [p for name in RECORDS for p in (work / name).rglob("*") if p.is_file()]
    return [p for p in files if secret.encode() in p.read_bytes()]


def test_describe_rule_writes_the_table_and_no_secret(tmp_path: Path) -> None:
    root, work = _prepare(tmp_path, 6)
    with FakeOpenAIServer(api_key=SECRET) as server:
        config = {
            "experiment": "tiny",
            "datasets": {"tiny": {"reader": "agiqa-3k", "root": str(root)}},
            "protocols": {"p": {"type": "kfold_grouped", "folds": 2}},
            "models": {"zs": {"type": "clip_zeroshot"}},
            "describers": {
                "fake": {
                    "backend": "openai",
                    "model": "fake-vlm",
                    "base_url": server.base_url,
                    "api_key_env": KEY_ENV,
                    "concurrency": 3,
                    "cache_dir": str(tmp_path / "vlm_cache"),
                }
            },
        }
        (work / "config.yaml").write_text(yaml.safe_dump(config))
        done = _snakemake(work)
        assert done.returncode == 0, done.stderr[-3000:]
        assert server.calls == 6
    out = table(work / RESULTS / "descriptions/tiny/fake.csv")
    assert set(out["status"]) == {"described"} and len(out) == 6
    log = (work / "logs/tiny/describe/tiny/fake.log").read_text()
    assert "described 6, cached 0, failed 0" in log
    assert "Job stats" in done.stderr and "describe" in done.stderr
    for path in [*work.rglob("*"), *(tmp_path / "vlm_cache").rglob("*")]:
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    metadata = [p for p in (work / ".snakemake").rglob("*") if p.is_file()]
    assert metadata and not any(SECRET in p.read_text(errors="ignore") for p in metadata)
    assert _files_holding(SECRET, work) == []


@pytest.mark.parametrize(
    "leak",
    [
        pytest.param({"base_url": "userinfo"}, id="url-userinfo"),
        pytest.param({"api_key": SECRET}, id="api-key-entry"),
    ],
)
def test_a_credential_in_the_config_stops_snakemake_before_it_is_recorded(
    tmp_path: Path, leak: dict[str, str]
) -> None:
    root, work = _prepare(tmp_path, 2)
    with FakeOpenAIServer(api_key=SECRET) as server:
        describer = {
            "backend": "openai",
            "model": "fake-vlm",
            "base_url": server.base_url,
            "api_key_env": KEY_ENV,
            "cache_dir": "resources/vlm_cache",
            **leak,
        }
        if leak.get("base_url") == "userinfo":
            describer["base_url"] = server.base_url.replace("http://", f"http://u:{SECRET}@")
        config = {
            "experiment": "tiny",
            "datasets": {"tiny": {"reader": "agiqa-3k", "root": str(root)}},
            "protocols": {"p": {"type": "kfold_grouped", "folds": 2}},
            "models": {"zs": {"type": "clip_zeroshot"}},
            "describers": {"fake": describer},
        }
        (work / "config.yaml").write_text(yaml.safe_dump(config))
        done = _snakemake(work)
        assert server.calls == 0
    assert done.returncode != 0
    assert "describer 'fake'" in done.stderr and "api_key_env" in done.stderr, done.stderr[-3000:]
    assert SECRET not in done.stdout + done.stderr
    assert not (work / RESULTS / "descriptions").exists()
    assert _files_holding(SECRET, work) == []


def test_a_new_mirror_of_a_pinned_table_reruns_nothing_but_new_content_does(
    tmp_path: Path,
) -> None:
    """The published table's location (``url``, ``base_url``, ``download_dir``) is not a param:
    the file is checked against its sha256, so moving the mirror changes no output. Its pinned
    hash is a param, so other content reruns the job."""
    root, work = _prepare(tmp_path, 4)

    def mirror(folder: str, text: str) -> tuple[str, str]:
        path = tmp_path / folder / "answers.csv"
        path.parent.mkdir()
        answer = f"{text} of a red car on a road, number"
        lines = "".join(f'gen_normal_{i:03d}.jpg,p,"{answer} {i}."\n' for i in range(4))
        path.write_text("name,prompt,answer\n" + lines, encoding="utf-8")
        return path.as_uri(), hashlib.sha256(path.read_bytes()).hexdigest()

    def configure(url: str, digest: str, downloads: str) -> None:
        describer = {"backend": "published", "source": "agiqa-3k", "url": url, "sha256": digest}
        config = {
            "experiment": "tiny",
            "datasets": {"tiny": {"reader": "agiqa-3k", "root": str(root)}},
            "protocols": {"p": {"type": "kfold_grouped", "folds": 2}},
            "models": {"zs": {"type": "clip_zeroshot"}},
            "describers": {"table": {**describer, "download_dir": str(tmp_path / downloads)}},
        }
        (work / "config.yaml").write_text(yaml.safe_dump(config))

    first_url, digest = mirror("first", "A photo")
    configure(first_url, digest, "downloads-a")
    assert _snakemake(work).returncode == 0
    out = work / RESULTS / "descriptions/tiny/table.csv"
    assert table(out)["description"].tolist()[0] == "A photo of a red car on a road, number 0."
    second_url, same = mirror("second", "A photo")
    assert same == digest
    configure(second_url, digest, "downloads-b")
    again = _snakemake(work)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    third_url, other = mirror("third", "A drawing")
    configure(third_url, other, "downloads-b")
    rerun = _snakemake(work)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert table(out)["description"].tolist()[0] == "A drawing of a red car on a road, number 0."
