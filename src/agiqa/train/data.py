"""Images, prompts and normalised targets of one split part, ready for a DataLoader.

Batches are ``(inputs, targets, index)`` where ``inputs`` is either ``{"images", "tokens"}``
(the model runs its encoders) or ``{"image", "text"}`` (cached frozen features).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from agiqa.data.decode import ImageGeometryError, UnsupportedImage, check_geometry, to_rgb
from agiqa.data.manifest import Dimension, resolve_image
from agiqa.errors import DataError
from agiqa.train.fixed_transform import FixedTransform

Batch = tuple[dict[str, torch.Tensor], torch.Tensor, int]


def normalised_targets(frame: pd.DataFrame, dimensions: Sequence[Dimension]) -> np.ndarray:
    columns = [
        dim.normalise(frame[dim.mos_column].to_numpy(dtype=np.float64)) for dim in dimensions
    ]
    return np.stack(columns, axis=1).astype(np.float32)


#: Identity of ``load_shrunk``'s output for the decoded-image cache: change it whenever the
#: decoding or resizing below changes, so that no cached image from the old rules is reused.
SHRINK_DECODER = "pil-draft-bicubic-v1"


@contextmanager
def _decode_errors(path: Path, manifest: str, row: int | None) -> Iterator[None]:
    """Turn any failure to read or convert ``path`` into a DataError naming it and its row."""
    try:
        yield
    except FileNotFoundError:
        raise DataError(f"image '{path}' does not exist", file=manifest, row=row) from None
    except ImageGeometryError as error:
        raise DataError(f"image '{path}' is refused: {error}", file=manifest, row=row) from None
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


def load_rgb(path: Path, *, manifest: str, row: int | None) -> Image.Image:
    """Decode an image fully to 8-bit RGB or raise a DataError naming it and its manifest row.

    Every PIL mode is converted by the rules of :mod:`agiqa.data.decode` (16-bit scaled, alpha
    composited on white, ...); a mode without a faithful conversion is refused, never guessed.
    No other image is ever substituted.
    """
    with _decode_errors(path, manifest, row), Image.open(path) as image:
        check_geometry(image.size)  # before decoding: a huge image is refused, not decoded
        image.load()
        return to_rgb(image)


def shrunk_size(size: tuple[int, int], short_side: int | None) -> tuple[int, int]:
    """The (width, height) that ``shrink`` gives an image of ``size``."""
    if short_side is None or min(size) <= short_side:
        return size
    scale = short_side / min(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def shrink(image: Image.Image, short_side: int | None) -> Image.Image:
    """Downscale (never upscale) so the short side is at most ``short_side``."""
    size = shrunk_size(image.size, short_side)
    return image if size == image.size else image.resize(size, Image.Resampling.BICUBIC)


def load_shrunk(
    path: Path, short_side: int | None, *, manifest: str, row: int | None
) -> Image.Image:
    """``shrink(load_rgb(path), short_side)``, with JPEG's own downscaling doing most of the work.

    A JPEG is decoded in the DCT domain at 1/2, 1/4 or 1/8 scale (PIL ``draft``: the largest
    reduction that stays at least the target size), then resized bicubically to exactly the size
    ``shrink`` would give. That skips most of the inverse DCT and of the resize, and differs from
    the full decode by a few grey levels (the DCT scaling filters differently from bicubic; see
    tests/test_image_cache.py). Other formats, and images that need no shrinking, are decoded
    fully and equal ``shrink(load_rgb(...))`` exactly. Errors are load_rgb's.
    """
    with _decode_errors(path, manifest, row), Image.open(path) as image:
        check_geometry(image.size)  # before decoding: a huge image is refused, not decoded
        target = shrunk_size(image.size, short_side)
        if image.format == "JPEG" and target != image.size:
            image.draft(image.mode, target)  # keeps the mode: to_rgb's rules still apply
        image.load()
        rgb = to_rgb(image)
    return rgb if rgb.size == target else rgb.resize(target, Image.Resampling.BICUBIC)


class DecodedImages:
    """Images decoded once, held as RGB ``[height, width, 3]`` uint8 arrays.

    Items are PIL images (made on access, about 0.1 ms) for the models' PIL transforms;
    ``array`` gives the stored array to paths that work on pixels directly.
    """

    def __init__(self, arrays: Sequence[np.ndarray]) -> None:
        self.arrays = list(arrays)

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, index: int) -> Image.Image:
        return Image.fromarray(self.arrays[index])

    def array(self, index: int) -> np.ndarray:
        return self.arrays[index]


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

    def load_shrunk(self, index: int, short_side: int | None) -> Image.Image:
        return load_shrunk(
            self.paths[index], short_side, manifest=self.manifest_source, row=self.rows[index]
        )

    def preload(
        self, short_side: int | None, threads: int, cache_dir: str | Path | None = None
    ) -> DecodedImages:
        """Every image decoded once and shrunk to ``short_side`` (``load_shrunk``), in row order.

        With ``cache_dir`` (and a ``short_side``), images come from the decoded-image cache
        shared by every job (agiqa.train.image_cache), and the ones it lacks are decoded and
        added to it. Threads overlap the I/O, hashing and decoding (PIL releases the GIL).
        """
        if cache_dir is not None and short_side is not None:
            from agiqa.train.image_cache import ImageCache

            cache = ImageCache(cache_dir, short_side, SHRINK_DECODER)
            decode = partial(self.load_shrunk, short_side=short_side)
            return DecodedImages(cache.images(self.paths, decode, threads))
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:

            def decode_array(index: int) -> np.ndarray:
                return np.asarray(self.load_shrunk(index, short_side))

            return DecodedImages(list(pool.map(decode_array, range(len(self.paths)))))


class ImageTextDataset(Dataset):
    """Decoded (or decoded-once, cached) images, their prompt tokens and targets.

    With ``decoded`` images and a deterministic transform (agiqa.train.fixed_transform), the
    transform's resize and crop run once per image (on first access, or all at once by
    ``prepare``), not at every epoch; the items are the same tensors either way.
    """

    def __init__(
        self,
        images: ManifestImages,
        transform: Callable[[Image.Image], torch.Tensor],
        tokens: torch.Tensor,
        targets: np.ndarray,
        decoded: DecodedImages | None = None,
    ) -> None:
        self.images = images
        self.transform = transform
        self.tokens = tokens
        self.targets = torch.from_numpy(targets)
        self.decoded = decoded
        self.fixed = FixedTransform.parse(transform) if decoded is not None else None
        #: Each image's fixed crop, made on first access (or by ``prepare``).
        self.pixels: list[torch.Tensor | None] = [None] * (0 if decoded is None else len(decoded))

    def __len__(self) -> int:
        return len(self.targets)

    def prepare(self) -> None:
        """Make every image's fixed crop now: loader workers then inherit them all.

        Without it, worker processes would make the crops in their own copies at every epoch.
        """
        if self.fixed is not None:
            for index in range(len(self.pixels)):
                self.fixed_pixels(index)

    def fixed_pixels(self, index: int) -> torch.Tensor:
        pixels = self.pixels[index]
        if pixels is None:
            assert self.fixed is not None and self.decoded is not None
            pixels = self.fixed.pixels(self.decoded.array(index))
            self.pixels[index] = pixels
        return pixels

    def image(self, index: int) -> torch.Tensor:
        if self.fixed is not None:
            return self.fixed.tensor(self.fixed_pixels(index))
        image = self.decoded[index] if self.decoded is not None else self.images.load(index)
        return self.transform(image)

    def __getitem__(self, index: int) -> Batch:
        inputs = {"images": self.image(index), "tokens": self.tokens[index]}
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
