"""The `agiqa` command: JSON summaries on good data, non-zero exits naming file and row on bad."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from agiqa.cli import app

HEADER = "name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align\n"
runner = CliRunner()


def tiny_3k(root: Path, rows: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "data.csv").write_text(HEADER + "".join(rows))
    return root


def test_check_prints_a_json_summary_after_decoding_every_image(tmp_path: Path) -> None:
    root = tiny_3k(
        tmp_path / "ds",
        [f"g_normal_{i}.jpg,a cat {i % 2},,,,{i}.5,0.3,2.0,0.4\n" for i in range(4)],
    )
    for i in range(4):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / f"g_normal_{i}.jpg")
    result = runner.invoke(app, ["datasets", "check", "agiqa-3k", "--root", str(root)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rows"] == 4 and summary["prompt_groups"] == 2
    assert summary["dimensions"]["quality"]["min"] == 0.5
    assert summary["dimensions"]["quality"]["max"] == 3.5
    assert summary["images_verified"] is True


def test_check_fails_on_a_missing_image_unless_metadata_only(tmp_path: Path) -> None:
    root = tiny_3k(tmp_path / "ds", ["g_normal_0.jpg,a cat,,,,1.0,0.3,2.0,0.4\n"])
    result = runner.invoke(app, ["datasets", "check", "agiqa-3k", "--root", str(root)])
    assert result.exit_code == 2
    assert "g_normal_0.jpg" in result.output and "missing" in result.output.lower()
    metadata_only = ["datasets", "check", "agiqa-3k", "--root", str(root), "--metadata-only"]
    assert runner.invoke(app, metadata_only).exit_code == 0


def test_check_names_file_and_row_of_a_nan_score(tmp_path: Path) -> None:
    root = tiny_3k(
        tmp_path / "ds",
        ["g_normal_0.jpg,a cat,,,,1.0,0.3,2.0,0.4\n", "g_normal_1.jpg,a dog,,,,,0.3,2.0,0.4\n"],
    )
    result = runner.invoke(
        app, ["datasets", "check", "agiqa-3k", "--root", str(root), "--metadata-only"]
    )
    assert result.exit_code == 2
    assert "data.csv, row 3" in " ".join(result.output.split())


def test_models_list_names_the_registered_models() -> None:
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0
    assert "clip_residual" in result.stdout and "clip_zeroshot" in result.stdout
    rows = {line.split("\t")[0]: line.split("\t") for line in result.stdout.splitlines()}
    # Stand-in weights are named, not loaded: counting needs the architecture only.
    assert rows["scva"][2].endswith("(tiny-vit-synthetic)") and rows["scva"][4] == "True"
    assert rows["dcmpln"][2] == "agiqa-tiny-clip (tiny-clip-synthetic)"
    assert int(rows["dcmpln"][3]) > 0 and rows["clip_zeroshot"][3] == "0"


def test_models_list_resolves_presets_and_reports_unbuildable_entries(tmp_path: Path) -> None:
    config = {
        "models": {
            "scva_hub": {
                "type": "scva",
                "blip": {"source": "transformers", "name_or_path": str(tmp_path / "missing")},
                "per_dataset": {"agiqa-1k": {"train_crops": 2}},
            }
        }
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["models", "list", "--configfile", str(path)])
    assert result.exit_code == 0, result.output
    assert "n/a (cannot load the BLIP ITM checkpoint" in result.stdout


# --- errors: one line naming the file, row or key; the traceback only with --debug ------------


def test_a_bad_input_is_one_line_and_debug_adds_the_traceback(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.csv"
    prompts.write_bytes("image,prompt\nx.png,caf\xe9\n".encode("latin-1"))
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    args = ["score", "--checkpoint", str(tmp_path), "--images", str(image)]
    plain = runner.invoke(app, [*args, "--prompts", str(prompts)])
    assert plain.exit_code == 2
    assert f"{prompts}, row 2: not a UTF-8 text file" in " ".join(plain.output.split())
    assert "Traceback" not in plain.output
    debug = runner.invoke(app, ["--debug", *args, "--prompts", str(prompts)])
    assert debug.exit_code == 2
    assert "Traceback (most recent call last)" in debug.output and "read_csv_rows" in debug.output
    again = runner.invoke(app, [*args, "--prompts", str(prompts)])  # --debug does not stick
    assert "Traceback" not in again.output


def test_an_unanticipated_error_is_one_line_unless_debugging(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from agiqa.cli import AgiqaApp

    demo = AgiqaApp()

    @demo.command()
    def crash() -> None:
        raise RuntimeError("disk on fire")

    @demo.command()
    def other() -> None:  # two commands, so `crash` is named on the command line
        pass

    monkeypatch.setattr(sys, "argv", ["agiqa", "crash"])
    with pytest.raises(SystemExit) as stopped:
        demo(["crash"])
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert "unexpected RuntimeError: disk on fire" in err and "--debug" in err
    assert "Traceback" not in err
    monkeypatch.setattr(sys, "argv", ["agiqa", "--debug", "crash"])
    with pytest.raises(RuntimeError, match="disk on fire"):
        demo(["crash"])


@pytest.mark.parametrize("debug", ["0", "1"])
def test_a_job_script_ends_on_a_bad_input_with_its_message(tmp_path: Path, debug: str) -> None:
    """What Snakemake shows of a failed job: the message; the traceback with AGIQA_DEBUG=1."""
    script = (
        "from agiqa.errors import DataError\n"
        "from agiqa.steps import job_log\n"
        "with job_log(None):\n"
        "    raise DataError('NaN score', file='data.csv', row=7)\n"
    )
    env = {**os.environ, "AGIQA_DEBUG": debug, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 1
    assert "data.csv, row 7: NaN score" in done.stderr
    assert ("Traceback" in done.stderr) == (debug == "1")
