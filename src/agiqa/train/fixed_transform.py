"""A deterministic eval transform run once per image and job instead of once per epoch.

A model's eval transform (resize, centre crop, RGB conversion, to tensor, normalisation) gives
an image the same tensor at every epoch, yet a fold job validates every epoch. For images already
decoded in memory (the decoded-image cache), ``FixedTransform`` runs the geometric steps once
per image and keeps the uint8 CHW crop. At each access it only converts and normalises that
crop, with the same float operations as torchvision's ``ToTensor`` and ``Normalize``, so the
tensors are bit-identical to the transform's own (tests/test_fixed_transform.py).

Only transforms built entirely from the steps below qualify. Anything random or unknown (train
augmentations, a custom step) returns None from ``parse``: that dataset keeps the PIL path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

# Steps are recognised by their exact class (module, name): a subclass may add randomness, and
# matching names instead of importing torchvision keeps it out of jobs that never load it.
_TV = "torchvision.transforms.transforms"
COMPOSE, RESIZE, CENTRE_CROP = (_TV, "Compose"), (_TV, "Resize"), (_TV, "CenterCrop")
PIL_TO_TENSOR, NORMALIZE = (_TV, "PILToTensor"), (_TV, "Normalize")
#: ``ToTensor`` and its subclasses that behave as ``ToTensor`` on a PIL image.
TO_TENSOR = {(_TV, "ToTensor"), ("open_clip.transform", "MaybeToTensor")}
#: Steps that only convert a PIL image to RGB: decoded-cache images are RGB already.
RGB_STEPS = {("agiqa.models.clip_backbone", "_ToRGB"), ("open_clip.transform", "MaybeConvertMode")}


def _kind(step: object) -> tuple[str, str]:
    return type(step).__module__, type(step).__qualname__


def _is_prefix_step(step: object) -> bool:
    """Resize, CenterCrop, or a conversion to RGB."""
    kind = _kind(step)
    return kind in (RESIZE, CENTRE_CROP) or (
        kind in RGB_STEPS and getattr(step, "mode", "RGB") == "RGB"
    )


@dataclass(frozen=True)
class FixedTransform:
    """The geometric steps of an eval transform, then its tensor conversion.

    Attributes:
        geometry: ``Resize`` and ``CenterCrop`` steps, in order.
        as_float: True for ``ToTensor`` (float in [0, 1]), False for ``PILToTensor`` (uint8).
        mean: ``Normalize``'s mean as [channels, 1, 1], or None without normalisation.
        std: ``Normalize``'s std, likewise.
    """

    geometry: tuple[Callable[[Image.Image], Image.Image], ...]
    as_float: bool
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None

    @classmethod
    def parse(cls, transform: Callable) -> FixedTransform | None:
        """The transform's fixed form, or None when it is not one of the supported chains.

        Supported: ``Compose`` of Resize/CenterCrop/RGB-conversion steps, then ``ToTensor``
        (optionally followed by one ``Normalize``) or ``PILToTensor``.
        """
        if _kind(transform) != COMPOSE:
            return None
        steps: Sequence[object] = transform.transforms  # type: ignore[attr-defined]
        prefix = [s for s in steps if _is_prefix_step(s)]
        rest = list(steps[len(prefix) :])
        if steps[: len(prefix)] != prefix or not rest:
            return None
        geometry = tuple(s for s in prefix if _kind(s) in (RESIZE, CENTRE_CROP))
        if len(rest) == 1 and _kind(rest[0]) == PIL_TO_TENSOR:
            return cls(geometry, as_float=False)
        if _kind(rest[0]) not in TO_TENSOR:
            return None
        if len(rest) == 1:
            return cls(geometry, as_float=True)
        normalise = rest[1]
        if len(rest) != 2 or _kind(normalise) != NORMALIZE:
            return None
        mean, std = normalise.mean, normalise.std  # type: ignore[attr-defined]
        dtype = torch.get_default_dtype()
        return cls(
            geometry,
            as_float=True,
            mean=torch.as_tensor(mean, dtype=dtype).view(-1, 1, 1),
            std=torch.as_tensor(std, dtype=dtype).view(-1, 1, 1),
        )

    def pixels(self, array: np.ndarray) -> torch.Tensor:
        """An RGB ``[height, width, 3]`` uint8 image -> its uint8 ``[3, h, w]`` crop.

        A resize that keeps the size is skipped (PIL would return a copy) and a centre crop
        inside the image is a slice; every other step runs on a PIL image, as the transform does.
        """
        for step in self.geometry:
            array = _apply(step, array)
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))

    def tensor(self, pixels: torch.Tensor) -> torch.Tensor:
        """A crop from ``pixels`` -> what the whole transform returns for the same image."""
        if not self.as_float:
            return pixels.clone()
        # ToTensor's and Normalize's operations in their order, for bit-identical values.
        scaled = pixels.to(dtype=torch.get_default_dtype()).div(255)
        if self.mean is None or self.std is None:
            return scaled
        return scaled.sub_(self.mean).div_(self.std)


def _apply(step: Callable, array: np.ndarray) -> np.ndarray:
    """One geometric step on an RGB array, by slicing where that gives the same pixels."""
    if _kind(step) == CENTRE_CROP:
        sliced = _centre_crop(array, step)
        if sliced is not None:
            return sliced
    elif _keeps_size(step, array.shape[:2]):
        return array
    return np.asarray(step(Image.fromarray(np.ascontiguousarray(array))))


def _keeps_size(step: Callable, size: tuple[int, int]) -> bool:
    """True when the Resize ``step`` maps an image of (height, width) ``size`` to that size."""
    target = [step.size] if isinstance(step.size, int) else list(step.size)
    if len(target) == 1:
        return min(size) == target[0] and step.max_size is None
    return list(size) == target


def _centre_crop(array: np.ndarray, step: Any) -> np.ndarray | None:
    """torchvision's centre crop as a slice, or None when the crop is larger (it pads then)."""
    height, width = array.shape[:2]
    crop_height, crop_width = step.size
    if crop_height > height or crop_width > width:
        return None
    top = round((height - crop_height) / 2.0)  # torchvision's rounding (half to even)
    left = round((width - crop_width) / 2.0)
    return array[top : top + crop_height, left : left + crop_width]
