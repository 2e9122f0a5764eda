"""`make bench-gpu` smoke test: the whole campaign on a CPU with the tiny models.

The figures of a CPU run with tiny models mean nothing, so nothing here looks at a timing; the
test checks that every section ran and was recorded (docs/performance.md has the campaign).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agiqa.bench_gpu import PAPER_MODELS, CampaignOptions, random_weights
from agiqa.cli import app

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_campaign_on_cpu_records_every_section(tmp_path: Path) -> None:
    out, summary = tmp_path / "bench-gpu.json", tmp_path / "bench-gpu.md"
    args = ["bench-gpu", "--device", "cpu", "--tiny", "--out", str(out), "--summary", str(summary)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["setup"]["random_weights"] is True
    assert set(PAPER_MODELS) <= set(report["models"])
    for name in PAPER_MODELS:
        record = report["models"][name]
        assert "error" not in record, record.get("error")
        for path in ("agiqa", "seed_style"):
            for phase in ("whole_fold", "train", "score"):
                assert record[path][phase]["images"] > 0
                assert record[path][phase]["seconds"] > 0
        assert set(record["ratio"]) == {"whole_fold", "train", "score"}
        assert record["levers"]["steps"]["fp32"]["images"] > 0  # the one lever a CPU measures
    mfu = report["models"]["clip_residual"]["levers"]["mfu"]
    assert mfu["flops_per_step"] > 0 and mfu["mfu"] is None  # counted; no CPU peak to divide by
    assert report["decoding"]["pil_one_thread"] > 0
    text = summary.read_text()
    assert "random weights" in text and "**ratio**" in text


def test_weights_are_random_and_sizes_are_kept() -> None:
    clip = {"type": "clip_residual", "backbone": {"arch": "ViT-L-14", "pretrained": "openai"}}
    assert random_weights(clip)["backbone"] == {"arch": "ViT-L-14", "pretrained": None}
    assert clip["backbone"]["pretrained"] == "openai"  # the config entry is not changed


def test_full_mode_defaults_fit_one_gpu_and_tiny_ones_a_cpu() -> None:
    full = CampaignOptions.for_mode(False)
    tiny = CampaignOptions.for_mode(True, images=12)
    assert full.image_size == 512 and full.compile and math.isclose(full.budget_s, 420.0)
    assert tiny.images == 12 and tiny.image_size == 64 and not tiny.compile


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_target_runs_the_campaign_command() -> None:
    dry_run = subprocess.run(
        ["make", "-n", "bench-gpu", "BENCH_GPU_ARGS=--device cpu --tiny"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "agiqa bench-gpu --device cpu --tiny" in dry_run.stdout
