"""AIGCIQA2023 reader.

Official layout::

    <root>/DATA/MOS/mosz1.mat mosz2.mat mosz3.mat  # variable MOSz, shape (2400, 1)
    <root>/DATA/STD/SD1.mat SD2.mat SD3.mat        # variable SD, shape (2400, 1)
    <root>/AIGCIQA2023_Prompts.xlsx                # 100 rows, no header: challenge|category|prompt
    <root>/Image/<model>/<NNN>-<k>.png             # also flat as Image/allimg/<i>.png

mosz1 = quality, mosz2 = authenticity (both image-only) and mosz3 = correspondence (needs the
prompt), per the dataset README and its author. Row ``i`` of the .mat files (0-based) is model
``i // 400`` of ``MODELS``, prompt ``p = (i % 400) // 4`` (row ``p`` of the prompt sheet) and image
``k = i % 4 + 1``: ``Image/<model>/{p:03d}-{k}.png`` = ``Image/allimg/{i}.png``. The per-model
path is used unless only ``Image/allimg`` exists on disk. ``prompt_group`` = the prompt index.

``images`` option: the folder that plays the part of ``Image`` (default ``Image``; ``""`` when the
model folders sit at the root); manifest paths then start with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from agiqa.data.manifest import Dimension, Manifest
from agiqa.data.readers._common import (
    READERS,
    build_frame,
    check_scale,
    check_std,
    images_folder,
    parse_number,
    require_file,
    table_without_header,
    text_column,
)
from agiqa.errors import DataError

MODELS = ("Controlnet", "DALLE", "Glide", "Lafite", "stable-diffusion", "Unidiffuser")
PROMPTS = 100
IMAGES_PER_PROMPT = 4
ROWS = len(MODELS) * PROMPTS * IMAGES_PER_PROMPT
DIMENSIONS = (
    Dimension("quality", "quality", 0.0, 100.0, has_std=True),
    Dimension("authenticity", "quality", 0.0, 100.0, has_std=True),
    Dimension("correspondence", "alignment", 0.0, 100.0, has_std=True),
)
# dimension -> (MOS file, STD file), numbered as in the official archive
SCORE_FILES = {
    dim.name: (f"DATA/MOS/mosz{n}.mat", f"DATA/STD/SD{n}.mat")
    for n, dim in enumerate(DIMENSIONS, start=1)
}
PROMPT_SHEET = "AIGCIQA2023_Prompts.xlsx"
LAYOUT = (
    "<root>/DATA/MOS/mosz{1,2,3}.mat (MOSz), <root>/DATA/STD/SD{1,2,3}.mat (SD), "
    "<root>/AIGCIQA2023_Prompts.xlsx and the images under <root>/Image/<model>/"
)


@READERS.register("aigciqa2023")
def read_aigciqa2023(
    root: Path, dataset: str = "aigciqa2023", *, images: str = "Image"
) -> Manifest:
    """Read the .mat scores and the prompt sheet into a manifest of 2,400 rows.

    Args:
        root: the dataset root.
        dataset: the manifest's dataset name.
        images: sub-folder of ``root`` holding the model folders (or ``allimg``).
    """
    root = Path(root)
    folder = images_folder(images)
    scores: dict[str, list[float]] = {}
    for dim in DIMENSIONS:
        mos_file, std_file = (root / name for name in SCORE_FILES[dim.name])
        scores[dim.mos_column] = _mos(load_mat_column(mos_file, "MOSz", root), dim, mos_file)
        scores[dim.std_column] = _std(load_mat_column(std_file, "SD", root), std_file)
    prompts = read_prompts(require_file(root / PROMPT_SHEET, LAYOUT, root))
    flat = _flat_images_only(root / folder)
    indices = [_row_layout(i) for i in range(ROWS)]
    base = {
        "image": [_image_path(folder, i, m, p, k, flat) for i, (m, p, k) in enumerate(indices)],
        "prompt": [prompts[p] for _, p, _ in indices],
        "prompt_group": [f"p{p:03d}" for _, p, _ in indices],
        "generator": [MODELS[m] for m, _, _ in indices],
        "subset": ["all"] * ROWS,
        "labelled": [True] * ROWS,
    }
    notes = [
        "scores from DATA/MOS/mosz1..3.mat (quality, authenticity, correspondence) and "
        "DATA/STD/SD1..3.mat; rows in .mat order"
    ]
    if flat:
        where = f"{folder}/allimg" if folder else "allimg"
        notes.append(f"only {where} exists on disk; images are read as {where}/<row>.png")
    mos_source = root / SCORE_FILES[DIMENSIONS[0].name][0]
    return Manifest(dataset, build_frame(base, scores), DIMENSIONS, notes, str(mos_source))


def _row_layout(i: int) -> tuple[int, int, int]:
    """(model index, prompt index, image number 1..4) of .mat row ``i``."""
    per_model = PROMPTS * IMAGES_PER_PROMPT
    return i // per_model, (i % per_model) // IMAGES_PER_PROMPT, i % IMAGES_PER_PROMPT + 1


def _image_path(folder: str, i: int, model: int, prompt: int, k: int, flat: bool) -> str:
    path = f"allimg/{i}.png" if flat else f"{MODELS[model]}/{prompt:03d}-{k}.png"
    return f"{folder}/{path}" if folder else path


def _flat_images_only(images: Path) -> bool:
    per_model = any((images / model).is_dir() for model in MODELS)
    return (images / "allimg").is_dir() and not per_model


def load_mat_column(path: Path, variable: str, root: Path) -> np.ndarray:
    """The ``variable`` of a .mat file as ROWS raw values; wrong file, name or shape is an error."""
    require_file(path, LAYOUT, root)
    import scipy.io  # here: the workflow imports the readers at parse time, scipy takes 1 s
    from scipy.io.matlab import MatReadError

    try:
        data = scipy.io.loadmat(path)
    except (MatReadError, ValueError, TypeError, OSError, EOFError, NotImplementedError) as exc:
        raise DataError(f"not a readable MATLAB .mat file ({exc})", file=path) from None
    if variable not in data:
        found = sorted(k for k in data if not k.startswith("__"))
        raise DataError(f"no variable '{variable}' in the .mat file (found {found})", file=path)
    array = np.asarray(data[variable])
    if array.shape not in ((ROWS, 1), (1, ROWS)):
        raise DataError(f"'{variable}' has shape {array.shape}, expected ({ROWS}, 1)", file=path)
    if array.dtype.kind not in "iuf":
        raise DataError(f"'{variable}' holds {array.dtype} values, not numbers", file=path)
    return array.reshape(-1)


def _mos(values: np.ndarray, dim: Dimension, path: Path) -> list[float]:
    # .mat row i (0-based) is reported as row i + 1
    what = f"MOSz ({dim.name})"
    return [
        check_scale(
            parse_number(v, what=what, file=path, row=i + 1), dim, what=what, file=path, row=i + 1
        )
        for i, v in enumerate(values.tolist())
    ]


def _std(values: np.ndarray, path: Path) -> list[float]:
    return [
        check_std(parse_number(v, what="SD", file=path, row=i + 1), what="SD", file=path, row=i + 1)
        for i, v in enumerate(values.tolist())
    ]


def read_prompts(path: Path) -> Sequence[str]:
    """The prompt column of the header-less prompt sheet; it must have exactly PROMPTS rows."""
    table = table_without_header(path, ["challenge", "category", "prompt"], extra_ok=True)
    if len(table) != PROMPTS:
        row = table.rows[PROMPTS] if len(table) > PROMPTS else None
        raise DataError(f"expected {PROMPTS} prompt rows, found {len(table)}", file=path, row=row)
    return text_column(table, "prompt")
