"""``mem_mb`` of the model jobs (agiqa.resources): model part and decoded images."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from agiqa.pipeline import model_entry
from agiqa.resources import (
    BASE_MB,
    MEASURED_MB,
    MLLM_PARAMETERS,
    decoded_mb,
    job_mem_mb,
    model_mb,
)

REPO = Path(__file__).resolve().parents[1]
PAPER = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
DEMO = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_the_paper_models_get_their_measured_or_estimated_memory() -> None:
    expected = {
        "clip_residual": MEASURED_MB["clip", "ViT-L-14"],
        "clip_zeroshot": MEASURED_MB["clip", "ViT-L-14"],
        "dcmpln": MEASURED_MB["clip", "ViT-B-32"],
        "scva": MEASURED_MB["scva", "imagereward"],
        "resnet50_probe": MEASURED_MB["torchvision", "resnet50"],
        # 8.3 B parameters in bf16, loaded on the host first: one at a time on a 24 GiB machine
        "deqa": BASE_MB + 15_817,
        "deqa_3b": BASE_MB + 7_162,
    }
    for name, megabytes in expected.items():
        assert model_mb(model_entry(PAPER, name)) == megabytes, name
    assert model_mb(model_entry(PAPER, "deqa")) > 16_000
    # the demo's tiny models and stand-ins
    assert {model_mb(model_entry(DEMO, name)) for name in DEMO["models"]} == {BASE_MB}


@pytest.mark.parametrize("name", sorted(MLLM_PARAMETERS))
def test_mllm_parameter_counts_are_the_checkpoints(name: str) -> None:
    from agiqa.models.mllm.backbone import BackboneSpec, load_backbone, without_weights

    with torch.device("meta"):
        backbone = load_backbone(BackboneSpec(**without_weights({"name": name})))
    assert sum(p.numel() for p in backbone.model.parameters()) == MLLM_PARAMETERS[name]


def test_decoded_images_count_labelled_rows_at_the_cached_size(tmp_path: Path) -> None:
    for name in ("a.png", "b.png"):
        Image.new("RGB", (512, 256)).save(tmp_path / name)
    rows = pd.DataFrame(
        {"image": ["a.png", "b.png"] * 1000, "labelled": [True] * 1500 + [False] * 500}
    )
    rows.to_csv(tmp_path / "manifest.csv", index=False)
    native = {"train": {"decode_cache_short_side": None}}
    assert decoded_mb(native, tmp_path / "manifest.csv", tmp_path) == 563  # 1500 x 512x256x3
    shrunk = {"train": {"decode_cache_short_side": 128}}
    assert decoded_mb(shrunk, tmp_path / "manifest.csv", tmp_path) == 141  # a quarter
    assert decoded_mb({"train": {"decode_cache": False}}, tmp_path / "manifest.csv", tmp_path) == 0
    config = {
        "datasets": {"d": {"reader": "agiqa-3k", "root": str(tmp_path)}},
        "models": {"m": {"type": "dcmpln", "train": {"decode_cache_short_side": None}}},
    }
    assert job_mem_mb(config, "m", "d", tmp_path / "manifest.csv", "d") == BASE_MB + 563
