"""Images, prompts and normalised targets of one split part, ready for a DataLoader.

Batches are ``(inputs, targets, index)`` where ``inputs`` is either ``{"images", "tokens"}``
(the model runs its encoders) or ``{"image", "text"}`` (cached frozen features).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from agiqa.data.decode import UnsupportedImage, to_rgb
from agiqa.data.manifest import Dimension, resolve_image
from agiqa.errors import DataError

Batch = tuple[dict[str, torch.Tensor], torch.Tensor, int]


def normalised_targets(frame: pd.DataFrame, dimensions: Sequence[Dimension]) -> np.ndarray:
    columns = [
        dim.normalise(frame[dim.mos_column].to_numpy(dtype=np.float64)) for dim in dimensions
    ]
    return np.stack(columns, axis=1).astype(np.float32)


def load_rgb(path: Path, *, manifest: str, row: int | None) -> Image.Image:
    """Decode an image fully to 8-bit RGB or raise a DataError naming it and its manifest row.

    Every PIL mode is converted by the rules of :mod:`agiqa.data.decode` (16-bit scaled, alpha
    composited on white, ...); a mode without a faithful conversion is refused, never guessed.
    No other image is ever substituted.
    """
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except FileNotFoundError:
        raise DataError(f"image '{path}' does not exist", file=manifest, row=row) from None
    except UnsupportedImage as error:
        raise DataError(
            f"image '{path}' cannot be converted to RGB ({error})", file=manifest, row=row
        ) from None
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    ) as error:
        raise DataError(
            f"image '{path}' cannot be decoded ({error})", file=manifest, row=row
        ) from None


def shrink(image: Image.Image, short_side: int | None) -> Image.Image:
    """Downscale (never upscale) so the short side is at most ``short_side``."""
    if short_side is None or min(image.size) <= short_side:
        return image
    scale = short_side / min(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)


class ManifestImages:
    """Paths of a manifest part's images, with the manifest rows that errors should name."""

    def __init__(
        self,
        frame: pd.DataFrame,
        root: str | Path,
        manifest_source: str,
        allowed_link_roots: Sequence[str | Path] = (),
    ) -> None:
        self.manifest_source = manifest_source
        rows = frame["manifest_row"] if "manifest_row" in frame else [None] * len(frame)
        self.rows = [None if r is None else int(r) for r in rows]
        self.paths = [
            resolve_image(
                root, image, file=manifest_source, row=row, allowed_link_roots=allowed_link_roots
            )
            for image, row in zip(frame["image"], self.rows, strict=True)
        ]

    def load(self, index: int) -> Image.Image:
        return load_rgb(self.paths[index], manifest=self.manifest_source, row=self.rows[index])

    def preload(self, short_side: int | None, threads: int) -> list[Image.Image]:
        """Decode every image once (threads overlap the I/O and decoding)."""
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            return list(
                pool.map(lambda i: shrink(self.load(i), short_side), range(len(self.paths)))
            )


class ImageTextDataset(Dataset):
    """Decoded (or decoded-once, cached) images, their prompt tokens and targets."""

    def __init__(
        self,
        images: ManifestImages,
        transform: Callable[[Image.Image], torch.Tensor],
        tokens: torch.Tensor,
        targets: np.ndarray,
        decoded: list[Image.Image] | None = None,
    ) -> None:
        self.images = images
        self.transform = transform
        self.tokens = tokens
        self.targets = torch.from_numpy(targets)
        self.decoded = decoded

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> Batch:
        image = self.decoded[index] if self.decoded is not None else self.images.load(index)
        inputs = {"images": self.transform(image), "tokens": self.tokens[index]}
        return inputs, self.targets[index], index


class FeatureDataset(Dataset):
    """Cached frozen features of a part and their targets."""

    def __init__(self, features: dict[str, torch.Tensor], targets: np.ndarray) -> None:
        self.features = features
        self.targets = torch.from_numpy(targets)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> Batch:
        return {k: v[index] for k, v in self.features.items()}, self.targets[index], index
