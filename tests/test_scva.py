"""Tests of the SCVA-AGIQA model (tiny random BLIP + tiny timm ViT, no network)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

import agiqa.models.scva as scva
from agiqa.data.manifest import Dimension
from agiqa.errors import ConfigError
from agiqa.models.base import PartData, build_model, trainable_parameter_count
from agiqa.models.scva_parts import (
    CsfPooling,
    DescriptionAttention,
    MoeRegressor,
    SemanticConsistency,
    hungarian_align,
)
from agiqa.train.data import DecodedImages, ManifestImages

DIMS = (Dimension("quality", "quality", 0.0, 5.0), Dimension("align", "alignment", 0.0, 5.0))
WORDS = "a an the of on one two three four red green blue circle circles square squares picture"
SMALL = {"dim": 32, "neck_channels": 32, "expert_hidden": 32, "shared_dim": 16, "max_length": 16}
#: The timm weights the published code loaded (timm 0.6.13's vit_base_patch16_224).
PINNED_VIT = "vit_base_patch16_224.augreg_in21k_ft_in1k"


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


@pytest.mark.parametrize(("crop_training", "crops"), [("averaged", 2), ("per_crop", 1)])
def test_forward_backward_finite(vocab_file: Path, crop_training: str, crops: int) -> None:
    model = tiny(vocab_file, train_crops=2, crop_training=crop_training)
    transform = model.image_transform(train=True)
    images = torch.stack([transform(image(i)) for i in range(3)])
    # K crops then the whole image; per-crop training gives each sample one crop.
    assert images.shape == (3, crops + 1, 3, 32, 32)
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
    crops = torch.cat([transform(image(i))[:-1] for i in range(4)])
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
    assert first.shape == (6, 3, 32, 32)  # 5 crops, then the whole image
    assert torch.equal(first, second)
    assert not torch.equal(first[0], first[4])  # crops cover different places
    small = transform(image(4, size=(20, 12)))
    assert small.shape == (6, 3, 32, 32) and torch.isfinite(small).all()
    # Each backbone gets its own statistics: a grey image maps differently in crop and whole.
    grey = transform(Image.new("RGB", (40, 40), (128, 128, 128)))
    assert not torch.allclose(grey[0, 0], grey[-1, 0])


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


# --- method fidelity (docs/methods.md, SCVA items 1-8 and 16) ---------------------------------


def test_blip_sees_the_whole_image_at_its_native_resolution(vocab_file: Path) -> None:
    """A BLIP ITM checkpoint trained at 384 gets 384, not the ViT's 224 with interpolation."""
    config = {**scva.TINY_BLIP, "vision_config": {**scva.TINY_BLIP["vision_config"]}}
    config["vision_config"]["image_size"] = 48  # the ViT crops stay 32
    torch.manual_seed(0)
    blip = {"source": "config", "config": config, "vocab_file": str(vocab_file)}
    model = scva.Scva(DIMS, blip=blip, vit=scva.TINY_VIT, test_crops=2, **SMALL).eval()
    sample = model.image_transform(train=False)(image(0))
    assert sample.shape == (3, 3, 48, 48)  # 2 crops (padded) + the whole image
    assert (sample[:2, :, 32:] == 0).all() and (sample[:2, :, :, 32:] == 0).all()
    seen: list[tuple[int, ...]] = []
    original = model.blip_vision.forward

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(tuple(kwargs["pixel_values"].shape))  # type: ignore[union-attr]
        return original(*args, **kwargs)

    model.blip_vision.forward = spy  # type: ignore[method-assign]
    with torch.no_grad():
        out = model(sample.unsqueeze(0), model.tokenize(["two red circles"]))
    assert seen == [(1, 3, 48, 48)] and out.shape == (1, 2)


def part(n: int, size: tuple[int, int] = (64, 48)) -> PartData:
    frame = pd.DataFrame({"image": [f"{i}.png" for i in range(n)], "prompt": ["a red circle"] * n})
    images = ManifestImages(frame, "/nonexistent-root", "manifest.csv")
    targets = np.linspace(0, 1, n, dtype=np.float32)[:, None].repeat(2, axis=1)
    decoded = DecodedImages([np.asarray(image(i, size)) for i in range(n)])
    return PartData("train", frame, images, targets, None, decoded)


def test_per_crop_training_makes_each_crop_a_sample(vocab_file: Path) -> None:
    """Published: K random crops per image per epoch, each with its own loss (methods.md 9.1)."""
    model = tiny(vocab_file, train_crops=3, test_crops=4)
    data = part(5)
    train = model.make_dataset(data, train=True)
    assert len(train) == 15  # the batch counts crops: an epoch has 3x the steps
    rows = [train[j][2] for j in range(len(train))]
    assert rows == [i // 3 for i in range(15)]
    inputs, target, _ = train[7]
    assert inputs["images"].shape == (2, 3, 32, 32)  # one crop + the whole image
    assert torch.equal(target, torch.from_numpy(data.targets[2]))
    # Crops of one image differ (each draw is a new random crop).
    assert not torch.equal(train[6][0]["images"][0], train[7][0]["images"][0])
    loader = DataLoader(train, batch_size=4, shuffle=True, collate_fn=model.collate)
    assert len(loader) == 4
    predictions = model(*next(iter(loader))[0].values())
    assert predictions.shape == (4, 2)
    # Evaluation keeps one sample per image, averaging its crops inside forward.
    evaluation = model.make_dataset(data, train=False)
    assert len(evaluation) == 5 and evaluation[0][0]["images"].shape == (5, 3, 32, 32)
    averaged = tiny(vocab_file, train_crops=3, crop_training="averaged")
    assert len(averaged.make_dataset(data, train=True)) == 5


def test_csf_pooling_published_form_and_weighted_mean() -> None:
    """``sum(f w) / sum(w) + 0.4 sum(f)``: on 196 positions the CSF shapes 1/(1 + 78.4) ~ 1.3%."""
    torch.manual_seed(0)
    tokens, csf = torch.randn(2, 196, 16), torch.rand(2, 196)
    published = CsfPooling(16, 16, 0.4, "published")
    mean = CsfPooling(16, 16, 0.4, "weighted_mean")
    mean.load_state_dict(published.state_dict())
    gated = tokens * torch.sigmoid(published.spatial(tokens))
    gated = gated * published.channel(tokens.mean(dim=1)).unsqueeze(1)
    w = csf.unsqueeze(-1)
    expected = (gated * w).sum(1) / w.sum(1) + 0.4 * gated.sum(1)
    torch.testing.assert_close(published(tokens, csf), expected)
    floor = w + 0.4
    torch.testing.assert_close(mean(tokens, csf), (gated * floor).sum(1) / floor.sum(1))
    # The share of the pooling weight that the CSF map decides, per form.
    share_published = 1 / (1 + 0.4 * 196)
    share_mean = (csf.sum(1) / (csf + 0.4).sum(1)).mean().item()
    assert share_published == pytest.approx(0.0126, abs=1e-4) and 0.5 < share_mean < 0.6


def test_csf_grey_is_the_channel_mean(vocab_file: Path) -> None:
    """Published grey = mean of the three channels, so green and blue detail weigh the same."""
    model = tiny(vocab_file)
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 2.0 - 1.0
    crops = torch.zeros(1, 3, 32, 32)
    crops[0, 1, :, :16] = checker[:, :16]  # green texture on the left half
    crops[0, 2, :, 16:] = checker[:, 16:]  # blue texture, same amplitude, on the right
    grid = model.csf_map(crops)[0]
    torch.testing.assert_close(grid[:, :2], grid[:, 2:].flip(-1), rtol=0, atol=1e-5)


def test_loss_beta_is_one_on_the_native_scale_of_each_dimension(vocab_file: Path) -> None:
    """SmoothL1 beta 1 on raw MOS: 0.2 on a 0-5 scale, 0.01 on AIGCIQA2023's 0-100."""
    dims = (Dimension("quality", "quality", 0, 5), Dimension("correspondence", "alignment", 0, 100))
    torch.manual_seed(0)
    blip = {"source": "config", "config": scva.TINY_BLIP, "vocab_file": str(vocab_file)}
    model = scva.Scva(dims, blip=blip, vit=scva.TINY_VIT, **SMALL)
    torch.testing.assert_close(model.loss_betas, torch.tensor([0.2, 0.01]))
    predictions, targets = torch.rand(6, 2), torch.rand(6, 2)
    raw = [
        F.smooth_l1_loss(predictions[:, i] * scale, targets[:, i] * scale, beta=1.0) / scale
        for i, scale in enumerate((5.0, 100.0))
    ]
    assert model.loss(predictions, targets).item() == pytest.approx(sum(raw).item() / 2)


def test_pinned_timm_tag_brings_its_own_statistics_and_offline_fails_fast() -> None:
    vit, stats = scva.build_vit({"name": PINNED_VIT, "pretrained": False})
    assert stats == ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]) and vit.embed_dim == 768
    with pytest.raises(ConfigError, match="agiqa weights fetch"):
        scva.build_vit({"name": PINNED_VIT, "pretrained": True, "offline": True, "depth": 1})


def test_swapped_normalisation_is_the_published_swap(vocab_file: Path) -> None:
    model = tiny(vocab_file)  # the default is the published AGIQA-1K/3K/AIGCIQA2023 swap
    assert model.crop_stats == (list(scva.BLIP_MEAN), list(scva.BLIP_STD))
    assert model.whole_stats == (list(scva.IMAGENET_MEAN), list(scva.IMAGENET_STD))
    imagenet = tiny(vocab_file, normalisation="imagenet")  # published on AIGIQA-20K
    imagenet_stats = (list(scva.IMAGENET_MEAN), list(scva.IMAGENET_STD))
    assert imagenet.crop_stats == imagenet.whole_stats == imagenet_stats
    matched = tiny(vocab_file, normalisation="matched")
    assert matched.whole_stats == (list(scva.BLIP_MEAN), list(scva.BLIP_STD))


def test_hungarian_alignment_and_linear_pooling_run(vocab_file: Path) -> None:
    prompt = torch.randn(2, 6, 8)
    order = torch.tensor([[3, 0, 5, 1, 4, 2], [1, 2, 3, 4, 5, 0]])
    description = torch.stack([prompt[i, order[i].argsort()] for i in range(2)])
    torch.testing.assert_close(hungarian_align(prompt, description), prompt)
    model = tiny(vocab_file, token_alignment="hungarian", consistency_pooling="linear")
    assert model.consistency.pool_positions.in_features == 16  # Linear(max_length -> 1)
    images = torch.stack([model.image_transform(train=True)(image(i)) for i in range(2)])
    predictions = model(images, model.tokenize(["two red circles", "one square"]))
    model.loss(predictions, torch.rand(2, 2)).backward()
    assert model.consistency.pool_positions.weight.grad is not None


def test_resize_below_scales_small_images_up_first(vocab_file: Path) -> None:
    plain = tiny(vocab_file, test_crops=1).image_transform(train=False)
    resized = tiny(vocab_file, test_crops=1, resize_below=64).image_transform(train=False)
    picture = image(5, size=(48, 40))
    assert not torch.allclose(plain(picture)[0], resized(picture)[0])
    big = image(6, size=(80, 64))
    assert torch.equal(plain(big), resized(big))  # short side already 64


def test_overall_dimension_is_one_regression_column(vocab_file: Path) -> None:
    torch.manual_seed(0)
    blip = {"source": "config", "config": scva.TINY_BLIP, "vocab_file": str(vocab_file)}
    overall = (Dimension("overall", "overall", 0, 5),)
    model = scva.Scva(overall, blip=blip, vit=scva.TINY_VIT, **SMALL)
    images = torch.stack([model.image_transform(train=False)(image(i)) for i in range(2)])
    assert model(images, model.tokenize(["a", "b"])).shape == (2, 1)


def test_without_weights_builds_imagereward_sizes_offline() -> None:
    entry = {
        "type": "scva",
        "blip": {"source": "imagereward", "checkpoint": "missing/ImageReward.pt"},
        "vit": {"name": PINNED_VIT, "pretrained": True, "offline": True},
    }
    random = scva.Scva.without_weights(entry)
    assert random["blip"]["source"] == "config"
    assert random["blip"]["config"]["vision_config"]["hidden_size"] == 1024
    assert random["vit"] == {"name": PINNED_VIT, "pretrained": False, "checkpoint": None}
    assert entry["vit"]["pretrained"] is True  # the entry itself is untouched


@pytest.mark.parametrize(
    "setting",
    [
        {"crop_training": "mean"},
        {"csf_pooling": "sum"},
        {"normalisation": "clip"},
        {"description_attention": "unmasked"},
        {"fusion": "noise"},
        {"shared_attention": "mean"},
        {"dim": 30, "heads": 4},
        {"token_alignment": "greedy"},
        {"consistency_pooling": "max"},
        {"resize_below": 0},
        {"loss_beta": 0},
    ],
)
def test_bad_fidelity_switches_are_config_errors(vocab_file: Path, setting: dict) -> None:
    with pytest.raises(ConfigError):
        tiny(vocab_file, **setting)


def test_defaults_are_the_published_head(vocab_file: Path) -> None:
    model = tiny(vocab_file)
    assert model.cross.mode == "published"
    assert model.consistency.alignment == "hungarian"
    assert model.consistency.pool_positions is not None  # Linear(L -> 1)
    assert model.consistency.fusion == "published"
    assert model.head.shared_mode == "cross"
    head_parts = (model.cross, model.consistency, model.head, model.pooling)
    dropouts = [m.p for part in head_parts for m in part.modules() if isinstance(m, nn.Dropout)]
    assert not any(dropouts)  # no dropout anywhere in the published head
    assert model.text_proj.bias is None  # the published bias-free projection matrix


def test_published_shared_dims_are_a_function_of_the_consistency_token() -> None:
    torch.manual_seed(0)
    moe = MoeRegressor(8, 1, 4, 3, 16, 4, 2, 0.0, 0, shared_attention="cross", shared_head_dim=4)
    visual, consistency = torch.randn(3, 8), torch.randn(3, 8)
    shared = moe.shared_features(visual, consistency)
    # The visual feature queries one key: the softmax is 1, only v(consistency) passes.
    torch.testing.assert_close(moe.shared_features(torch.randn(3, 8), consistency), shared)
    attention = moe.shared_attention
    expected = moe.shared_proj(attention.to_out(attention.to_v(consistency)))
    torch.testing.assert_close(shared, expected)
    assert not torch.allclose(moe.shared_features(visual, torch.randn(3, 8)), shared)
    variant = MoeRegressor(8, 1, 4, 3, 16, 4, 2, 0.0, 0, shared_attention="self")
    reference = variant.shared_features(visual, consistency)
    assert not torch.allclose(variant.shared_features(torch.randn(3, 8), consistency), reference)


def test_no_dropout_in_published_experts_and_description_attention() -> None:
    torch.manual_seed(0)
    visual, text = torch.randn(2, 5, 8), torch.randn(2, 3, 8)
    mask = torch.ones(2, 3, dtype=torch.bool)
    published = DescriptionAttention(8, 2, 0.0).train()
    torch.testing.assert_close(published(visual, text, mask), published(visual, text, mask))
    moe = MoeRegressor(8, 1, 4, 3, 16, 4, 2, 0.0, 0).train()
    features = torch.randn(6, 8), torch.randn(6, 8)
    torch.testing.assert_close(moe(*features), moe(*features))
    variant = MoeRegressor(8, 1, 4, 3, 16, 4, 2, 0.5, 0).train()  # the earlier dropout variant
    assert not torch.allclose(variant(*features), variant(*features))


def test_published_description_attention_normalises_the_text_and_sees_padding() -> None:
    torch.manual_seed(0)
    visual, text = torch.randn(2, 5, 8), torch.randn(2, 4, 8)
    mask = torch.tensor([[True, True, False, False], [True, True, True, False]])
    published = DescriptionAttention(8, 2, 0.0, "published")
    out = published(visual, text, mask)
    # A plain residual over the attention to the LayerNorm-ed text: no norm after it.
    torch.testing.assert_close(out, visual + published.attention(visual, published.norm(text)))
    padded = text.clone()
    padded[0, 2:] = torch.randn(2, 8)
    assert not torch.allclose(published(visual, padded, mask)[0], out[0])  # no padding mask
    masked = DescriptionAttention(8, 2, 0.0, "masked").eval()
    torch.testing.assert_close(masked(visual, padded, mask), masked(visual, text, mask))


def test_published_gemini_fusion_adds_noise_before_the_key_projection() -> None:
    torch.manual_seed(0)
    fusion = SemanticConsistency(8, 0.1, 4, fusion="published")
    assert all(layer.bias is None for layer in (fusion.query, fusion.key, fusion.value))
    assert fusion.relation[0].out_features == 2 and isinstance(fusion.relation[1], nn.GELU)
    assert fusion.noise.abs().sum() > 0  # random at init, as published
    own, other = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    gate = torch.sigmoid(fusion.relation(torch.cat([own, other], dim=-1)))
    keys = torch.stack([fusion.key(own + fusion.noise), gate * fusion.key(other)], dim=-2)
    values = torch.stack([fusion.value(own), fusion.value(other)], dim=-2)
    logits = (keys @ fusion.query(own).unsqueeze(-1)).squeeze(-1) / 8**0.5
    expected = own + (logits.softmax(dim=-1).unsqueeze(-1) * values).sum(dim=-2)
    torch.testing.assert_close(fusion.fuse(own, other), expected)
    offset = SemanticConsistency(8, 0.1, 4, fusion="offset")
    assert offset.key.bias is not None and not offset.noise.any()
    assert offset.relation[0].out_features == 8 and isinstance(offset.relation[1], nn.ReLU)


def test_previous_head_variants_still_build_and_train(vocab_file: Path) -> None:
    model = tiny(
        vocab_file,
        token_alignment="soft",
        consistency_pooling="attention",
        description_attention="masked",
        fusion="offset",
        shared_attention="self",
        dropout=0.1,
        normalisation="matched",
    )
    images = torch.stack([model.image_transform(train=True)(image(i)) for i in range(2)])
    predictions = model(images, model.tokenize(["two red circles", "one square"], ["a", "b"]))
    model.loss(predictions, torch.rand(2, 2)).backward()
    assert model.head.shared_attention.in_proj_weight.grad is not None


def test_an_empty_part_tokenizes_to_an_empty_batch(vocab_file: Path) -> None:
    """cross_train has no test part: the paper rehearsal's scva cross_train stopped on the
    tokenizer's IndexError for an empty list of prompts."""
    model = tiny(vocab_file)
    one = model.tokenize(["a red circle"], ["two squares"])
    none = model.tokenize([], [])
    assert none.shape == (0, *one.shape[1:]) and none.dtype == one.dtype
