"""CLIP models on the tiny random-init backbone: CPU only, no network (sockets are blocked)."""

from __future__ import annotations

import pickle
from pathlib import Path

import open_clip
import pytest
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image

from agiqa import weights
from agiqa.data.manifest import Dimension
from agiqa.errors import ConfigError
from agiqa.models import MODELS, AgiqaModel, build_model, trainable_parameter_count
from agiqa.models.clip_backbone import TINY_ARCH, BackboneUnavailableError, load_clip

QUALITY = Dimension("quality", "quality", 0, 5)
ALIGN = Dimension("align", "alignment", 0, 5)
BOTH = (QUALITY, ALIGN)
TINY = {"arch": TINY_ARCH}
CONTEXT = 32  # clip_configs/agiqa-tiny-clip.json
SIZE = 64

# Exact stem of the tiny CLIP (open_clip.CLIP flattens the text tower onto the model).
STEM = (
    "clip.visual.conv1.weight",
    "clip.visual.class_embedding",
    "clip.visual.positional_embedding",
    "clip.visual.ln_pre.weight",
    "clip.visual.ln_pre.bias",
    "clip.token_embedding.weight",
    "clip.positional_embedding",
)


pytestmark = pytest.mark.usefixtures("no_network")


def residual(dims: tuple[Dimension, ...] = BOTH, **kwargs: object) -> AgiqaModel:
    return build_model({"type": "clip_residual", "backbone": TINY, **kwargs}, dims)


def zeroshot(dims: tuple[Dimension, ...] = BOTH, **kwargs: object) -> AgiqaModel:
    return build_model({"type": "clip_zeroshot", "backbone": TINY, **kwargs}, dims)


def batch(model: AgiqaModel, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, SIZE, SIZE, generator=generator)
    tokens = model.tokenize([f"a photo of {i} red cubes" for i in range(n)])
    return images, tokens


def trainable_names(model: AgiqaModel) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def block_names(model: AgiqaModel, prefix: str, blocks: range) -> set[str]:
    starts = tuple(f"{prefix}.{i}." for i in blocks)
    return {name for name, _ in model.named_parameters() if name.startswith(starts)}


def test_registered_with_flags() -> None:
    assert MODELS.get("clip_residual").trainable
    assert not MODELS.get("clip_zeroshot").trainable
    assert residual().backbone_name == "open_clip agiqa-tiny-clip (random init)"


@pytest.mark.parametrize("dims", [BOTH, (QUALITY,), (ALIGN, QUALITY, ALIGN)])
def test_residual_forward_shape_and_order(dims: tuple[Dimension, ...]) -> None:
    model = residual(dims)
    out = model(*batch(model, n=5))
    assert out.shape == (5, len(dims))
    kinds = ["quality" if type(h).__name__ == "QualityHead" else "alignment" for h in model.heads]
    assert kinds == [dim.kind for dim in dims]


def test_residual_backward_reaches_heads_and_backbone() -> None:
    model = residual()
    images, tokens = batch(model)
    model.loss(model(images, tokens), torch.rand(4, 2)).backward()
    grads = dict(model.named_parameters())
    for name in ("heads.0.base.weight", "heads.1.a", "heads.1.b", "heads.1.residual.1.weight"):
        assert grads[name].grad is not None and torch.isfinite(grads[name].grad).all(), name
    for name in ("clip.visual.conv1.weight", "clip.token_embedding.weight", "clip.text_projection"):
        grad = grads[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_residual_output_is_not_clamped_so_saturated_outputs_still_learn() -> None:
    model = residual((QUALITY,), residual_scale_q=0.2)
    head = model.heads[0]
    with torch.no_grad():
        head.base.bias.fill_(10.0)
        head.residual[-1].bias.fill_(5.0)
    out = model(*batch(model))
    assert (out > 1.0).all()
    model.loss(out, torch.zeros_like(out)).backward()
    assert head.residual[-1].bias.grad.abs().item() > 0


def test_quality_only_model_never_runs_or_trains_the_text_tower() -> None:
    model = residual((QUALITY,))

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("text tower ran")

    model.clip.encode_text = fail
    images, tokens = batch(model)
    model(images, tokens).sum().backward()
    backbone = {n for n in trainable_names(model) if n.startswith("clip.")}
    assert backbone and all(n.startswith("clip.visual.") for n in backbone)
    assert model.clip.visual.conv1.weight.grad is not None


def test_freeze_none_trains_everything_forward_uses() -> None:
    model = residual(freeze={"mode": "none"})
    frozen = {name for name, _ in model.named_parameters()} - trainable_names(model)
    assert frozen == {"clip.logit_scale"}


def test_freeze_full_trains_only_heads() -> None:
    model = residual(freeze={"mode": "full"})
    names = trainable_names(model)
    assert names and all(name.startswith("heads.") for name in names)
    assert {"heads.1.a", "heads.1.b", "heads.0.base.weight"} <= names
    assert trainable_parameter_count(model) == sum(p.numel() for p in model.heads.parameters())


def test_freeze_partial_freezes_stem_and_first_blocks_of_both_towers() -> None:
    model = residual(freeze={"mode": "partial", "layers": 1})
    frozen = {name for name, _ in model.named_parameters()} - trainable_names(model)
    expected = (
        set(STEM)
        | {"clip.logit_scale"}
        | block_names(model, "clip.visual.transformer.resblocks", range(1))
        | block_names(model, "clip.transformer.resblocks", range(1))
    )
    assert frozen == expected
    names = trainable_names(model)
    assert "clip.visual.transformer.resblocks.0.attn.in_proj_weight" in frozen
    assert "clip.transformer.resblocks.0.mlp.c_fc.weight" in frozen
    assert "clip.visual.transformer.resblocks.1.attn.in_proj_weight" in names
    assert "clip.transformer.resblocks.1.mlp.c_fc.weight" in names
    assert {"clip.visual.proj", "clip.visual.ln_post.weight", "clip.text_projection"} <= names
    assert {"clip.ln_final.weight", "heads.1.a", "heads.0.residual.0.weight"} <= names
    model.loss(model(*batch(model)), torch.rand(4, 2)).backward()
    assert model.clip.visual.transformer.resblocks[1].attn.in_proj_weight.grad is not None
    assert model.clip.visual.transformer.resblocks[0].attn.in_proj_weight.grad is None


def test_freeze_partial_beyond_the_shallower_tower_freezes_all_its_blocks() -> None:
    # The tiny config has 3 image and 2 text blocks, like ViT-L-14's 24/12 with freeze 18.
    model = residual(freeze={"mode": "partial", "layers": 3})
    names = trainable_names(model)
    assert not block_names(model, "clip.transformer.resblocks", range(2)) & names
    assert not block_names(model, "clip.visual.transformer.resblocks", range(3)) & names
    assert {"clip.visual.proj", "clip.text_projection", "clip.ln_final.weight"} <= names


@pytest.mark.parametrize("layers", [4, -1, "2", True, None])
def test_freeze_partial_rejects_invalid_depth(layers: object) -> None:
    with pytest.raises(ConfigError, match="layers"):
        residual(freeze={"mode": "partial", "layers": layers})


def test_freeze_partial_error_names_the_tower_depths() -> None:
    with pytest.raises(ConfigError, match=r"\[0, 3\].*vision 3, text 2.*got 4"):
        residual(freeze={"mode": "partial", "layers": 4})


@pytest.mark.parametrize(
    "config",
    [
        {"freeze": {"mode": "some"}},
        {"freeze": {"mode": "full", "depth": 2}},
        {"backbone": {"arch": TINY_ARCH, "weights": "x"}},
        {"loss_weights": {"quality": 1.0}},
        {"loss_weights": {"quality": -1.0, "align": 2.0}},
        {"alignment_hidden": [256]},
    ],
)
def test_residual_rejects_bad_config(config: dict) -> None:
    with pytest.raises(ConfigError):
        build_model({"type": "clip_residual", "backbone": TINY, **config}, BOTH)


def test_loss_is_weighted_sum_of_per_dimension_mse() -> None:
    predictions = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # MSE 0.5 and 1.0
    assert residual().loss(predictions, targets).item() == pytest.approx(0.75)
    weighted = residual(loss_weights={"quality": 1.0, "align": 0.0})
    assert weighted.loss(predictions, targets).item() == pytest.approx(0.5)


def test_eval_mode_is_deterministic() -> None:
    model = residual()
    model.eval()
    images, tokens = batch(model)
    with torch.no_grad():
        assert torch.equal(model(images, tokens), model(images, tokens))


def test_zeroshot_has_no_trainable_parameters_and_stays_in_eval() -> None:
    model = zeroshot()
    assert trainable_parameter_count(model) == 0
    model.train()
    assert not model.training and not model.clip.training


def test_zeroshot_outputs_in_unit_interval_and_deterministic() -> None:
    model = zeroshot((QUALITY, ALIGN, QUALITY))
    images, tokens = batch(model, n=6)
    out = model(images, tokens)
    assert out.shape == (6, 3)
    assert ((out >= 0) & (out <= 1)).all()
    assert torch.equal(out, model(images, tokens))
    assert torch.equal(out[:, 0], out[:, 2])


def test_zeroshot_alignment_is_rescaled_cosine() -> None:
    model = zeroshot((ALIGN,))
    images, tokens = batch(model)
    image = model.clip.encode_image(images, normalize=True)
    text = model.clip.encode_text(tokens, normalize=True)
    expected = ((image * text).sum(-1) + 1) / 2
    torch.testing.assert_close(model(images, tokens)[:, 0], expected.detach())


def test_zeroshot_quality_averages_antonym_pairs() -> None:
    first, second = ["Good photo.", "Bad photo."], ["Sharp photo.", "Blurry photo."]
    scores = []
    for pairs in ([first], [second], [first, second]):
        torch.manual_seed(0)  # same random backbone each time
        model = zeroshot((QUALITY,), quality_prompts=pairs)
        scores.append(model(*batch(model))[:, 0])
    torch.testing.assert_close(scores[2], (scores[0] + scores[1]) / 2)


@pytest.mark.parametrize("prompts", [[], ["Good photo."], [["a", "b", "c"]], "Good photo."])
def test_zeroshot_rejects_malformed_prompt_pairs(prompts: object) -> None:
    with pytest.raises(ConfigError, match="quality_prompts"):
        zeroshot(quality_prompts=prompts)


@pytest.mark.parametrize("make", [residual, zeroshot])
def test_transforms_and_tokenizer(make: object) -> None:
    model = make()
    for mode in ("RGB", "RGBA", "L"):
        image = Image.new(mode, (100, 80))
        assert model.image_transform(train=False)(image).shape == (3, SIZE, SIZE)
        assert model.image_transform(train=True)(image).shape == (3, SIZE, SIZE)
    tokens = model.tokenize(["a cat", "word " * 100])
    assert tokens.shape == (2, CONTEXT) and tokens.dtype == torch.long
    pickle.dumps(model.image_transform(train=True))  # DataLoader workers need this


def test_transforms_use_clip_statistics_and_augment_only_in_training() -> None:
    bundle = load_clip(TINY_ARCH)
    for transform in (bundle.preprocess.train_transform, bundle.preprocess.eval_transform):
        normalize = transform.transforms[-1]
        assert tuple(normalize.mean) == OPENAI_DATASET_MEAN
        assert tuple(normalize.std) == OPENAI_DATASET_STD
    train_steps = [type(t).__name__ for t in bundle.preprocess.train_transform.transforms]
    assert {"RandomResizedCrop", "RandomHorizontalFlip"} <= set(train_steps)
    assert bundle.preprocess.train_transform.transforms[1].scale == (0.8, 1.0)
    image = Image.new("RGB", (90, 70), color=(200, 10, 10))
    assert torch.equal(
        bundle.preprocess.eval_transform(image), bundle.preprocess.eval_transform(image)
    )


def test_image_size_override() -> None:
    bundle = load_clip(TINY_ARCH, image_size=96)
    assert bundle.preprocess.eval_transform(Image.new("RGB", (200, 150))).shape == (3, 96, 96)
    assert bundle.model.encode_image(torch.zeros(1, 3, 96, 96)).shape == (1, 64)


def test_pretrained_checkpoint_file_is_loaded(tmp_path: Path) -> None:
    source = load_clip(TINY_ARCH).model
    checkpoint = tmp_path / "tiny.pt"
    torch.save(source.state_dict(), checkpoint)
    loaded = load_clip(TINY_ARCH, pretrained=str(checkpoint)).model
    torch.testing.assert_close(loaded.visual.proj, source.visual.proj)


def test_builtin_tokenizer_works_offline(no_network: list[object]) -> None:
    assert open_clip.get_tokenizer("ViT-B-32")(["a cat"]).shape == (1, 77)
    assert no_network == []


def test_offline_missing_weights_fail_fast_without_network(
    tmp_path: Path, no_network: list[object]
) -> None:
    with pytest.raises(BackboneUnavailableError) as caught:
        load_clip("ViT-B-32", "openai", cache_dir=str(tmp_path), offline=True)
    assert no_network == []  # it fails without trying the network, so it cannot hang on it
    message = str(caught.value)
    assert "ViT-B-32" in message and "openai" in message and str(tmp_path) in message
    assert "offline" in message
    assert no_network == []


def test_offline_failure_through_model_config(tmp_path: Path) -> None:
    backbone = {"arch": "ViT-B-32", "pretrained": "openai", "cache_dir": str(tmp_path)}
    with pytest.raises(BackboneUnavailableError, match="ViT-B-32"):
        build_model({"type": "clip_zeroshot", "backbone": {**backbone, "offline": True}}, BOTH)


@pytest.mark.parametrize(("arch", "pretrained"), [("ViT-Q-99", None), ("ViT-B-32", "no-such-tag")])
def test_unknown_arch_or_tag_is_a_config_error(arch: str, pretrained: str | None) -> None:
    with pytest.raises(ConfigError, match=arch):
        load_clip(arch, pretrained)


def test_openai_tags_get_quickgelu(monkeypatch: pytest.MonkeyPatch) -> None:
    # open_clip only warns on the GELU/QuickGELU mismatch of OpenAI weights; we must force it.
    seen: dict[str, object] = {}
    create = open_clip.create_model_and_transforms

    def spy(arch: str, **kwargs: object) -> object:
        seen.update(kwargs)
        return create(TINY_ARCH)

    verified: list[str] = []  # the cached files are checked against the fetch record first
    monkeypatch.setattr(open_clip, "create_model_and_transforms", spy)
    monkeypatch.setattr(weights, "verify_open_clip", lambda a, t, *_: verified.append(f"{a}/{t}"))
    load_clip("ViT-L-14", "openai")
    assert seen["force_quick_gelu"] is True and seen["pretrained"] == "openai"
    assert seen["weights_only"] is True
    load_clip("ViT-B-32", "laion2b_s34b_b79k")
    assert seen["force_quick_gelu"] is False
    assert verified == ["ViT-L-14/openai", "ViT-B-32/laion2b_s34b_b79k"]


# --- dimension kind "overall" and the published clamps (docs/methods.md) ----------------------

OVERALL = Dimension("overall", "overall", 0, 5)


def test_residual_maps_overall_to_the_consistency_head() -> None:
    model = residual((OVERALL,))
    assert type(model.heads[0]).__name__ == "AlignmentHead" and model.uses_text
    assert model(*batch(model)).shape == (4, 1)


def test_residual_published_clamps_are_an_option() -> None:
    """methods.md 9.3: both heads clamp to [0, 1], the consistency base too."""
    model = residual(BOTH, clamp=True)
    with torch.no_grad():
        model.heads[0].base.bias.fill_(10.0)
        model.heads[0].residual[-1].bias.fill_(5.0)
        model.heads[1].b.fill_(3.0)
        model.heads[1].residual[-1].bias.fill_(5.0)
    out = model(*batch(model))
    assert torch.equal(out, torch.ones_like(out))
    with torch.no_grad():
        model.heads[1].b.fill_(-3.0)
    # The base clamps to 0 before the residual (<= 0.2) is added: the output stays <= 0.2.
    assert (model(*batch(model))[:, 1] <= 0.2 + 1e-6).all()
    with pytest.raises(ConfigError, match="clamp"):
        residual(clamp="yes")


def test_zeroshot_overall_mixes_the_quality_and_alignment_scores() -> None:
    scores = []
    for dims, weight in (((QUALITY, ALIGN), 0.5), ((OVERALL,), 0.5), ((OVERALL,), 0.25)):
        torch.manual_seed(0)  # same random backbone each time
        model = zeroshot(dims, overall_quality_weight=weight)
        scores.append(model(*batch(model)))
    quality, alignment = scores[0][:, 0], scores[0][:, 1]
    torch.testing.assert_close(scores[1][:, 0], 0.5 * quality + 0.5 * alignment)
    torch.testing.assert_close(scores[2][:, 0], 0.25 * quality + 0.75 * alignment)
    with pytest.raises(ConfigError, match="overall_quality_weight"):
        zeroshot((OVERALL,), overall_quality_weight=1.5)


def test_without_weights_drops_only_the_pretrained_weights() -> None:
    from agiqa.models.clip_residual import ClipResidual

    entry = {
        "type": "clip_residual",
        "backbone": {"arch": "ViT-L-14", "pretrained": "openai", "offline": True, "cache_dir": "c"},
        "freeze": {"mode": "partial", "layers": 18},
    }
    random = ClipResidual.without_weights(entry)
    assert random["backbone"] == {"arch": "ViT-L-14", "pretrained": None, "cache_dir": "c"}
    assert random["freeze"] == entry["freeze"] and entry["backbone"]["pretrained"] == "openai"
