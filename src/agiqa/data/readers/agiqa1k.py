"""AGIQA-1K reader.

Official layout: ``<root>/AIGC_MOS_Zscore.xlsx`` (Sheet1, header ``Image | Prompt | MOS``, the
z-score MOS rescaled to [0, 5] that papers use) and the images at ``<root>/file/<Image>``. When
the xlsx is absent, ``<root>/AIGC_MOS_Zscore.csv`` with the same header is read instead.
``AIGC_all.csv`` is ignored: its ``Score`` column is a different, undocumented score (multiples
of 1/22, Pearson 0.84 with the xlsx MOS), not the published MOS.

- ``prompt_group``: prompts follow the grammar ``"<main>, <second>, <place>, <style>"``; the
  trailing ``... style`` part is removed so that the anime and realistic variants of one content
  share a group (720 prompt strings -> 360 groups).
- ``generator``: the part of the file name before the first ``_`` (``deepai``, ``dreamStudio``).
- ``images`` option: the folder holding the images, default ``file`` (the official layout);
  manifest paths are ``<images>/<Image>``, names normalised before duplicates are looked for.

Duplicate names (the trap of this sheet: 1,080 rows, ``dreamStudio_8_9_1_1.jpg`` twice with MOS
0.4414 and 2.0841, and no row for ``dreamStudio_8_5_0_0.jpg``):

- rows with the same name, prompt and MOS collapse to the first one;
- a name whose rows disagree cannot be attributed to one file, so with
  ``on_conflicting_duplicates="drop"`` (default) all its rows are dropped and a manifest note
  names it and its sheet rows; with ``"error"`` it is a DataError naming the file and rows.
  The official sheet gives 1,078 rows; no file ever gets two labels.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from agiqa.data.manifest import Dimension, Manifest
from agiqa.data.readers._common import (
    READERS,
    build_frame,
    duplicate_rows,
    first_existing,
    generators_from_names,
    group_ids,
    image_paths,
    score_column,
    table_with_header,
    text_column,
)
from agiqa.errors import ConfigError, DataError

LAYOUT = "<root>/AIGC_MOS_Zscore.xlsx (Sheet1: Image | Prompt | MOS) with images at <root>/file/"
DIMENSION = Dimension("quality", "quality", 0.0, 5.0)
GENERATOR = re.compile(r"^([^_]+)_")
STYLE_SUFFIX = re.compile(r",[^,]*\bstyle\s*$")
DUPLICATE_MODES = ("drop", "error")


@READERS.register("agiqa-1k")
def read_agiqa1k(
    root: Path,
    dataset: str = "agiqa-1k",
    *,
    on_conflicting_duplicates: str = "drop",
    images: str = "file",
) -> Manifest:
    """Read the AGIQA-1K MOS sheet; see the module docstring for the duplicate-name rule.

    Args:
        root: the dataset root.
        dataset: the manifest's dataset name.
        on_conflicting_duplicates: ``drop`` or ``error`` (see the module docstring).
        images: sub-folder of ``root`` holding the images (``""``: beside the sheet).
    """
    if on_conflicting_duplicates not in DUPLICATE_MODES:
        raise ConfigError(
            f"on_conflicting_duplicates must be one of {DUPLICATE_MODES}, "
            f"not '{on_conflicting_duplicates}'"
        )
    root = Path(root)
    path = first_existing(
        [root / "AIGC_MOS_Zscore.xlsx", root / "AIGC_MOS_Zscore.csv"], LAYOUT, root
    )
    table = table_with_header(path, ["Image", "Prompt", "MOS"])
    names = image_paths(text_column(table, "Image"), table.rows, path, images)
    prompts = text_column(table, "Prompt")
    mos = score_column(table, "MOS", DIMENSION)
    notes: list[str] = []
    keep = _deduplicate(names, prompts, mos, table.rows, path, on_conflicting_duplicates, notes)
    names = [names[i] for i in keep]
    prompts = [prompts[i] for i in keep]
    base = {
        "image": names,
        "prompt": prompts,
        "prompt_group": group_ids(prompt_content(p) for p in prompts),
        "generator": generators_from_names(names, GENERATOR, notes),
        "subset": ["all"] * len(keep),
        "labelled": [True] * len(keep),
    }
    frame = build_frame(base, {DIMENSION.mos_column: [mos[i] for i in keep]})
    return Manifest(dataset, frame, (DIMENSION,), notes, str(path))


def prompt_content(prompt: str) -> str:
    """The prompt without its trailing ``, <...> style`` part (style variants share content)."""
    return STYLE_SUFFIX.sub("", prompt).strip()


def _deduplicate(
    names: Sequence[str],
    prompts: Sequence[str],
    mos: Sequence[float],
    rows: Sequence[int],
    path: Path,
    mode: str,
    notes: list[str],
) -> list[int]:
    """Positions to keep: exact repeats collapse, conflicting ones are dropped or refused."""
    dropped: set[int] = set()
    for name, where in duplicate_rows(names).items():
        listed = ", ".join(f"row {rows[p]} (MOS {mos[p]:.4f})" for p in where)
        if len({(prompts[p], mos[p]) for p in where}) == 1:
            dropped.update(where[1:])
            notes.append(f"'{name}' repeats identically in {path.name} ({listed}); kept once")
            continue
        message = f"image '{name}' has {len(where)} conflicting rows: {listed}"
        if mode == "error":
            raise DataError(message, file=path, row=rows[where[1]])
        dropped.update(where)
        notes.append(
            f"{message} in {path.name}; no score can be attributed, so all its rows were dropped"
        )
    return [i for i in range(len(names)) if i not in dropped]
