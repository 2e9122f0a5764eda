"""The eval transform run once per image: bit-identical to running the transform every time."""

from __future__ import annotations

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from agiqa.bench import image_transform
from agiqa.models.clip_backbone import train_transform
from agiqa.models.imagenet_probe import Preprocess
from agiqa.train.data import DecodedImages, ImageTextDataset, ManifestImages
from agiqa.train.fixed_transform import FixedTransform

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)

#: (height, width): short side equal to the resize (slices only), larger (PIL resize), odd
#: margins (the crop's rounding), portrait, and smaller than the crop.
SIZES = [(32, 45), (32, 32), (57, 40), (41, 33), (70, 99), (20, 28)]


def rgb(size: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def eval_transforms() -> dict[str, T.Compose]:
    probe = Preprocess(resize=36, crop=32, mean=MEAN, std=STD, interpolation="bilinear")
    return {
        "open_clip eval": open_clip.image_transform(32, is_train=False, mean=MEAN, std=STD),
        "bench clip": image_transform("clip", 32),
        "bench uint8": image_transform("uint8", 32),
        "imagenet probe eval": probe.transform(augment=False),
        "crop only": T.Compose([T.CenterCrop(32), T.ToTensor()]),
        "two-sided resize": T.Compose([T.Resize((30, 34)), T.PILToTensor()]),
    }


@pytest.mark.parametrize("name", list(eval_transforms()))
def test_fixed_transform_equals_the_transform_bit_for_bit(name: str) -> None:
    transform = eval_transforms()[name]
    fixed = FixedTransform.parse(transform)
    assert fixed is not None, name
    for seed, size in enumerate(SIZES):
        array = rgb(size, seed)
        expected = transform(Image.fromarray(array))
        got = fixed.tensor(fixed.pixels(array))
        assert got.dtype == expected.dtype and got.shape == expected.shape, (name, size)
        assert torch.equal(got, expected), (name, size)


def test_random_or_unknown_transforms_keep_the_pil_path() -> None:
    config = {"size": 32, "mean": MEAN, "std": STD}
    probe = Preprocess(resize=36, crop=32, mean=MEAN, std=STD)
    refused = [
        train_transform(config),
        probe.transform(augment=True),
        open_clip.image_transform(32, is_train=True),
        T.Compose([T.Resize(32), T.Lambda(lambda image: image), T.ToTensor()]),
        T.Compose([T.Resize(32), T.CenterCrop(32)]),  # no tensor at the end
        T.Compose([T.ToTensor(), T.Normalize(MEAN, STD), T.Normalize(MEAN, STD)]),
        T.ToTensor(),  # not a Compose
    ]
    for transform in refused:
        assert FixedTransform.parse(transform) is None, transform


def test_dataset_items_are_the_same_with_or_without_the_fixed_path(tmp_path) -> None:
    names = []
    for seed, size in enumerate(SIZES):
        names.append(f"img{seed}.png")
        Image.fromarray(rgb(size, seed)).save(tmp_path / names[-1])
    images = ManifestImages(pd.DataFrame({"image": names}), tmp_path, "m.csv")
    tokens = torch.arange(len(names)).view(-1, 1)
    targets = np.zeros((len(names), 1), np.float32)
    transform = open_clip.image_transform(32, is_train=False, mean=MEAN, std=STD)
    decoded = DecodedImages([rgb(size, seed) for seed, size in enumerate(SIZES)])
    fixed = ImageTextDataset(images, transform, tokens, targets, decoded)
    from_files = ImageTextDataset(images, transform, tokens, targets)
    assert fixed.fixed is not None and from_files.fixed is None
    assert fixed.pixels == [None] * len(names)  # nothing made before it is used
    for index in range(len(names)):
        (got, _, row), (expected, _, _) = fixed[index], from_files[index]
        assert row == index
        assert torch.equal(got["images"], expected["images"])
        assert torch.equal(got["tokens"], expected["tokens"])
    # The items are fresh tensors: a model writing into one changes no later epoch.
    fixed[0][0]["images"].zero_()
    assert torch.equal(fixed[0][0]["images"], from_files[0][0]["images"])
    fixed.prepare()  # what a loader with workers gets: every crop made once, up front
    assert all(pixels is not None for pixels in fixed.pixels)
