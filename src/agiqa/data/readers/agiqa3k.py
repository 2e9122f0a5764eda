"""AGIQA-3K reader; also reads the embedded synthetic dataset, which is written in this format.

Official layout: ``<root>/data.csv`` (header ``name,prompt,adj1,adj2,style,mos_quality,
std_quality,mos_align,std_align``) and the images at ``<root>/<name>``. Extra columns (such as
SCVA-AGIQA's ``consistency`` and ``answer``) are ignored. Nothing here depends on AGIQA-3K's own
names or counts.

- ``prompt_group``: identical prompt strings share a group, ``p<index>`` in order of first use.
- ``generator``: the part of the file name before the first ``_``. On the real dataset these are
  the 6 models ``AttnGAN``, ``DALLE2``, ``glide``, ``midjourney``, ``sd1.5`` (Stable Diffusion
  1.5) and ``xl2.2`` (Stable Diffusion XL 2.2), kept as spelled in the file names.
- ``images`` option: the sub-folder of the root holding the images (third-party copies ship them
  in ``ACGIQA-3K/``); manifest paths then start with it (``ACGIQA-3K/<name>``). Default: the
  images sit beside ``data.csv``.
- names are normalised (``./x.jpg`` is ``x.jpg``) before duplicates are looked for.
"""

from __future__ import annotations

import re
from pathlib import Path

from agiqa.data.manifest import Dimension, Manifest
from agiqa.data.readers._common import (
    READERS,
    build_frame,
    check_unique,
    generators_from_names,
    group_ids,
    image_paths,
    require_file,
    score_column,
    std_column,
    table_with_header,
    text_column,
)

METADATA = "data.csv"
LAYOUT = (
    "<root>/data.csv with columns name,prompt,mos_quality,std_quality,mos_align,std_align "
    "and the images at <root>/<name>"
)
DIMENSIONS = (
    Dimension("quality", "quality", 0.0, 5.0, has_std=True),
    Dimension("align", "alignment", 0.0, 5.0, has_std=True),
)
GENERATOR = re.compile(r"^([^_]+)_")


@READERS.register("agiqa-3k")
def read_agiqa3k(root: Path, dataset: str = "agiqa-3k", *, images: str = "") -> Manifest:
    """Read ``<root>/data.csv`` into a manifest with the dimensions ``quality`` and ``align``.

    Args:
        root: the dataset root.
        dataset: the manifest's dataset name.
        images: sub-folder of ``root`` holding the images (``""``: beside ``data.csv``).
    """
    path = require_file(Path(root) / METADATA, LAYOUT, Path(root))
    score_columns = [c for d in DIMENSIONS for c in (d.mos_column, d.std_column)]
    table = table_with_header(path, ["name", "prompt", *score_columns])
    names = image_paths(text_column(table, "name"), table.rows, path, images)
    check_unique(names, table.rows, path)
    prompts = text_column(table, "prompt")
    scores: dict[str, list[float]] = {}
    for dim in DIMENSIONS:
        scores[dim.mos_column] = score_column(table, dim.mos_column, dim)
        scores[dim.std_column] = std_column(table, dim.std_column)
    notes: list[str] = []
    base = {
        "image": names,
        "prompt": prompts,
        "prompt_group": group_ids(prompts),
        "generator": generators_from_names(names, GENERATOR, notes),
        "subset": ["all"] * len(table),
        "labelled": [True] * len(table),
    }
    return Manifest(dataset, build_frame(base, scores), DIMENSIONS, notes, str(path))
