"""``agiqa models list --no-weights``: real sizes with random weights, nothing downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from agiqa.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("no_network")


def rows(output: str) -> dict[str, list[str]]:
    lines = [line.split("\t") for line in output.splitlines() if "\t" in line]
    header, *body = lines
    assert header[3:] == ["trainable_parameters", "uses_descriptions", "total_parameters"]
    return {row[0]: row for row in body}


def test_no_weights_builds_offline_backbones_at_their_real_size(
    tmp_path: Path, no_network: list[object]
) -> None:
    backbone = {
        "arch": "ViT-B-32",
        "pretrained": "openai",
        "cache_dir": str(tmp_path / "empty"),
        "offline": True,
    }
    config = {
        "models": {
            "dcmpln": {"type": "dcmpln", "backbone": backbone},
            "zeroshot": {"type": "clip_zeroshot", "backbone": backbone},
            "scva_hub": {
                "type": "scva",
                "blip": {"source": "transformers", "name_or_path": str(tmp_path / "missing")},
            },
        }
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    # Without the flag the offline backbones are not built from weights that are not there...
    result = runner.invoke(app, ["models", "list", "--configfile", str(path), "--no-weights"])
    assert result.exit_code == 0, result.output
    table = rows(result.stdout)
    assert table["dcmpln"][2] == "ViT-B-32 (openai; not loaded)"
    assert int(table["dcmpln"][3]) == 15_468_416  # the proxy's two learners + MPA + adapter
    assert int(table["dcmpln"][5]) == 15_468_416 + 151_277_313  # + the frozen ViT-B/32 CLIP
    assert (table["zeroshot"][3], table["zeroshot"][5]) == ("0", "151277313")
    # A BLIP ITM checkpoint whose config is not on this machine cannot be sized offline.
    assert table["scva_hub"][3].startswith("n/a (the BLIP ITM config")
    assert no_network == []


@pytest.mark.slow
def test_no_weights_lists_every_paper_model() -> None:
    """Builds ViT-L/14 three times and ImageReward's BLIP + ViT-B/16: a minute or two on a CPU."""
    paper = str(REPO / "config" / "paper.yaml")
    result = runner.invoke(app, ["models", "list", "--configfile", paper, "--no-weights"])
    assert result.exit_code == 0, result.output
    table = rows(result.stdout)
    for name in ("clip_residual", "clip_linear_probe", "dcmpln", "scva", "clip_zeroshot"):
        trainable, total = int(table[name][3]), int(table[name][5])
        assert 0 <= trainable <= total and total > 100_000_000, name
    assert table["clip_zeroshot"][3] == "0"
    assert int(table["dcmpln"][3]) == 15_468_416
    # SCVA: ImageReward's ViT-L/16 + BERT (half frozen), the pruned ViT-B/16 and the head.
    assert int(table["scva"][5]) > 500_000_000
    # Qwen2.5-VL-7B (8.29 B with its vision tower), sized on the meta device: no 30 GB in RAM.
    assert int(table["mllm_zeroshot"][5]) == 8_292_166_656 and table["mllm_zeroshot"][3] == "0"
    assert 0.5e9 < int(table["deqa"][3]) < int(table["deqa"][5])  # LoRA r 128 + vision tower
