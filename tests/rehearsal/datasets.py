"""The paper's four datasets in their official layouts, for the rehearsal (test tooling).

- **AGIQA-3K** is the real dataset (``../shared/datasets/agiqa-3k``), copied file by file: DVC
  does not follow a linked folder (agiqa.data.dvc), and a hard link would let DVC's read-only
  cache modes reach the shared originals.
- **AGIQA-1K, AIGCIQA2023, AIGIQA-20K** are rebuilt from their real metadata
  (``../shared/fixtures/agiqa-metadata``) in the official file formats: ``AIGC_MOS_Zscore.xlsx``
  (Sheet1, ``Image | Prompt | MOS``) and the official ``AIGC_all.csv``; ``DATA/MOS/mosz{1,2,3}.mat``
  (``MOSz``, 2400 x 1), ``DATA/STD/SD{1,2,3}.mat`` (``SD``), ``AIGCIQA2023_Prompts.xlsx`` (no
  header: challenge, category, prompt) and ``pic-index.xlsx``; ``info_train.xlsx`` (``name |
  prompt | mos``), ``info_val.xlsx`` and ``info_test.xlsx`` (``name | prompt``). Every value is
  the fixture's; nothing is renamed, dropped or reordered, so the readers see the official
  files, quirks included (AGIQA-1K's conflicting duplicate, AIGIQA-20K's unlabelled rows).

Images are generated under the real names and formats (AGIQA-1K JPEG, the others PNG), only for
the rows a dataset entry's ``max_images`` keeps (``agiqa.data.manifest.limit_images``: the same
function the pipeline applies), so a rehearsal does not write 23,000 files. Sizes: the datasets'
documentation in ``../shared/docs`` gives none; AGIQA-1K and AIGCIQA2023 are made 512 x 512 like
the real AGIQA-3K, AIGIQA-20K 512 or 1024 px square by generator (an assumption: its paper says
the output resolution varies, and SCVA-AGIQA resizes it to 500 px before cropping). Each image
is a smooth random picture seeded by its name: distinct images, so predictions differ.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import scipy.io
from PIL import Image, ImageDraw, ImageFilter

from agiqa.data.manifest import Manifest, limit_images
from agiqa.data.readers import read_dataset

DATASETS = ("agiqa-1k", "agiqa-3k", "aigciqa2023", "aigiqa-20k")
AIGCIQA2023_DIMENSIONS = ("quality", "authenticity", "correspondence")
#: AIGIQA-20K generators whose images are made 1024 px (the others 512 px): an assumption.
LARGE_20K = (
    "DALLE2",
    "DALLE3",
    "IF",
    "LCM_Pixart",
    "LCM_SDXL",
    "MJ",
    "Pixart",
    "Playground",
    "SDXL",
    "SSD1B",
)


def write_xlsx(path: Path, rows: Iterable[Iterable[object]]) -> Path:
    """An official-style workbook: one sheet named Sheet1 holding ``rows`` from row 1."""
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Sheet1"
    for row in rows:
        sheet.append(list(row))
    path.parent.mkdir(parents=True, exist_ok=True)
    book.save(path)
    return path


def picture(name: str, size: tuple[int, int]) -> Image.Image:
    """A smooth random RGB picture (gradient and blurred shapes), the same for the same name."""
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    width, height = size
    corners = rng.integers(0, 256, size=(2, 2, 3)).astype(np.float32)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    top = corners[0, 0] * (1 - x) + corners[0, 1] * x
    bottom = corners[1, 0] * (1 - x) + corners[1, 1] * x
    image = Image.fromarray((top * (1 - y) + bottom * y).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 8))):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        w, h = rng.integers(width // 10, width // 2), rng.integers(height // 10, height // 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x0 + w, y0 + h), fill=colour)
    return image.filter(ImageFilter.GaussianBlur(radius=width / 256))


def save_picture(path: Path, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = picture(path.name, size)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, quality=90)
    else:
        image.save(path)


def write_images(
    root: Path, manifest: Manifest, size_of: Callable[[str], tuple[int, int]]
) -> list[str]:
    """Generate the manifest's images under ``root`` (manifest paths); returns the paths."""
    paths = list(manifest.frame["image"])
    for image in paths:
        save_picture(root / image, size_of(image))
    return paths


def kept_rows(reader: str, root: Path, max_images: int | None) -> Manifest:
    """The rows the pipeline keeps: the reader on the official metadata, then ``max_images``."""
    return limit_images(read_dataset(reader, root, dataset=reader), max_images)


# --- the builders ------------------------------------------------------------------------------


def build_agiqa1k(root: Path, fixtures: Path, max_images: int | None) -> Path:
    """``AIGC_MOS_Zscore.xlsx`` (the IPCE CSV is its cell-for-cell copy), ``AIGC_all.csv``."""
    table = pd.read_csv(
        fixtures / "agiqa-1k" / "ipce" / "all.csv",
        keep_default_na=False,
        dtype={"Image": str, "Prompt": str},
    )
    write_xlsx(root / "AIGC_MOS_Zscore.xlsx", [list(table.columns), *table.values.tolist()])
    shutil.copyfile(fixtures / "agiqa-1k" / "AIGC_all.csv", root / "AIGC_all.csv")
    write_images(root, kept_rows("agiqa-1k", root, max_images), lambda _: (512, 512))
    return root


def build_aigciqa2023(root: Path, fixtures: Path, max_images: int | None) -> Path:
    """The .mat score files, the prompt sheet and pic-index.xlsx, in .mat row order."""
    scores = pd.read_csv(
        fixtures / "aigciqa2023" / "pr4-huskydoge" / "AIGCIQA2023.csv", index_col=0
    )
    for number, dim in enumerate(AIGCIQA2023_DIMENSIONS, start=1):
        for folder, stem, variable, column in (
            ("MOS", "mosz", "MOSz", "mos"),
            ("STD", "SD", "SD", "std"),
        ):
            target = root / "DATA" / folder / f"{stem}{number}.mat"
            target.parent.mkdir(parents=True, exist_ok=True)
            values = scores[f"{dim}_{column}"].to_numpy(dtype=float).reshape(-1, 1)
            scipy.io.savemat(target, {variable: values})
    first_model = scores.iloc[0:400:4]  # rows 4p of the first model hold prompt p
    write_xlsx(root / "AIGCIQA2023_Prompts.xlsx", first_model[["style", "class", "prompt"]].values)
    index = pd.read_csv(fixtures / "aigciqa2023" / "ipce" / "all.csv")
    write_xlsx(root / "pic-index.xlsx", index.values.tolist())
    kept = kept_rows("aigciqa2023", root, max_images)
    paths = write_images(root, kept, lambda _: (512, 512))
    # The archive's flat copy Image/allimg/<row>.png holds the same bytes.
    by_path = {f"Image/{m}/{f}": row for row, (m, f) in enumerate(index.values.tolist())}
    for path in paths:
        flat = root / "Image" / "allimg" / f"{by_path[path]}.png"
        flat.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / path, flat)
    return root


def build_aigiqa20k(root: Path, fixtures: Path, max_images: int | None) -> Path:
    """``info_{train,val,test}.xlsx`` with their headers, from the header-less CSV copies."""
    for split, header in (
        ("train", ["name", "prompt", "mos"]),
        ("val", ["name", "prompt"]),
        ("test", ["name", "prompt"]),
    ):
        table = pd.read_csv(
            fixtures / "aigiqa-20k" / f"info_{split}.csv",
            header=None,
            names=header,
            keep_default_na=False,
            dtype={"name": str, "prompt": str},
        )
        write_xlsx(root / f"info_{split}.xlsx", [header, *table.values.tolist()])

    def size_of(image: str) -> tuple[int, int]:
        generator = Path(image).name.rsplit("_", 1)[0]
        side = 1024 if generator in LARGE_20K else 512
        return side, side

    write_images(root, kept_rows("aigiqa-20k", root, max_images), size_of)
    return root


def copy_agiqa3k(root: Path, real: Path) -> Path:
    """The real AGIQA-3K, every file copied (``data.csv``, the 2,982 JPEGs, its notes)."""
    shutil.copytree(real, root, dirs_exist_ok=True)
    return root


def build_all(data_raw: Path, shared: Path, max_images: dict[str, int | None]) -> dict[str, Path]:
    """The four dataset roots under ``data_raw`` (``data/raw`` of a checkout)."""
    fixtures = shared / "fixtures" / "agiqa-metadata"
    builders = {
        "agiqa-1k": lambda root: build_agiqa1k(root, fixtures, max_images.get("agiqa-1k")),
        "agiqa-3k": lambda root: copy_agiqa3k(root, shared / "datasets" / "agiqa-3k"),
        "aigciqa2023": lambda root: build_aigciqa2023(
            root, fixtures, max_images.get("aigciqa2023")
        ),
        "aigiqa-20k": lambda root: build_aigiqa20k(root, fixtures, max_images.get("aigiqa-20k")),
    }
    roots = {}
    for name, build in builders.items():
        root = data_raw / name
        root.mkdir(parents=True, exist_ok=True)
        roots[name] = build(root)
    return roots


def prompts(fixtures: Path) -> list[str]:
    """Every prompt of the four datasets (the text the BERT word pieces are learned from)."""
    texts = pd.read_csv(fixtures / "agiqa-1k" / "ipce" / "all.csv")["Prompt"].tolist()
    texts += pd.read_csv(fixtures / "agiqa-3k" / "data.csv")["prompt"].tolist()
    texts += pd.read_csv(fixtures / "aigciqa2023" / "ipce" / "prompt.csv")["prompt"].tolist()
    for split in ("train", "val", "test"):
        table = pd.read_csv(fixtures / "aigiqa-20k" / f"info_{split}.csv", header=None)
        texts += table[1].tolist()
    return [str(text) for text in texts]
