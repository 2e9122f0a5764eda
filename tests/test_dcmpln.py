"""DCMPLN on the tiny random-init CLIP: CPU only, no network (sockets are blocked)."""

from __future__ import annotations

import socket

import numpy as np
import pandas as pd
import pytest
import torch

import agiqa.models.dcmpln  # registers "dcmpln"
from agiqa.data.manifest import Dimension
from agiqa.errors import ConfigError
from agiqa.models import MODELS, build_model, trainable_parameter_count
from agiqa.models.base import PartData
from agiqa.models.clip_backbone import TINY_ARCH
from agiqa.models.dcmpln import (
    ALIGNMENT_CLASSES,
    NORMALISATIONS,
    QUALITY_CLASSES,
    Dcmpln,
    encode_image_prompted,
    encode_text_prompted,
)
from agiqa.train.data import DecodedImages, ManifestImages

QUALITY = Dimension("quality", "quality", 0, 5)
AUTHENTICITY = Dimension("authenticity", "quality", 0, 100)
ALIGN = Dimension("align", "alignment", 0, 5)
BOTH = (QUALITY, ALIGN)
TINY = {"arch": TINY_ARCH}
# clip_configs/agiqa-tiny-clip.json: 3 vision blocks, 2 text blocks, every width 64.
VISION_BLOCKS, TEXT_BLOCKS, WIDTH, SIZE = 3, 2, 64, 64
SMALL = {"n_ctx": 4, "mpa_dim": 32, "mpa_heads": 4}


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: socket.socket, address: object) -> None:
        raise OSError(f"network disabled in tests: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def dcmpln(dims: tuple[Dimension, ...] = BOTH, **kwargs: object) -> Dcmpln:
    torch.manual_seed(0)
    model = build_model({"type": "dcmpln", "backbone": TINY, **SMALL, **kwargs}, dims)
    assert isinstance(model, Dcmpln)
    return model


def batch(model: Dcmpln, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, SIZE, SIZE, generator=generator)
    tokens = model.tokenize([f"a photo of {i} red cubes" for i in range(n)])
    return images, tokens


def test_registered_with_flags() -> None:
    assert MODELS.get("dcmpln") is agiqa.models.dcmpln.Dcmpln
    assert Dcmpln.trainable and Dcmpln.uses_gpu


@pytest.mark.parametrize("dims", [BOTH, (QUALITY,), (ALIGN, QUALITY, AUTHENTICITY)])
def test_forward_shape_unit_interval_and_generation_prompt_ignored(
    dims: tuple[Dimension, ...],
) -> None:
    model = dcmpln(dims)
    images, tokens = batch(model)
    predictions = model(images, tokens)
    assert predictions.shape == (4, len(dims))
    assert ((predictions >= 0) & (predictions <= 1)).all()
    other_tokens = model.tokenize(["something else entirely"] * 4)
    assert torch.equal(model(images, other_tokens), predictions)


def test_columns_follow_dataset_order_and_branches() -> None:
    model = dcmpln((ALIGN, QUALITY, AUTHENTICITY))
    # Score groups: two main (quality, authenticity) first, then the aux one (align).
    assert model.columns.tolist() == [2, 0, 1]
    assert len(model.prompts.main_context) == 2 and len(model.prompts.aux_context) == 1
    # Each quality dimension has its own context, so the columns differ.
    predictions = model(*batch(model))
    assert not torch.allclose(predictions[:, 1], predictions[:, 2])


def test_backward_reaches_only_learned_parts() -> None:
    model = dcmpln()
    model.train()
    images, tokens = batch(model)
    targets = torch.rand(4, 2, generator=torch.Generator().manual_seed(1))
    model.loss(model(images, tokens), targets).backward()
    for name, parameter in model.named_parameters():
        if name.startswith("clip."):
            assert parameter.grad is None, name
        else:
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    nonzero = [
        "prompts.main_context.0",
        "prompts.aux_context.0",
        "prompts.main_deep.0",
        "prompts.aux_deep.0",
        "prompts.visual.0",
        "prompts.visual.1",
        "prompts.main_visual.0",
        "prompts.main_visual.1",
        "prompts.fusion.0.weight",
        "prompts.fusion.1.weight",
        "mpa.text_out.weight",
        "mpa.vision_out.weight",
        "adapter.mlp.0.weight",
        "adapter.mlp.2.weight",
    ]
    grads = {name: p.grad for name, p in model.named_parameters()}
    for name in nonzero:
        assert grads[name].abs().sum() > 0, name


def test_trainable_set_and_size_are_pinned() -> None:
    model = dcmpln((QUALITY, AUTHENTICITY, ALIGN))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    depth, n, d = TEXT_BLOCKS, SMALL["n_ctx"], SMALL["mpa_dim"]
    assert model.prompt_depth == depth  # default: every block of the shallower (text) tower
    prompts = {
        "prompts.main_context.0",
        "prompts.main_context.1",
        "prompts.aux_context.0",
        "prompts.main_deep.0",
        "prompts.aux_deep.0",
        "prompts.visual.0",
        "prompts.visual.1",
        "prompts.main_visual.0",
        "prompts.main_visual.1",
    } | {f"prompts.fusion.{i}.{kind}" for i in range(2) for kind in ("weight", "bias")}
    mpa = {"mpa.layer_embedding"} | {
        f"mpa.{part}.{kind}"
        for part in ("text_norm", "vision_norm", "text_in", "vision_in", "text_out", "vision_out")
        for kind in ("weight", "bias")
    }
    mpa |= {f"mpa.attention.{name}" for name in ("in_proj_weight", "in_proj_bias")}
    mpa |= {"mpa.attention.out_proj.weight", "mpa.attention.out_proj.bias"}
    adapter = {f"adapter.mlp.{i}.{kind}" for i in (0, 2) for kind in ("weight", "bias")}
    assert trainable == prompts | mpa | adapter
    # By hand: 2 quality contexts + 1 aux context, (depth - 1) deep layers per branch, depth
    # visual layers per set (two sets), each n x 64, and one Linear(128 -> 64) per layer.
    fusion = depth * (2 * WIDTH * WIDTH + WIDTH)
    prompt_size = (2 + 1) * n * WIDTH + 2 * (depth - 1) * n * WIDTH + 2 * depth * n * WIDTH + fusion
    mpa_size = (
        2 * (2 * WIDTH)  # the two LayerNorms
        + 2 * (WIDTH * d + d)  # text_in, vision_in
        + depth * d  # layer embedding
        + (3 * d * d + 3 * d)
        + (d * d + d)  # attention in/out projections
        + 2 * (d * WIDTH + WIDTH)  # text_out, vision_out
    )
    hidden = WIDTH // 4
    adapter_size = WIDTH * hidden + hidden + hidden * WIDTH + WIDTH
    assert prompt_size == 18816 and mpa_size == 12928 and adapter_size == 2128
    assert trainable_parameter_count(model) == prompt_size + mpa_size + adapter_size == 33872
    # One shared visual set: no target set, no fusion.
    one_set = dcmpln((QUALITY, AUTHENTICITY, ALIGN), visual_prompt_sets=1)
    assert trainable_parameter_count(one_set) == 33872 - depth * n * WIDTH - fusion == 16848


def test_prompted_encoders_equal_clip_without_prompts() -> None:
    model = dcmpln()
    images, tokens = batch(model)
    with torch.no_grad():
        assert torch.equal(
            encode_image_prompted(model.clip, images), model.clip.encode_image(images)
        )
        assert torch.equal(encode_text_prompted(model.clip, tokens), model.clip.encode_text(tokens))


def test_prompts_act_in_every_prompted_layer() -> None:
    model = dcmpln()
    images, _ = batch(model)
    tokens = model.class_tokens
    n = SMALL["n_ctx"]
    visual = [torch.randn(n, WIDTH) for _ in range(VISION_BLOCKS)]
    text = [torch.randn(len(tokens), n, WIDTH) for _ in range(TEXT_BLOCKS)]
    with torch.no_grad():
        base_image = encode_image_prompted(model.clip, images, visual)
        base_text = encode_text_prompted(model.clip, tokens, text)
        assert not torch.allclose(base_image, model.clip.encode_image(images))
        for layer in range(VISION_BLOCKS):
            # Random, not constant: LayerNorm would cancel a shift of every channel.
            changed = [p + torch.randn_like(p) if i == layer else p for i, p in enumerate(visual)]
            assert not torch.allclose(
                encode_image_prompted(model.clip, images, changed), base_image
            )
        for layer in range(TEXT_BLOCKS):
            changed = [p + torch.randn_like(p) if i == layer else p for i, p in enumerate(text)]
            assert not torch.allclose(encode_text_prompted(model.clip, tokens, changed), base_text)


@pytest.mark.parametrize("depth", [0, TEXT_BLOCKS + 1, VISION_BLOCKS + 1, -1])
def test_prompt_depth_beyond_the_towers_is_a_config_error(depth: object) -> None:
    with pytest.raises(ConfigError, match=r"\[1, 2\].*vision 3, text 2"):
        dcmpln(prompt_depth=depth)


@pytest.mark.parametrize("depth", [True, 1.5, "2"])
def test_a_prompt_depth_that_is_no_integer_fails_before_the_build(depth: object) -> None:
    with pytest.raises(ConfigError, match="prompt_depth must be an integer or null"):
        dcmpln(prompt_depth=depth)


def test_depth_one_has_no_deep_text_prompts() -> None:
    model = dcmpln(prompt_depth=1)
    names = {name for name, _ in model.prompts.named_parameters()}
    fusion = {"fusion.0.weight", "fusion.0.bias"}
    assert names == {"main_context.0", "aux_context.0", "visual.0", "main_visual.0"} | fusion
    assert model(*batch(model)).shape == (4, 2)


def test_non_vit_backbone_is_refused() -> None:
    with pytest.raises(ConfigError, match="ViT"):
        build_model({"type": "dcmpln", "backbone": {"arch": "agiqa-tiny-rn-clip"}}, BOTH)


@pytest.mark.parametrize(
    "config",
    [
        {"n_ctx": 0},
        {"mpa_dim": 30},
        {"adapter_ratio": 1.5},
        {"adapter_reduction": 0},
        {"aux_weight": -0.1},
        {"quality_classes": ["good photo"]},
        {"alignment_classes": "aligned"},
        {"quality_classes": ["good " * 40, "bad photo"]},
    ],
)
def test_bad_config_is_a_config_error(config: dict) -> None:
    with pytest.raises(ConfigError):
        dcmpln(**config)


def test_clip_is_frozen_and_stays_in_eval_mode() -> None:
    model = dcmpln()
    assert model.training and not model.clip.training
    model.eval()
    model.train()
    assert model.training and model.adapter.training and not model.clip.training
    assert not any(p.requires_grad for p in model.clip.parameters())
    # Frozen, yet the prompts run inside the encoders: no feature cache may stand in for them.
    assert model.feature_key() is None


def test_loss_is_quality_mse_plus_weighted_aux_mse() -> None:
    model = dcmpln((ALIGN, QUALITY, AUTHENTICITY), aux_weight=0.5)
    predictions = torch.tensor([[0.5, 0.2, 1.0], [0.5, 0.4, 0.0]])
    targets = torch.tensor([[0.0, 0.2, 0.0], [1.0, 0.2, 0.0]])
    # align MSE 0.25; quality MSE 0.02, authenticity MSE 0.5.
    expected = (0.02 + 0.5) / 2 + 0.5 * 0.25
    assert model.loss(predictions, targets).item() == pytest.approx(expected)
    quality_only = dcmpln((QUALITY,))
    assert quality_only.loss(predictions[:, 1:2], targets[:, 1:2]).item() == pytest.approx(0.02)


def test_runs_under_bfloat16_autocast() -> None:
    model = dcmpln()
    images, tokens = batch(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        predictions = model(images, tokens).float()
    assert torch.isfinite(predictions).all()
    assert ((predictions >= 0) & (predictions <= 1)).all()


def test_quality_only_dataset_keeps_an_unscored_aux_branch() -> None:
    model = dcmpln((QUALITY,))
    assert len(model.prompts.aux_context) == 1
    assert model.class_tokens.shape[0] == 2  # only the main pair is encoded


def test_a_few_steps_reduce_the_loss() -> None:
    model = dcmpln()
    model.train()
    images, tokens = batch(model, n=8)
    generator = torch.Generator().manual_seed(2)
    # High quality, low alignment: far from the ~0.5 an untrained model outputs.
    targets = torch.stack(
        [0.7 + 0.3 * torch.rand(8, generator=generator), 0.3 * torch.rand(8, generator=generator)],
        dim=1,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=3e-3)
    losses = []
    for _ in range(8):
        loss = model.loss(model(images, tokens), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# --- the proxy's structure and inputs (methods.md 9.2; docs/methods.md, DCMPLN) ---------------


def test_paper_size_is_the_proxys_two_learners_plus_mpa_and_adapter() -> None:
    """ViT-B/32, n_ctx 8, depth 12: the proxy's learners are ~14.4 M (today's one set: 1.23 M)."""
    dims = (QUALITY, ALIGN)
    config = {"type": "dcmpln", "backbone": {"arch": "ViT-B-32"}, "n_ctx": 8, "prompt_depth": 12}
    torch.manual_seed(0)
    model = build_model(config, dims)
    prompts = sum(p.numel() for p in model.prompts.parameters())
    fusion = sum(p.numel() for p in model.prompts.fusion.parameters())
    assert (prompts, fusion) == (14_410_752, 14_164_992)
    assert (
        model.prompts.fusion[0].in_features == 1536 and model.prompts.fusion[0].out_features == 768
    )
    assert trainable_parameter_count(model) == 14_410_752 + 925_952 + 131_712 == 15_468_416
    one_set = build_model({**config, "visual_prompt_sets": 1}, dims)
    assert trainable_parameter_count(one_set) == 1_229_696


def test_two_sets_encode_the_image_twice_one_set_once() -> None:
    calls: list[int] = []

    def passes(model: Dcmpln) -> int:
        calls.clear()
        handle = model.clip.visual.conv1.register_forward_hook(lambda *_: calls.append(1))
        with torch.no_grad():
            model(*batch(model))
        handle.remove()
        return len(calls)

    assert passes(dcmpln()) == 2  # the aux pass (aligned/misaligned) and the fused main pass
    assert passes(dcmpln(visual_prompt_sets=1)) == 1
    assert passes(dcmpln((QUALITY,))) == 1  # no alignment dimension: the aux pass is not scored


def test_visual_prompts_are_appended_before_ln_pre() -> None:
    """As the proxy: ln_pre normalises the appended prompts, so their scale does not matter."""
    model = dcmpln()
    images, _ = batch(model)
    prompt = torch.randn(SMALL["n_ctx"], WIDTH)
    with torch.no_grad():
        small = encode_image_prompted(model.clip, images, [prompt])
        large = encode_image_prompted(model.clip, images, [1000 * prompt])
    torch.testing.assert_close(small, large, rtol=1e-4, atol=1e-4)


def test_auxiliary_class_names_are_the_proxys() -> None:
    assert ALIGNMENT_CLASSES == ("aligned photo", "misaligned photo")
    assert QUALITY_CLASSES == ("good photo", "bad photo")


def test_overall_is_scored_by_the_main_branch() -> None:
    overall = Dimension("overall", "overall", 0, 5)
    model = dcmpln((overall,))
    assert model.columns.tolist() == [0] and model.is_main.tolist() == [True]
    assert torch.equal(model.class_tokens, model._class_tokens(QUALITY_CLASSES))
    predictions = torch.tensor([[0.5], [0.1]])
    assert model.loss(predictions, torch.zeros(2, 1)).item() == pytest.approx(0.13)


def native_part(sizes: list[tuple[int, int]]) -> PartData:
    frame = pd.DataFrame({"image": [f"{i}.png" for i in range(len(sizes))], "prompt": "a cube"})
    images = ManifestImages(frame, "/nonexistent-root", "manifest.csv")
    rng = np.random.default_rng(0)
    decoded = DecodedImages([rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for w, h in sizes])
    targets = np.array([[0.2, 0.4], [0.6, 0.8]], dtype=np.float32)[: len(sizes)]
    return PartData("test", frame, images, targets, None, decoded)


def test_inputs_are_native_crops_averaged_at_stride_64() -> None:
    """Train: one random 64 crop (the tiny CLIP's input) + flip; test: every crop at the stride."""
    model = dcmpln(test_stride=16)
    assert dcmpln().test_stride == 64 and model.normalisation == "imagenet"
    data = native_part([(100, 80), (64, 64)])
    evaluation = model.make_dataset(data, train=False)
    # 100 x 80: tops 0, 16 and lefts 0, 16, 32 (unfold drops the remainder); 64 x 64: one crop.
    assert len(evaluation) == 6 + 1
    assert [evaluation[i][2] for i in range(7)] == [0] * 6 + [1]
    inputs, target, row = evaluation[4]  # top 16, left 16
    pixels = torch.from_numpy(np.array(data.decoded[0])).permute(2, 0, 1).float() / 255
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in NORMALISATIONS["imagenet"])
    torch.testing.assert_close(inputs["images"], (pixels[:, 16:80, 16:80] - mean) / std)
    assert row == 0 and torch.equal(target, torch.tensor([0.2, 0.4]))
    outputs = np.arange(14, dtype=np.float32).reshape(7, 2)
    reduced = model.reduce_predictions(outputs, np.array([0] * 6 + [1]), 2)
    np.testing.assert_allclose(reduced, [[5.0, 6.0], [12.0, 13.0]])
    crop = model.image_transform(train=True)(data.decoded[0])
    assert crop.shape == (3, 64, 64)  # a crop at native resolution, not a resized image
    centre = model.image_transform(train=False)  # for callers that transform single images
    torch.testing.assert_close(centre(data.decoded[0]), (pixels[:, 8:72, 18:82] - mean) / std)
    assert "train=False" in repr(centre)  # deterministic repr (caches key on it)
    assert len(model.make_dataset(data, train=True)) == 2


def test_resized_clip_inputs_remain_available() -> None:
    model = dcmpln(input_transform="resized", normalisation="clip")
    data = native_part([(100, 80)])
    assert len(model.make_dataset(data, train=False)) == 1
    assert model.image_transform(train=False) is model._preprocess.image(train=False)


@pytest.mark.parametrize(
    "config",
    [
        {"visual_prompt_sets": 3},
        {"input_transform": "crop"},
        {"test_stride": 0},
        {"normalisation": "laion"},
    ],
)
def test_bad_input_settings_are_config_errors(config: dict) -> None:
    with pytest.raises(ConfigError):
        dcmpln(**config)
