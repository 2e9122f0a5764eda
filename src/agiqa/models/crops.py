"""Crop sampling shared by the models that read images at native resolution (SCVA, DCMPLN).

- ``RepeatedSamples``: each row of a part ``repeats`` times, so every random crop is its own
  training sample with the image's target (SCVA-AGIQA's per-crop training: the batch counts
  crops and an epoch has ``repeats`` times as many steps);
- ``CropGridDataset``: one sample per crop of a fixed grid (``size`` crops at ``stride``), the
  test-time averaging of CLIP-AGIQA, whose crop count varies with the image size;
- ``mean_by_row``: the per-row average of the samples' outputs (``reduce_predictions``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from agiqa.train.data import DecodedImages, ManifestImages


def upscale_to(image: Image.Image, size: int) -> Image.Image:
    """Scale up (bicubic, aspect kept) so the short side is at least ``size``; else unchanged."""
    short = min(image.size)
    if short >= size:
        return image
    scale = size / short
    target = (max(size, round(image.width * scale)), max(size, round(image.height * scale)))
    return image.resize(target, Image.Resampling.BICUBIC)


def grid_starts(length: int, size: int, stride: int) -> list[int]:
    """Crop starts along one side, as ``torch.Tensor.unfold`` takes them (the remainder is cut)."""
    return list(range(0, max(length - size, 0) + 1, stride))


def mean_by_row(outputs: np.ndarray, rows: np.ndarray, n_rows: int) -> np.ndarray:
    """Average the outputs ``[samples, dims]`` of the samples of each row; NaN for rows without."""
    totals = np.zeros((n_rows, outputs.shape[1]), dtype=np.float64)
    counts = np.zeros(n_rows, dtype=np.int64)
    np.add.at(totals, rows, outputs)
    np.add.at(counts, rows, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = totals / counts[:, None]
    return means.astype(np.float32)


class RepeatedSamples(Dataset):
    """Sample ``j`` is sample ``j // repeats`` of ``base`` (a random transform draws anew)."""

    def __init__(self, base: Dataset, repeats: int) -> None:
        self.base = base
        self.repeats = int(repeats)

    def __len__(self) -> int:
        return len(self.base) * self.repeats  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple:
        return self.base[index // self.repeats]


class NativeCrop:
    """PIL image -> one ``size`` crop at native resolution, normalised (picklable for workers).

    With ``train`` a call draws a random crop and a random horizontal flip; otherwise it takes
    the crop at the given ``(top, left)``, or the centre crop without one. Images smaller than
    the crop are first scaled up to it.
    """

    def __init__(
        self, size: int, mean: Sequence[float], std: Sequence[float], train: bool = True
    ) -> None:
        self.size = int(size)
        self.mean = list(mean)
        self.std = list(std)
        self.train = train

    def __repr__(self) -> str:  # deterministic: transforms' reprs key caches
        return f"NativeCrop(size={self.size}, mean={self.mean}, std={self.std}, train={self.train})"

    def __call__(self, image: Image.Image, corner: tuple[int, int] | None = None) -> torch.Tensor:
        image = upscale_to(image.convert("RGB"), self.size)
        flip = False
        if corner is None and self.train:
            corner = (
                int(torch.randint(0, image.height - self.size + 1, ()).item()),
                int(torch.randint(0, image.width - self.size + 1, ()).item()),
            )
            flip = torch.rand(()).item() < 0.5
        elif corner is None:
            corner = ((image.height - self.size) // 2, (image.width - self.size) // 2)
        top, left = corner
        from torchvision.transforms import functional as TF  # imported once, on first use

        crop = TF.to_tensor(image.crop((left, top, left + self.size, top + self.size)))
        return TF.normalize(TF.hflip(crop) if flip else crop, self.mean, self.std)

    def corners(self, width: int, height: int, stride: int) -> list[tuple[int, int]]:
        """The ``(top, left)`` grid over an image of this size (after any upscaling)."""
        short = min(width, height)
        if short < self.size:
            scale = self.size / short
            width = max(self.size, round(width * scale))
            height = max(self.size, round(height * scale))
        tops = grid_starts(height, self.size, stride)
        lefts = grid_starts(width, self.size, stride)
        return [(top, left) for top in tops for left in lefts]


class CropGridDataset(Dataset):
    """One sample per grid crop of every image: ``({"images", "tokens"}, target, row)``.

    Consecutive samples share an image (evaluation does not shuffle), so an image read from disk
    is kept until the next one is needed.
    """

    def __init__(
        self,
        images: ManifestImages,
        crop: NativeCrop,
        stride: int,
        tokens: torch.Tensor,
        targets: np.ndarray,
        decoded: DecodedImages | None = None,
    ) -> None:
        self.images = images
        self.crop = crop
        self.tokens = tokens
        self.targets = torch.from_numpy(targets)
        self.decoded = decoded
        self._last: tuple[int, Image.Image] | None = None
        self.samples = [
            (row, corner)
            for row in range(len(self.targets))
            for corner in crop.corners(*self._size(row), stride)
        ]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, int]:
        row, corner = self.samples[index]
        inputs = {"images": self.crop(self._image(row), corner), "tokens": self.tokens[row]}
        return inputs, self.targets[row], row

    def _image(self, row: int) -> Image.Image:
        # Samples of a row are consecutive when evaluating: make its PIL image once.
        if self._last is None or self._last[0] != row:
            image = self.decoded[row] if self.decoded is not None else self.images.load(row)
            self._last = (row, image)
        return self._last[1]

    def _size(self, row: int) -> tuple[int, int]:
        """(width, height) from the decoded image, or from the file header (no decoding)."""
        if self.decoded is not None:
            height, width = self.decoded.array(row).shape[:2]
            return width, height
        try:
            with Image.open(self.images.paths[row]) as image:
                return image.size
        except OSError:
            return self.images.load(row).size  # raises the DataError naming file and row
