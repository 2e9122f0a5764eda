"""SCVA learns quality when its ViT starts from (stand-in) pretrained weights, as published.

SCVA fine-tunes an ImageNet-pretrained ViT-B/16. A tiny ViT trained from scratch on a few hundred
images predicts the mean (measured held-out SRCC -0.02 to 0.12 over patch sizes, crop sizes,
widths, data sizes and epochs). ``agiqa.train.stand_in.pretrain_vit`` stands in for ImageNet: the
tiny ViT first learns which degradations an image carries, on a synthetic dataset with another
seed; SCVA then loads it through ``vit.checkpoint`` and fine-tunes everything on the evaluated data.
The BLIP towers stay random and there are no descriptions: this tests the visual path and head.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agiqa.data.manifest import Dimension
from agiqa.errors import ConfigError
from agiqa.models.scva import TINY_VIT, Scva, build_vit
from agiqa.train.fold import run_fold
from agiqa.train.stand_in import pretrain_stand_in
from test_train import job, prepare

STAND_IN = {
    "kind": "vit",
    "vit": dict(TINY_VIT),
    # Far from the evaluation seeds, so no prompt or image is shared with the evaluated data.
    "synthesize": {"n_prompts": 200, "images_per_prompt": 4, "image_size": 64, "seed": 100},
    "epochs": 100,
    "batch_size": 32,
    "lr": 2e-3,
    "weight_decay": 0.05,
}


@pytest.fixture(scope="module")
def pretrained_tiny_vit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stand-in")
    checkpoint = root / "tiny-vit.pt"
    pretrain_stand_in(STAND_IN, checkpoint)
    return checkpoint


def test_vit_checkpoint_loads_without_its_classifier(pretrained_tiny_vit: Path) -> None:
    state = torch.load(pretrained_tiny_vit, weights_only=True)
    assert state["head.weight"].shape == (6, TINY_VIT["embed_dim"])  # one logit per degradation
    vit, _ = build_vit({**TINY_VIT, "checkpoint": str(pretrained_tiny_vit)})
    assert torch.equal(vit.patch_embed.proj.weight, state["patch_embed.proj.weight"])
    with pytest.raises(ConfigError, match="does not fit"):
        build_vit({**TINY_VIT, "embed_dim": 16, "checkpoint": str(pretrained_tiny_vit)})
    with pytest.raises(ConfigError, match="does not exist"):
        Scva((Dimension("quality", "quality", 0, 5),), vit={**TINY_VIT, "checkpoint": "nope.pt"})


def test_scva_learns_quality_from_a_pretrained_vit(
    tmp_path: Path, pretrained_tiny_vit: Path
) -> None:
    """Held-out quality SRCC above chance, with the published head (the model's defaults).

    Measured with this setting on one thread (data seed x training seed, the job's ``seed``):
    data 0: 0.676, 0.737, 0.586; data 1: 0.298, 0.500, 0.668; data 2: 0.640, 0.550, 0.538 (the
    head used before, with dropout and the soft alignment: 0.55, 0.65, 0.50, 0.66, 0.55 on data
    seeds 0-4, training seed 0; from a random ViT: -0.02 to 0.12). Chance on the 60-image test
    fold is 0 +- 0.13, and the epoch is selected on a validation part of about 18 images, hence
    the spread. The test runs data and training seed 0 and asserts 0.2, below the worst of the
    nine (0.298).
    """
    paths = prepare(tmp_path, n_prompts=60, seed=0)
    config = {
        "type": "scva",
        "blip": {"source": "config"},
        "vit": {**TINY_VIT, "checkpoint": str(pretrained_tiny_vit)},
        "dim": 32,
        "neck_channels": 32,
        "expert_hidden": 32,
        "shared_dim": 16,
        "max_length": 16,
        "train_crops": 2,
        "test_crops": 8,
        "train": {"epochs": 30, "batch_size": 16, "lr": 1e-3, "patience": 30},
    }
    metrics = run_fold(job(tmp_path, paths, config))
    assert metrics["test"]["quality"]["srcc"] > 0.2
