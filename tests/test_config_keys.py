"""Every key of every config section is checked when the config is read, naming file and key.

The workflow's parse (``snakemake -n``) and the command line's config loading run the same
checks: credentials first (no message may echo one), the closed schema, then what the schema
cannot say (model settings through each model's own parsers, readers and their options,
describer options, stand-in names, dimensions, per-dataset presets, names that become paths).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from agiqa.cli import app
from agiqa.config_checks import validate_config
from agiqa.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEMO = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
SECRET = "s3cr3t-t0ken-4242"
runner = CliRunner()


def edited(edit: Callable[[dict], object]) -> dict:
    config = copy.deepcopy(DEMO)
    edit(config)
    return config


TYPOS = [
    # (edit of the demo config, the key path the error names, what it says)
    (
        lambda c: c["models"]["clip_residual"].update(backbone={"archh": "ViT-B-32"}),
        "models.clip_residual: backbone: unknown keys ['archh']",
    ),
    (
        lambda c: c["models"]["clip_residual"].update(freeze={"mode": "ful"}),
        "models.clip_residual: freeze.mode must be one of",
    ),
    (
        lambda c: c["models"]["scva"].update(freeze={"vit": "half"}),
        "models.scva: freeze.vit must be",
    ),
    (
        lambda c: c["models"]["scva"].update(blip={"source": "config", "vocab": "v.txt"}),
        "models.scva: blip: unknown keys ['vocab']",
    ),
    (
        lambda c: c["models"]["dcmpln"].update(input_transform="native"),
        "models.dcmpln: input_transform must be one of",
    ),
    (
        lambda c: c["models"]["deqa"].update(soft_labels={"densty": "pdf"}),
        "models.deqa: soft_labels: unknown keys ['densty']",
    ),
    (
        lambda c: c["models"]["mllm_zeroshot"].update(label_range="observd"),
        "models.mllm_zeroshot: label_range must be one of",
    ),
    (
        lambda c: c["models"]["depictqa_compare"].update(questions={"qualty": "?"}),
        "models.depictqa_compare: questions: unknown kinds ['qualty']",
    ),
    (
        lambda c: c["models"]["clip_residual"].update(dimensions=["qualty"]),
        "models.clip_residual.dimensions: ['qualty'] not rated in dataset 'synthetic'",
    ),
    (
        lambda c: c["models"]["dcmpln"]["backbone"].update(pretrained="tiny-clip-synthetc"),
        "did you mean 'tiny-clip-synthetic'?",
    ),
    (
        lambda c: c["models"]["scva"]["vit"].update(checkpoint="tiny-vit-synthetc"),
        "models.scva.vit.checkpoint: 'tiny-vit-synthetc' is neither a pretrained_backbones",
    ),
    (
        lambda c: c["pretrained_backbones"]["tiny-vit-synthetic"].update(arch="x"),
        "pretrained_backbones.tiny-vit-synthetic: ['arch'] do not apply to kind vit",
    ),
    (
        lambda c: c["datasets"]["synthetic"].update(reader="agiqa3k"),
        "datasets.synthetic.reader: unknown reader 'agiqa3k'",
    ),
    (
        lambda c: c["datasets"]["synthetic"].update(metadata="ratings.csv"),
        "datasets.synthetic: the agiqa-3k reader: got an unexpected keyword argument 'metadata'",
    ),
    (
        lambda c: c.update(describers={"d": {"backend": "openai", "modle": "gpt-4o"}}),
        "describer 'd': unknown option(s) modle",
    ),
    (lambda c: c.update(device="banana"), "device: 'banana' does not match"),
    (
        lambda c: c["models"]["scva"].update(descriptions="publishd"),
        "models.scva.descriptions: no describer 'publishd' in the config",
    ),
    (
        lambda c: c.setdefault("report", {}).update(display_names={"qualty": "Quality"}),
        "report.display_names.qualty: neither a protocol nor a dimension",
    ),
    (
        lambda c: c["models"]["clip_residual"].update(per_dataset={"unknown": {}}),
        "models.clip_residual.per_dataset.unknown: no dataset 'unknown' in the config",
    ),
    (
        lambda c: c.update(mlflow={"experiment": "../../../x"}) or c.pop("experiment"),
        "mlflow.experiment: the name '../../../x' must match",
    ),
]


@pytest.mark.parametrize(("edit", "message"), TYPOS)
def test_each_typo_is_named_with_its_file(edit: Callable[[dict], object], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        validate_config(edited(edit), ["my.yaml"])
    assert str(raised.value).startswith("my.yaml: ")
    assert message in str(raised.value)


def test_the_shipped_configs_pass() -> None:
    for name in ("config.yaml", "agiqa3k-cpu.yaml", "paper.yaml", "ablations.yaml"):
        path = REPO / "config" / name
        validate_config(yaml.safe_load(path.read_text()), [path])


def test_a_preset_for_an_official_dataset_this_config_lacks_is_kept() -> None:
    """One model entry serves any subset of the paper's datasets (presets for the others)."""
    validate_config(
        edited(lambda c: c["models"]["scva"].update(per_dataset={"aigiqa-20k": {}})), ["x.yaml"]
    )


def snakemake_dry_run(config: dict, workdir: Path) -> subprocess.CompletedProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [str(BIN / "snakemake"), "-n", "--snakefile", str(REPO / "Snakefile"), "--configfile",
         str(path)],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_the_dry_run_fails_naming_file_and_key(tmp_path: Path) -> None:
    config = edited(lambda c: c["models"]["clip_residual"].update(backbone={"archh": "x"}))
    result = snakemake_dry_run(config, tmp_path)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"{tmp_path / 'config.yaml'}: models.clip_residual: backbone: unknown keys" in output


def test_the_command_line_checks_the_config_it_loads(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"models": {"m": {"type": "clip_residual", "frezee": {}}}}))
    result = runner.invoke(app, ["models", "list", "--configfile", str(path)])
    assert result.exit_code == 2
    assert f"{path}: models.m: unknown setting(s) ['frezee']" in " ".join(result.output.split())
    path.write_text("models: [unclosed\n")
    result = runner.invoke(app, ["models", "list", "--configfile", str(path)])
    assert result.exit_code == 2 and "not a readable YAML config" in result.output
    assert "Traceback" not in result.output


# --- secrets and paths: refused before Snakemake records a param or writes a log -------------


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: c["datasets"].update(
            agiqa3k={
                "reader": "agiqa-3k",
                "root": "data/raw/agiqa-3k",
                "download": {"url": f"https://user:{SECRET}@example.com/a.zip"},
            }
        ),
        lambda c: c["datasets"].update(
            agiqa3k={
                "reader": "agiqa-3k",
                "root": "data/raw/agiqa-3k",
                "download": {"url": f"https://example.com/a.zip?token={SECRET}"},
            }
        ),
        lambda c: c.update(dvc={"remote": {"url": f"https://me:{SECRET}@dvc.example.com/r"}}),
        lambda c: c.update(mlflow={"db": f"https://me:{SECRET}@mlflow.example.com"}),
    ],
    ids=["download-userinfo", "download-token", "dvc-remote", "mlflow-uri"],
)
def test_credentials_in_urls_are_refused_and_written_nowhere(
    tmp_path: Path, edit: Callable[[dict], object]
) -> None:
    result = snakemake_dry_run(edited(edit), tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "carries credentials" in output
    assert SECRET not in output
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "config.yaml"]
    assert all(SECRET not in p.read_text(errors="replace") for p in written)


def test_the_download_command_refuses_a_url_with_credentials(tmp_path: Path) -> None:
    url = f"https://user:{SECRET}@example.com/AGIQA-3K.zip"
    result = runner.invoke(
        app, ["datasets", "download", "agiqa-3k", "--root", str(tmp_path / "r"), "--url", url]
    )
    assert result.exit_code == 2 and "carries credentials" in result.output
    assert SECRET not in result.output
    assert not (tmp_path / "r").exists()


def test_an_experiment_name_from_mlflow_never_leaves_the_project(tmp_path: Path) -> None:
    config = edited(lambda c: c.pop("experiment"))
    config["mlflow"] = {"experiment": "../../../escaped"}
    result = snakemake_dry_run(config, tmp_path / "project")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "mlflow.experiment: the name '../../../escaped' must match" in output
    assert not list(tmp_path.rglob("escaped"))
