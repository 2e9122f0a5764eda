"""Tests of the SCVA-AGIQA model (tiny random BLIP + tiny timm ViT, no network)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import agiqa.models.scva as scva
from agiqa.data.manifest import Dimension
from agiqa.errors import ConfigError
from agiqa.models.base import build_model, trainable_parameter_count

DIMS = (Dimension("quality", "quality", 0.0, 5.0), Dimension("align", "alignment", 0.0, 5.0))
WORDS = "a an the of on one two three four red green blue circle circles square squares picture"
SMALL = {"dim": 32, "neck_channels": 32, "expert_hidden": 32, "shared_dim": 16, "max_length": 16}


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS.split(), *letters]
    path.write_text("\n".join(tokens + [f"##{c}" for c in letters]) + "\n", encoding="utf-8")
    return path


def tiny(vocab_file: Path, **kwargs: object) -> scva.Scva:
    torch.manual_seed(0)
    blip = {"source": "config", "config": scva.TINY_BLIP, "vocab_file": str(vocab_file)}
    return scva.Scva(DIMS, blip=blip, vit=scva.TINY_VIT, **{**SMALL, **kwargs})


def image(seed: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_forward_backward_finite(vocab_file: Path) -> None:
    model = tiny(vocab_file, train_crops=2)
    transform = model.image_transform(train=True)
    images = torch.stack([transform(image(i)) for i in range(3)])
    assert images.shape == (3, 2, 6, 32, 32)
    tokens = model.tokenize(["two red circles"] * 3, ["a picture of red circles", "", "blue"])
    predictions = model(images, tokens)
    assert predictions.shape == (3, 2)
    model.loss(predictions, torch.rand(3, 2)).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in model.vit.parameters() if g.grad is not None)


def test_csf_weights_do_not_depend_on_the_batch(vocab_file: Path) -> None:
    model = tiny(vocab_file)
    transform = model.image_transform(train=False)
    crops = torch.cat([transform(image(i))[:, :3] for i in range(4)])
    # Scale one other image so that batch-wide statistics would change the first map.
    crops[-1] = crops[-1] * 3 + 1
    alone = model.csf_map(crops[:1])
    batched = model.csf_map(crops)
    assert alone.shape == (1, 4, 4)
    torch.testing.assert_close(alone[0], batched[0], rtol=0, atol=1e-6)
    assert batched.amin() >= 0 and batched.amax() <= 1


def test_prediction_does_not_depend_on_the_batch(vocab_file: Path) -> None:
    model = tiny(vocab_file).eval()
    transform = model.image_transform(train=False)
    images = torch.stack([transform(image(i)) for i in range(3)])
    tokens = model.tokenize(["one red circle", "two squares", "a blue square"])
    with torch.no_grad():
        alone = model(images[:1], tokens[:1])
        batched = model(images, tokens)
    torch.testing.assert_close(alone[0], batched[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("freeze", "frozen_blocks", "vit_trainable"),
    [
        ({"blip_fraction": 0.5, "vit": "none"}, 1, True),
        ({"blip_fraction": 1.0, "vit": "full"}, 2, False),
        ({"blip_fraction": 0.0, "vit": 2}, 0, True),
    ],
)
def test_trainable_split(
    vocab_file: Path, freeze: dict, frozen_blocks: int, vit_trainable: bool
) -> None:
    model = tiny(vocab_file, freeze=freeze)
    text_layers = model.text_encoder.encoder.layer
    for index, layer in enumerate(text_layers):
        trainable = all(p.requires_grad for p in layer.parameters())
        assert trainable == (index >= frozen_blocks)
    embeddings_frozen = not any(p.requires_grad for p in model.text_encoder.embeddings.parameters())
    assert embeddings_frozen == (freeze["blip_fraction"] > 0)
    assert any(p.requires_grad for p in model.vit.parameters()) == vit_trainable
    if freeze["vit"] == 2:
        assert not any(p.requires_grad for p in model.vit.blocks[1].parameters())
        assert all(p.requires_grad for p in model.vit.blocks[2].parameters())
        assert not model.vit.pos_embed.requires_grad
    assert all(p.requires_grad for p in model.head.parameters())
    assert 0 < trainable_parameter_count(model) < sum(p.numel() for p in model.parameters())


def test_tokenize_packing_and_empty_descriptions(vocab_file: Path) -> None:
    model = tiny(vocab_file)
    tokens = model.tokenize(["two red circles", "one square"], ["a red picture", ""])
    assert tokens.shape == (2, 2, 2, 16) and tokens.dtype == torch.long
    assert torch.equal(tokens[1, 1], tokens[1, 0])  # empty description -> the prompt
    assert not torch.equal(tokens[0, 1], tokens[0, 0])
    assert torch.equal(model.tokenize(["one square"]), model.tokenize(["one square"], [""]))
    ids, mask = tokens[0, 0]
    assert mask.sum() == 5  # [CLS] two red circles [SEP]
    assert (ids[mask == 0] == 0).all()
    long = model.tokenize(["red " * 40])
    assert long.shape[-1] == 16 and long[0, 0, 1].all()


def test_eval_transform_is_deterministic_and_upscales_small_images(vocab_file: Path) -> None:
    model = tiny(vocab_file, test_crops=5)
    transform = model.image_transform(train=False)
    first, second = transform(image(3)), transform(image(3))
    assert first.shape == (5, 6, 32, 32)
    assert torch.equal(first, second)
    assert not torch.equal(first[0, :3], first[-1, :3])  # crops cover different places
    small = transform(image(4, size=(20, 12)))
    assert small.shape == (5, 6, 32, 32) and torch.isfinite(small).all()
    # Each backbone gets its own statistics: a grey image maps differently in the two halves.
    grey = transform(Image.new("RGB", (40, 40), (128, 128, 128)))
    assert not torch.allclose(grey[0, 0], grey[0, 3])


def test_build_model_from_config(vocab_file: Path) -> None:
    config = {
        "type": "scva",
        "blip": {"source": "config", "config": scva.TINY_BLIP, "vocab_file": str(vocab_file)},
        "vit": scva.TINY_VIT,
        "feature_blocks": [2, 3],
        "train": {"epochs": 1},
        **SMALL,
    }
    model = build_model(config, DIMS)
    assert isinstance(model, scva.Scva) and model.uses_descriptions
    assert model.feature_blocks == [2, 3] and len(model.vit.blocks) == 4


def test_missing_checkpoint_and_bad_config_raise_clearly(tmp_path: Path, vocab_file: Path) -> None:
    missing = {"source": "transformers", "name_or_path": str(tmp_path / "no-such-blip")}
    with pytest.raises(ConfigError, match="cannot load the BLIP ITM checkpoint"):
        scva.Scva(DIMS, blip=missing)
    with pytest.raises(ConfigError, match="does not exist"):
        scva.Scva(DIMS, blip={"source": "imagereward", "checkpoint": "full_model.pth"})
    with pytest.raises(ConfigError, match="feature_blocks"):
        tiny(vocab_file, feature_blocks=[7])
    with pytest.raises(ConfigError, match="freeze"):
        tiny(vocab_file, freeze={"vit": "half"})
