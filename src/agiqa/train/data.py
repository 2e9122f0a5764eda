"""Images, prompts and normalised targets of one split part, ready for a DataLoader."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from agiqa.data.manifest import Dimension, resolve_image
from agiqa.errors import DataError


def normalised_targets(frame: pd.DataFrame, dimensions: Sequence[Dimension]) -> np.ndarray:
    columns = [
        dim.normalise(frame[dim.mos_column].to_numpy(dtype=np.float64)) for dim in dimensions
    ]
    return np.stack(columns, axis=1).astype(np.float32)


def load_rgb(path: Path, *, manifest: str, row: int) -> Image.Image:
    """Decode an image fully or raise a DataError naming it: never substitute another image."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"image '{path}' does not exist", file=manifest, row=row) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise DataError(
            f"image '{path}' cannot be decoded ({error})", file=manifest, row=row
        ) from None


class ImageTextDataset(Dataset):
    """Rows of a manifest part: (image tensor, token ids, normalised targets, row index)."""

    def __init__(
        self,
        frame: pd.DataFrame,
        root: str | Path,
        transform: Callable[[Image.Image], torch.Tensor],
        tokens: torch.Tensor,
        targets: np.ndarray,
        manifest_source: str,
    ) -> None:
        self.frame = frame
        self.root = Path(root)
        self.transform = transform
        self.tokens = tokens
        self.targets = torch.from_numpy(targets)
        self.manifest_source = manifest_source
        # Row numbers of the manifest CSV (header is row 1) so errors point at the right line.
        self.rows = frame["manifest_row"].to_numpy() if "manifest_row" in frame else None

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        row = None if self.rows is None else int(self.rows[index])
        image_name = self.frame["image"].iloc[index]
        path = resolve_image(self.root, image_name, file=self.manifest_source, row=row)
        image = load_rgb(path, manifest=self.manifest_source, row=row or 0)
        return self.transform(image), self.tokens[index], self.targets[index], index
