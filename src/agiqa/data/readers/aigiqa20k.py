"""AIGIQA-20K (AIGCQA-30K-Image, NTIRE 2024) reader.

Official layout: ``<root>/info_train.xlsx`` (header ``name | prompt | mos``),
``info_val.xlsx`` and ``info_test.xlsx`` (header ``name | prompt``, no MOS), and the images at
``<root>/train/<name>``, ``<root>/val/<name>``, ``<root>/test/<name>``. When an xlsx is absent,
its header-less CSV conversion ``info_<split>.csv`` is read instead. Those CSVs have NO header
row, so their first row is data (``DALLE2_0000.png``) and is never dropped; only a first row that
is exactly the header names is taken as a header.

- one dimension ``overall`` of kind ``overall``: the NTIRE 2024 track rates overall perceptual
  quality with text-image alignment mixed in, so it is neither a pure ``quality`` nor a pure
  ``alignment`` score; each model maps it explicitly (docs/methods.md); scale [0, 5], no std.
- val/test rows are unlabelled (MOS NaN): their scores were never published.
- ``subset`` = train / val / test; ``generator`` = the name without its ``_NNNN`` suffix
  (``LCM_SDXL``, ``SDXL_Turbo``, ...); identical prompt strings share a ``prompt_group``.
- ``images`` option: a sub-folder of the root holding ``train/``, ``val/`` and ``test/``
  (default: the root itself); manifest paths are ``<images>/<split>/<name>``, names normalised
  before duplicates are looked for.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agiqa.data.manifest import Dimension, Manifest
from agiqa.data.readers._common import (
    READERS,
    Table,
    build_frame,
    check_unique,
    first_existing,
    generators_from_names,
    group_ids,
    image_paths,
    images_folder,
    looks_like_header,
    read_rows,
    score_column,
    table_with_header,
    table_without_header,
    text_column,
)
from agiqa.errors import ConfigError

SPLITS = ("train", "val", "test")
LABELLED_SPLITS = ("train",)
DIMENSION = Dimension("overall", "overall", 0.0, 5.0)
GENERATOR = re.compile(r"^(.+)_\d+\.[^.]+$")
LAYOUT = (
    "<root>/info_train.xlsx (name | prompt | mos), <root>/info_val.xlsx and "
    "<root>/info_test.xlsx (name | prompt), images under <root>/train/, val/ and test/"
)


@dataclass(frozen=True)
class _Split:
    name: str
    table: Table
    names: list[str]
    paths: list[str]
    prompts: list[str]
    mos: list[float]


@READERS.register("aigiqa-20k")
def read_aigiqa20k(
    root: Path,
    dataset: str = "aigiqa-20k",
    *,
    subsets: Sequence[str] = SPLITS,
    images: str = "",
) -> Manifest:
    """Read the official train/val/test lists; only train rows are labelled.

    Args:
        root: the dataset root.
        dataset: the manifest's dataset name.
        subsets: which of ``train``, ``val``, ``test`` to read.
        images: sub-folder of ``root`` holding the split folders (``""``: the root).
    """
    unknown = [s for s in subsets if s not in SPLITS]
    if unknown or not subsets:
        raise ConfigError(f"subsets must be a non-empty selection of {SPLITS}, not {list(subsets)}")
    notes: list[str] = []
    splits = [_read_split(Path(root), name, images, notes) for name in SPLITS if name in subsets]
    paths = [p for s in splits for p in s.paths]
    rows = [r for s in splits for r in s.table.rows]
    files = [s.table.path for s in splits for _ in s.paths]
    # names are unique across the splits, not only within one split folder
    check_unique([n for s in splits for n in s.names], rows, files)
    prompts = [p for s in splits for p in s.prompts]
    base = {
        "image": paths,
        "prompt": prompts,
        "prompt_group": group_ids(prompts),
        "generator": generators_from_names(paths, GENERATOR, notes),
        "subset": [s.name for s in splits for _ in s.paths],
        "labelled": [s.name in LABELLED_SPLITS for s in splits for _ in s.paths],
    }
    frame = build_frame(base, {DIMENSION.mos_column: [m for s in splits for m in s.mos]})
    notes.append(f"metadata read from {', '.join(s.table.path.name for s in splits)}")
    return Manifest(dataset, frame, (DIMENSION,), notes, str(splits[0].table.path))


def _read_split(root: Path, split: str, images: str, notes: list[str]) -> _Split:
    labelled = split in LABELLED_SPLITS
    columns = ["name", "prompt", "mos"] if labelled else ["name", "prompt"]
    candidates = [root / f"info_{split}.xlsx", root / f"info_{split}.csv"]
    table = _read_table(first_existing(candidates, LAYOUT, root), columns, notes)
    names = image_paths(text_column(table, "name"), table.rows, table.path)
    folder = images_folder(images)
    paths = [f"{folder}/{split}/{n}" if folder else f"{split}/{n}" for n in names]
    prompts = text_column(table, "prompt")
    mos = score_column(table, "mos", DIMENSION) if labelled else [math.nan] * len(table)
    return _Split(split, table, names, paths, prompts, mos)


def _read_table(path: Path, columns: Sequence[str], notes: list[str]) -> Table:
    if path.suffix.lower() == ".xlsx":
        return table_with_header(path, columns)
    raw = read_rows(path)
    if looks_like_header(raw, columns):
        notes.append(f"{path.name} starts with a header row; it was read as a header")
        return table_with_header(path, columns, raw)
    return table_without_header(path, columns, raw=raw)
