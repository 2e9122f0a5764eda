"""The canonical manifest: every dataset reader turns its native metadata into this one table.

Columns of ``Manifest.frame``:

- ``image``: path of the image file relative to the dataset root (POSIX separators)
- ``prompt``: the generation prompt
- ``prompt_group``: images that share this id share a prompt (splits never cut a group)
- ``generator``: the text-to-image model that made the image
- ``subset``: the official subset the row comes from (``all`` when the dataset has none)
- ``labelled``: whether every rated dimension has a score (AIGIQA-20K val/test rows do not)
- ``mos_<dim>`` for each rated dimension, on the dataset's native scale
- ``std_<dim>`` for each dimension whose per-image standard deviation is published

The dimensions (name, kind, native scale range) travel in a JSON file beside the CSV.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd

from agiqa.errors import DataError

BASE_COLUMNS = ("image", "prompt", "prompt_group", "generator", "subset", "labelled")
DIMENSION_KINDS = ("quality", "alignment")


@dataclass(frozen=True)
class Dimension:
    """One rated dimension of a dataset.

    ``kind`` says what a model needs to predict it: ``quality`` from the image alone,
    ``alignment`` from the image and its prompt.
    """

    name: str
    kind: str
    low: float
    high: float
    has_std: bool = False

    def __post_init__(self) -> None:
        if self.kind not in DIMENSION_KINDS:
            raise ValueError(f"dimension {self.name}: kind must be one of {DIMENSION_KINDS}")
        if not self.high > self.low:
            raise ValueError(
                f"dimension {self.name}: scale range [{self.low}, {self.high}] is empty"
            )

    @property
    def mos_column(self) -> str:
        return f"mos_{self.name}"

    @property
    def std_column(self) -> str:
        return f"std_{self.name}"

    def normalise(self, values):
        """Map native-scale scores to [0, 1]."""
        return (values - self.low) / (self.high - self.low)

    def denormalise(self, values):
        """Map [0, 1] scores back to the native scale."""
        return values * (self.high - self.low) + self.low


@dataclass
class Manifest:
    """A dataset as one table plus the description of its rated dimensions."""

    dataset: str
    frame: pd.DataFrame
    dimensions: tuple[Dimension, ...]
    notes: list[str] = field(default_factory=list)
    source: str = ""

    def dimension(self, name: str) -> Dimension:
        for dim in self.dimensions:
            if dim.name == name:
                return dim
        raise KeyError(f"{self.dataset} has no dimension '{name}'")

    @property
    def dimension_names(self) -> list[str]:
        return [d.name for d in self.dimensions]

    def labelled(self) -> pd.DataFrame:
        """The rows that have a score for every dimension."""
        return self.frame[self.frame["labelled"]].reset_index(drop=True)

    def validate(self) -> None:
        """Raise DataError on a manifest that breaks the contract in the module docstring."""
        where = self.source or f"manifest of {self.dataset}"
        expected = list(BASE_COLUMNS) + [d.mos_column for d in self.dimensions]
        missing = [c for c in expected if c not in self.frame.columns]
        if missing:
            raise DataError(f"missing columns {missing}", file=where)
        for position, image in enumerate(self.frame["image"]):
            check_relative_path(image, file=where, row=position + 2)
        duplicated = self.frame["image"].duplicated(keep=False)
        if duplicated.any():
            first = int(duplicated.to_numpy().nonzero()[0][0])
            raise DataError(
                f"image '{self.frame['image'].iloc[first]}' appears more than once",
                file=where,
                row=first + 2,
            )
        for dim in self.dimensions:
            scores = self.frame.loc[self.frame["labelled"], dim.mos_column]
            bad = scores[scores.isna() | ~scores.map(_is_finite)]
            if len(bad):
                row = int(self.frame.index.get_loc(bad.index[0])) + 2
                raise DataError(f"{dim.mos_column} is not a finite number", file=where, row=row)

    def save(self, csv_path: str | Path) -> None:
        """Write the table as CSV and the dimensions as ``<name>.json`` beside it."""
        csv_path = Path(csv_path)
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        self.frame.to_csv(csv_path, index=False)
        meta = {
            "dataset": self.dataset,
            "rows": len(self.frame),
            "labelled_rows": int(self.frame["labelled"].sum()),
            "dimensions": [asdict(d) for d in self.dimensions],
            "notes": self.notes,
        }
        csv_path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, csv_path: str | Path) -> Manifest:
        csv_path = Path(csv_path)
        meta = json.loads(csv_path.with_suffix(".json").read_text())
        frame = pd.read_csv(
            csv_path,
            dtype={
                "image": str,
                "prompt": str,
                "prompt_group": str,
                "generator": str,
                "subset": str,
            },
            keep_default_na=False,
            na_values={c: [""] for c in _score_columns(meta)},
        )
        frame["labelled"] = frame["labelled"].astype(str).str.lower().eq("true")
        dims = tuple(Dimension(**d) for d in meta["dimensions"])
        manifest = cls(meta["dataset"], frame, dims, list(meta.get("notes", [])), str(csv_path))
        manifest.validate()
        return manifest


def _score_columns(meta: dict) -> list[str]:
    cols = []
    for d in meta["dimensions"]:
        cols.append(f"mos_{d['name']}")
        if d.get("has_std"):
            cols.append(f"std_{d['name']}")
    return cols


def _is_finite(value: object) -> bool:
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def check_relative_path(image: object, *, file: str | Path, row: int | None) -> str:
    """Return ``image`` if it is a plain relative path inside the dataset root, else raise."""
    if not isinstance(image, str) or not image.strip():
        raise DataError("empty image name", file=file, row=row)
    if "\\" in image:
        raise DataError(f"image path '{image}' uses backslashes", file=file, row=row)
    path = PurePosixPath(image)
    if path.is_absolute() or ".." in path.parts:
        raise DataError(f"image path '{image}' escapes the dataset root", file=file, row=row)
    return image


def resolve_image(root: str | Path, image: str, *, file: str | Path, row: int | None) -> Path:
    """Join a manifest image path to its root, refusing anything that lands outside the root."""
    check_relative_path(image, file=file, row=row)
    root_path = Path(root).resolve()
    full = (root_path / image).resolve()
    if not full.is_relative_to(root_path):
        raise DataError(f"image path '{image}' escapes the dataset root", file=file, row=row)
    return full
