"""The describe rule under Snakemake, against the local fake endpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
        description_targets(config),
"""


def test_describe_rule_writes_the_table_and_no_secret(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_dataset(root, 6)
    work = tmp_path / "work"
    (work / "results" / "verified").mkdir(parents=True)
    # the dataset is already verified and its manifest built: only the describe job runs
    (work / "results" / "verified" / "tiny.json").write_text("{}\n")
    read_dataset("agiqa-3k", root, dataset="tiny").save(work / "results/manifests/tiny.csv")
    (work / "Snakefile").write_text(SNAKEFILE)
    with FakeOpenAIServer(api_key=SECRET) as server:
        config = {
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
        env = {**os.environ, KEY_ENV: SECRET, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        done = subprocess.run(
            [str(BIN / "snakemake"), "--cores", "1", "--snakefile", "Snakefile"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert server.calls == 6
    out = table(work / "results/descriptions/tiny/fake.csv")
    assert set(out["status"]) == {"described"} and len(out) == 6
    log = (work / "logs/describe/tiny/fake.log").read_text()
    assert "described 6, cached 0, failed 0" in log
    assert "Job stats" in done.stderr and "describe" in done.stderr
    for path in [*work.rglob("*"), *(tmp_path / "vlm_cache").rglob("*")]:
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    metadata = [p for p in (work / ".snakemake").rglob("*") if p.is_file()]
    assert metadata and not any(SECRET in p.read_text(errors="ignore") for p in metadata)
