"""The ImageNet probe: random-init backbones on the CPU, real MobileNetV2 weights when seeded.

No network: sockets are blocked (``no_network`` from conftest.py).
"""

from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

import agiqa.models.imagenet_probe as probe_module
from agiqa.data.manifest import Dimension
from agiqa.errors import ConfigError
from agiqa.models import MODELS, build_model
from agiqa.models.imagenet_probe import ImageNetProbe
from agiqa.models.ridge import RidgeHead, RidgeSettings, group_folds, ridge_solutions, select_alpha
from agiqa.train.fold import run_fold
from agiqa.weights import WeightsUnavailableError
from shared_data import AGIQA_3K, need
from test_train import job, prepare
from test_weights import hub, packaged, seeded  # noqa: F401

pytestmark = pytest.mark.usefixtures("no_network")

QUALITY = Dimension("quality", "quality", 0, 5)
ALIGN = Dimension("align", "alignment", 0, 5)
BOTH = (QUALITY, ALIGN)
RANDOM = {"weights": None}  # torchvision mobilenet_v2, random init
BOW = {"type": "bow", "vocab_size": 512, "dim": 16, "max_words": 8}


def probe(dims: tuple[Dimension, ...] = BOTH, **kwargs: object) -> ImageNetProbe:
    model = build_model({"type": "imagenet_probe", "backbone": RANDOM, **kwargs}, dims)
    assert isinstance(model, ImageNetProbe)
    return model


def images(n: int = 3, size: int = 64) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def trainable(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_registered_and_built_from_config() -> None:
    model = probe()
    assert MODELS.get("imagenet_probe") is ImageNetProbe
    assert model.backbone_name == "torchvision mobilenet_v2 (random init)"
    assert model.feature_dim == 1280
    assert (model.preprocess.resize, model.preprocess.crop) == (256, 224)
    assert model.preprocess.mean == (0.485, 0.456, 0.406)
    picture = Image.new("RGB", (300, 200), (90, 120, 30))
    assert model.image_transform(train=False)(picture).shape == (3, 224, 224)


@pytest.mark.parametrize("dims", [BOTH, (QUALITY,)])
@pytest.mark.parametrize("prompt_encoder", [None, BOW])
def test_predicts_every_dimension_in_the_unit_interval(
    dims: tuple[Dimension, ...], prompt_encoder: dict | None
) -> None:
    model = probe(dims, prompt_encoder=prompt_encoder).eval()
    tokens = model.tokenize(["a red cube", "two blue spheres", ""])
    output = model(images(), tokens)
    assert output.shape == (3, len(dims))
    assert ((output >= 0) & (output <= 1)).all()


def test_frozen_trains_the_head_and_prompt_encoder_only() -> None:
    assert {name.split(".")[0] for name in trainable(probe())} == {"image_norm", "head"}
    with_prompt = trainable(probe(prompt_encoder=BOW))
    assert {name.split(".")[0] for name in with_prompt} == {"image_norm", "head", "prompt_encoder"}
    assert "prompt_encoder.embedding.weight" in with_prompt


def test_fine_tuning_trains_the_backbone_too() -> None:
    model = probe(freeze=False)
    assert trainable(model) == {name for name, _ in model.named_parameters()}
    assert model.feature_key() is None  # nothing to cache


def test_a_frozen_backbone_stays_in_eval_mode() -> None:
    model = probe().train()
    assert not model.backbone.training and model.head.training
    stats = {k: v.clone() for k, v in model.backbone.state_dict().items() if "running" in k}
    model(images(), model.tokenize(["a"] * 3))
    after = model.backbone.state_dict()
    assert all(torch.equal(value, after[name]) for name, value in stats.items())
    assert probe(freeze=False).train().backbone.training


def test_augmentation_only_when_fine_tuning() -> None:
    frozen = probe()
    assert repr(frozen.image_transform(train=True)) == repr(frozen.image_transform(train=False))
    tuned = repr(probe(freeze=False).image_transform(train=True))
    assert "RandomResizedCrop" in tuned and "RandomHorizontalFlip" in tuned


def test_feature_key_follows_what_changes_the_features() -> None:
    torch.manual_seed(0)
    model = probe()
    key = model.feature_key()
    assert key is not None and key.startswith("imagenet_probe-torchvision-mobilenet_v2-")
    torch.manual_seed(0)
    assert probe(hidden=8, dropout=0.0).feature_key() == key  # the head is not in the key
    torch.manual_seed(1)
    assert probe().feature_key() != key  # other weights
    torch.manual_seed(0)
    other = build_model(
        {"type": "imagenet_probe", "backbone": {"name": "mobilenet_v3_small", "weights": None}},
        BOTH,
    )
    assert other.feature_key() not in (None, key)
    model.preprocess = dataclasses.replace(model.preprocess, resize=288)
    assert model.feature_key() != key  # another transform
    torch.manual_seed(0)
    bow = probe(prompt_encoder=BOW).feature_key()
    # Only image features are cached (token ids travel beside them): the prompt-aware probe
    # shares the image-only probe's cache.
    assert bow == key


def test_without_a_prompt_encoder_no_prompt_is_read() -> None:
    model = probe().eval()
    assert not model.uses_text
    tokens = model.tokenize(["a cat", "a dog", "a tree"])
    assert tokens.shape == (3, 1) and not tokens.any()
    features = model.encode(images(), tokens)
    assert set(features) == {"image"} and features["image"].shape == (3, 1280)


def test_the_prompt_aware_variant_reads_the_prompt() -> None:
    model = probe(prompt_encoder=BOW).eval()
    batch = images(2)
    cats = model(batch, model.tokenize(["a cat", "a cat"]))
    dogs = model(batch, model.tokenize(["a dog on a sofa", "a dog on a sofa"]))
    assert not torch.allclose(cats, dogs)


def test_the_cached_path_predicts_like_forward() -> None:
    model = probe(prompt_encoder=BOW).eval()
    batch, tokens = images(), model.tokenize(["a cat", "Two DOGS!", ""])
    features = model.encode(batch, tokens)
    assert set(features) == {"image"}  # what the feature cache stores
    # The trainer passes the (never cached) token ids beside the cached features.
    cached = {"image": features["image"].clone(), "tokens": tokens}
    torch.testing.assert_close(model.head_forward(cached), model(batch, tokens))


def test_hashed_words_depend_on_each_prompt_alone() -> None:
    model = probe(prompt_encoder=BOW)
    alone = model.tokenize(["A red, red CAT"])
    among = model.tokenize(["a dog", "a red red cat", "the cat sat on the big red mat again"])
    assert torch.equal(alone[0], among[1])  # no vocabulary: nothing leaks from other prompts
    assert int(alone[0, 3]) == zlib.crc32(b"cat") % 512 + 1  # stable across processes
    assert not alone[0, 4:].any()  # padding
    assert among.shape == (3, 8) and among[2].all()  # truncated at max_words


def test_timm_backbone_with_its_own_preprocessing() -> None:
    model = build_model(
        {
            "type": "imagenet_probe",
            "backbone": {"source": "timm", "name": "resnet18", "pretrained": False},
        },
        (QUALITY,),
    )
    assert model.backbone_name == "timm resnet18 (random init)"
    assert model.feature_dim == 512
    assert (model.preprocess.crop, model.preprocess.resize) == (224, 235)  # crop_pct 0.95
    assert model.preprocess.interpolation == "bicubic"
    assert model.eval()(images(2), model.tokenize(["a", "b"])).shape == (2, 1)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"backbone": {"weights": None, "arch": "x"}}, "unknown keys"),
        ({"backbone": {"weights": None, "pretrained": True}}, "unknown keys"),
        ({"backbone": {"source": "hub"}}, "backbone.source"),
        ({"backbone": {"name": "no_such_net", "weights": None}}, "unknown torchvision model"),
        ({"backbone": {"weights": "IMAGENET9K"}}, "IMAGENET1K_V1"),
        ({"backbone": {"source": "timm", "name": "no_such_net"}}, "unknown timm model"),
        ({"backbone": {"source": "timm", "pretrained": False}}, "name is required"),
        ({"backbone": RANDOM, "freeze": "yes"}, "freeze"),
        ({"backbone": RANDOM, "hidden": -1}, "hidden"),
        ({"backbone": RANDOM, "dropout": 1.0}, "dropout"),
        ({"backbone": RANDOM, "prompt_encoder": {"type": "clip"}}, "'bow'"),
        ({"backbone": RANDOM, "prompt_encoder": {"type": "bow", "dim": 0}}, "dim"),
        ({"backbone": RANDOM, "prompt_encoder": {"type": "bow", "size": 3}}, "unknown keys"),
    ],
)
def test_bad_config_is_refused(entry: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_model({"type": "imagenet_probe", **entry}, BOTH)


def test_uncached_imagenet_weights_fail_fast_offline(
    hub: Path,  # noqa: F811
    no_network: list[object],
) -> None:
    with pytest.raises(WeightsUnavailableError, match="agiqa weights seed"):
        build_model({"type": "imagenet_probe"}, BOTH)  # default: mobilenet_v2 IMAGENET1K_V1
    assert no_network == []


def test_a_fold_job_trains_on_cached_features(tmp_path: Path) -> None:
    paths = prepare(tmp_path, n_prompts=12, folds=3)
    config = {
        "type": "imagenet_probe",
        # A random MobileNetV2 in eval mode maps every image to ~0; a random ResNet does not.
        "backbone": {"name": "resnet18", "weights": None},
        "hidden": 16,
        "prompt_encoder": BOW,
        "train": {"epochs": 2, "batch_size": 8, "lr": 1.0e-3},
    }
    metrics = run_fold(job(tmp_path, paths, config))
    assert metrics["epochs_run"] == 2 and set(metrics["test"]) == {"quality", "align"}
    (folder,) = (tmp_path / "features").glob("imagenet_probe-*")
    assert len(list(folder.glob("image/*/*.npy"))) == len(pd.read_csv(paths[1]))
    assert not list(folder.glob("text/*/*.npy"))  # token ids are never cached


def test_real_weights_separate_real_images(seeded: Path) -> None:  # noqa: F811
    need(AGIQA_3K.is_dir(), f"AGIQA-3K is not at {AGIQA_3K}")
    model = build_model({"type": "imagenet_probe"}, BOTH).eval()
    assert model.backbone_name == "torchvision mobilenet_v2 (IMAGENET1K_V1)"
    transform = model.image_transform(train=False)
    # Two renderings of "a penguin slipping on a banana ..." and one pizza.
    names = ["sd1.5_normal_233.jpg", "sd1.5_lowcorr_233.jpg", "sd1.5_normal_066.jpg"]
    batch = []
    for name in names:
        with Image.open(AGIQA_3K / name) as picture:
            batch.append(transform(picture.convert("RGB")))
    with torch.no_grad():
        features = model.encode(torch.stack(batch), model.tokenize(names))["image"]
    cosine = nn.functional.cosine_similarity
    penguins = cosine(features[0], features[1], dim=0)
    penguin_pizza = cosine(features[0], features[2], dim=0)
    assert penguins > penguin_pizza + 0.1


@pytest.mark.parametrize(("rows", "columns"), [(40, 6), (8, 20)])  # primal and dual forms
def test_ridge_closed_form_equals_least_squares_on_the_augmented_system(
    rows: int, columns: int
) -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(rows, columns)) + 3.0  # not centred: intercept unpenalised
    noise = rng.normal(scale=0.3, size=(rows, 2))
    targets = features @ rng.normal(size=(columns, 2)) + noise + 1.0
    alphas = (0.01, 1.0, 30.0)
    weights, biases = ridge_solutions(features, targets, alphas)
    centred = features - features.mean(axis=0)
    centred_y = targets - targets.mean(axis=0)
    for a, alpha in enumerate(alphas):
        # min |Yc - Xc W|^2 + alpha |W|^2  ==  lstsq of [Xc; sqrt(alpha) I] W = [Yc; 0]
        augmented = np.vstack([centred, np.sqrt(alpha) * np.eye(columns)])
        goal = np.vstack([centred_y, np.zeros((columns, 2))])
        expected = np.linalg.lstsq(augmented, goal, rcond=None)[0]
        np.testing.assert_allclose(weights[a], expected, atol=1e-10)
        intercept = targets.mean(axis=0) - features.mean(axis=0) @ expected
        np.testing.assert_allclose(biases[a], intercept, atol=1e-10)
    if rows > columns:  # a tiny penalty gives ordinary least squares with an intercept
        design = np.hstack([features, np.ones((rows, 1))])
        ols = np.linalg.lstsq(design, targets, rcond=None)[0]
        tiny_weights, tiny_biases = ridge_solutions(features, targets, (1e-9,))
        np.testing.assert_allclose(tiny_weights[0], ols[:columns], atol=1e-6)
        np.testing.assert_allclose(tiny_biases[0], ols[columns], atol=1e-6)


def test_ridge_head_standardises_then_applies_the_closed_form() -> None:
    rng = np.random.default_rng(1)
    features = rng.normal(size=(30, 4)) * [1.0, 10.0, 0.1, 1.0] + [0.0, 5.0, -2.0, 0.0]
    features[:, 3] = 7.0  # a constant feature is harmless
    targets = rng.uniform(size=(30, 2))
    head = RidgeHead(4, 2)
    head.fit(features, targets, alphas=(2.0, 50.0))  # a penalty per output column
    scale = features.std(axis=0)
    scale[3] = 1.0
    standard = (features - features.mean(axis=0)) / scale
    predicted = head(torch.from_numpy(features)).double().numpy()
    for column, alpha in enumerate((2.0, 50.0)):
        weights, biases = ridge_solutions(standard, targets[:, column : column + 1], (alpha,))
        expected = standard @ weights[0] + biases[0]
        np.testing.assert_allclose(predicted[:, column : column + 1], expected, atol=1e-5)
    assert head.alpha.tolist() == [2.0, 50.0]


def test_group_folds_keep_each_prompt_in_one_fold() -> None:
    groups = np.repeat([f"p{i}" for i in range(10)], 3)
    fold = group_folds(groups, 4, seed=0)
    for group in np.unique(groups):
        assert len(set(fold[groups == group])) == 1
    assert set(fold) == {0, 1, 2, 3}
    np.testing.assert_array_equal(fold, group_folds(groups, 4, seed=0))
    with pytest.raises(ConfigError, match="prompt groups"):
        group_folds(groups[:6], 4, seed=0)


def test_cross_validation_picks_a_small_penalty_for_a_clean_signal() -> None:
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(40).astype(str), 5)
    features = rng.normal(size=(200, 8))
    clean = features[:, 0] + 0.05 * rng.normal(size=200)
    # Column 0 is a clean linear signal, column 1 noise: each gets its own penalty.
    goal = np.stack([clean, rng.normal(size=200)], axis=1)
    alphas, scores = select_alpha(features, goal, groups, RidgeSettings())
    assert scores.shape == (len(RidgeSettings().alphas), 2)
    assert alphas[0] <= 10.0 and scores[:, 0].max() > 0.95
    assert alphas[1] > alphas[0]  # nothing to learn: more shrinkage is as good or better


RIDGE = {
    "type": "imagenet_probe",
    "backbone": {"name": "resnet18", "weights": None},
    "head": "ridge",
    "ridge": {"cv_folds": 3},
    "train": {"epochs": 5, "batch_size": 8},
}


def ridge_run(tmp_path: Path, scramble_test: bool) -> tuple[dict, dict[str, torch.Tensor]]:
    paths = prepare(tmp_path, n_prompts=24, folds=3)
    if scramble_test:  # other test labels: a fit that saw them would change
        splits = pd.read_csv(paths[2])
        manifest = pd.read_csv(paths[1])
        test = manifest["image"].isin(splits.loc[splits["split0"] == "test", "image"])
        rng = np.random.default_rng(9)
        for column in ("mos_quality", "mos_align"):
            manifest.loc[test, column] = rng.permutation(manifest.loc[test, column].to_numpy())
        manifest.to_csv(paths[1], index=False)
    seen: dict[str, object] = {}
    real = probe_module.select_alpha

    def recording(features, targets, groups, settings):
        seen["rows"], seen["groups"] = len(features), set(groups)
        return real(features, targets, groups, settings)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(probe_module, "select_alpha", recording)
        metrics = run_fold(job(tmp_path, paths, RIDGE))
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["trained_state"]
    splits = pd.read_csv(paths[2])
    train = splits[splits["split0"] == "train"]
    assert seen["rows"] == len(train)
    assert seen["groups"] == set(train["prompt_group"].astype(str))
    assert not seen["groups"] & set(splits.loc[splits["split0"] != "train", "prompt_group"])
    return metrics, {k: v for k, v in state.items() if k.startswith("head.")}


def test_ridge_fold_job_fits_on_the_training_part_alone(tmp_path: Path) -> None:
    metrics, head = ridge_run(tmp_path / "a", scramble_test=False)
    assert metrics["epochs_run"] == 0 and metrics["best_epoch"] is None
    assert metrics["trainable_parameters"] == 0
    assert set(head) == {"head.mean", "head.scale", "head.weight", "head.bias", "head.alpha"}
    assert head["head.alpha"].shape == (2,)  # a penalty per dimension
    assert head["head.weight"].abs().sum() > 0
    _, scrambled = ridge_run(tmp_path / "b", scramble_test=True)
    for name, value in head.items():  # the test labels changed, the fit did not
        torch.testing.assert_close(scrambled[name], value)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"head": "lasso"}, "head must be one of"),
        ({"head": "ridge", "freeze": False}, "freeze: true"),
        ({"head": "ridge", "prompt_encoder": BOW}, "bag of words"),
        ({"ridge": {"cv_folds": 3}}, "need head: ridge"),
        ({"head": "ridge", "ridge": {"cv_folds": 1}}, "cv_folds"),
        ({"head": "ridge", "ridge": {"alphas": [0.0]}}, "positive"),
        ({"head": "ridge", "ridge": {"folds": 3}}, "unknown keys"),
    ],
)
def test_bad_ridge_settings_are_refused(entry: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_model({"type": "imagenet_probe", "backbone": RANDOM, **entry}, BOTH)
