"""The canonical manifest: every dataset reader turns its native metadata into this one table.

Columns of ``Manifest.frame``:

- ``image``: path of the image file relative to the dataset root, in canonical form (POSIX
  separators, no ``.`` or ``..`` segment, no leading ``./``: see ``canonical_image_path``), so
  one image has one name and names compare as strings (duplicates, split joins)
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

import configparser
import functools
import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from agiqa.errors import ConfigError, DataError

BASE_COLUMNS = ("image", "prompt", "prompt_group", "generator", "subset", "labelled")
DIMENSION_KINDS = ("quality", "alignment", "overall")
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class Dimension:
    """One rated dimension of a dataset.

    ``kind`` says what a model needs to predict it: ``quality`` from the image alone,
    ``alignment`` from the image and its prompt, ``overall`` one score that mixes both (the
    NTIRE 2024 AIGIQA-20K track: perceptual quality with text-image alignment folded in). Each
    model states how it maps ``overall`` (docs/methods.md).
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


#: Images ``limit_images`` takes from each prompt group: as many groups as images, and splits
#: by prompt group stay possible on a handful of images.
IMAGES_PER_GROUP = 1


def limit_images(manifest: Manifest, max_images: int | None) -> Manifest:
    """At most ``max_images`` images of a manifest (a dataset entry's ``max_images``); None: all.

    For rehearsals and smoke runs on a few images of the real files: ``IMAGES_PER_GROUP``
    image of each of ``max_images`` prompt groups, the groups and the images in a group taken
    in the order of the sha256 of their names (no seed: the subset depends only on the
    metadata, so the verification, the manifest and a rerun elsewhere keep the same images).
    Labelled and unlabelled rows are taken alike; the manifest's notes say what was kept.
    """
    if max_images is None:
        return manifest
    if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
        raise ConfigError(f"max_images must be a positive integer, not {max_images!r}")
    frame = manifest.frame
    if len(frame) <= max_images:
        return manifest
    order = frame.assign(
        _group=frame["prompt_group"].map(_name_hash), _image=frame["image"].map(_name_hash)
    ).sort_values(["_group", "_image"])
    taken = order.groupby("prompt_group", sort=False).head(IMAGES_PER_GROUP).head(max_images)
    kept = frame.loc[sorted(taken.index)].reset_index(drop=True)
    note = (
        f"max_images {max_images}: {len(kept)} of {len(frame)} images kept "
        f"({IMAGES_PER_GROUP} per prompt group, groups in the sha256 order of their ids)"
    )
    return Manifest(
        manifest.dataset, kept, manifest.dimensions, [*manifest.notes, note], manifest.source
    )


def _name_hash(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


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


def canonical_image_path(image: object, *, file: str | Path, row: int | None) -> str:
    """The one spelling of an image path that every comparison of names uses.

    Backslashes become ``/``, empty and ``.`` segments are dropped and ``a/..`` pairs cancel
    (lexically: ``a`` is never looked up on disk), so ``x.jpg``, ``./x.jpg``, ``a/../x.jpg`` and
    ``.\\x.jpg`` are all ``x.jpg``.

    Raises:
        DataError: an empty name, an absolute path, or one that leaves the root once normalised.
    """
    if not isinstance(image, str) or not image.strip():
        raise DataError("empty image name", file=file, row=row)
    unified = image.replace("\\", "/")
    if unified.startswith("/") or _DRIVE.match(unified):
        raise DataError(f"image path '{image}' escapes the dataset root", file=file, row=row)
    parts: list[str] = []
    for part in unified.split("/"):
        if part == "..":
            if not parts:
                raise DataError(
                    f"image path '{image}' escapes the dataset root", file=file, row=row
                )
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    if not parts:
        raise DataError(f"image path '{image}' names no file", file=file, row=row)
    return "/".join(parts)


def check_relative_path(image: object, *, file: str | Path, row: int | None) -> str:
    """Return ``image`` if it is a canonical relative path inside the root, else raise."""
    canonical = canonical_image_path(image, file=file, row=row)
    if canonical != image:
        raise DataError(
            f"image path '{image}' is not in canonical form (it is '{canonical}' once"
            " normalised); readers write canonical paths, so this manifest was edited",
            file=file,
            row=row,
        )
    return canonical


def resolve_image(
    root: str | Path,
    image: str,
    *,
    file: str | Path,
    row: int | None,
    allowed_link_roots: Sequence[str | Path] = (),
) -> Path:
    """Join a manifest image path to its root; a symbolic link must land in an allowed folder.

    The path itself never leaves the root (it is canonical). Through symbolic links (of the file
    or of a folder above it) the file may live elsewhere only inside: the root, the DVC cache of
    the repository holding the root (DVC's symlink cache links every file there), or one of
    ``allowed_link_roots``.

    Raises:
        DataError: a non-canonical path, or a link whose target is outside every allowed folder.
        ConfigError: an allowed link root that is not a folder.
    """
    check_relative_path(image, file=file, row=row)
    root_path = Path(root).resolve()
    full = (root_path / image).resolve()
    if full.is_relative_to(root_path):
        return full
    allowed = link_roots(root, allowed_link_roots)
    if any(full.is_relative_to(folder) for folder in allowed):
        return full
    listed = ", ".join(str(folder) for folder in allowed)
    raise DataError(
        f"image path '{image}' is a symbolic link (or lies under one) to '{full}', which is"
        f" outside the dataset root and every allowed link root ({listed}); if you trust that"
        " folder, add it to allowed_link_roots",
        file=file,
        row=row,
    )


def link_roots(root: str | Path, extra: Sequence[str | Path] = ()) -> tuple[Path, ...]:
    """Folders a linked image may resolve into: the root, the DVC cache(s), then ``extra``.

    Raises:
        ConfigError: an ``extra`` entry that is not an existing folder.
    """
    return _link_roots(Path(root).absolute(), tuple(Path(p) for p in extra))


@functools.lru_cache(maxsize=64)
def _link_roots(root: Path, extra: tuple[Path, ...]) -> tuple[Path, ...]:
    # cached: resolve_image runs once per image, the answer only depends on the root
    for folder in extra:
        if not folder.is_dir():
            raise ConfigError(f"allowed link root '{folder}' is not a folder")
    found = [root.resolve(), *dvc_caches(root), *(folder.resolve() for folder in extra)]
    return tuple(dict.fromkeys(found))


def dvc_caches(root: Path) -> list[Path]:
    """The cache folder(s) of the DVC repository that holds ``root`` (none outside one).

    The repository is the nearest folder above ``root`` (as given, then resolved) with a
    ``.dvc`` folder; its cache is ``.dvc/cache`` unless ``cache.dir`` in ``.dvc/config`` or
    ``.dvc/config.local`` moves it (a relative ``dir`` is taken from ``.dvc/``).
    """
    caches: list[Path] = []
    for start in dict.fromkeys((root, root.resolve())):
        repo = next((p for p in (start, *start.parents) if (p / ".dvc").is_dir()), None)
        if repo is None:
            continue
        caches.append((repo / ".dvc" / "cache").resolve())
        for name in ("config", "config.local"):
            configured = _cache_dir_setting(repo / ".dvc" / name)
            if configured:
                caches.append((repo / ".dvc" / configured).resolve())
    return caches


def _cache_dir_setting(path: Path) -> str | None:
    parser = configparser.ConfigParser()
    try:
        parser.read(path)
    except configparser.Error:
        return None  # DVC itself reports a broken config; a cache we cannot read is not allowed
    return parser.get("cache", "dir", fallback=None)
