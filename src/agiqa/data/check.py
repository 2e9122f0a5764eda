"""Dataset checks: a JSON-able summary of a manifest and a full decode of every image it names.

Verification decodes each image and converts it to RGB by the rules training uses
(``agiqa.data.decode``), so whatever passes here also loads in training.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageFile
from rich.progress import track

from agiqa.data.decode import ImageGeometryError, UnsupportedImage, check_geometry, to_rgb
from agiqa.data.manifest import Manifest, link_roots, resolve_image
from agiqa.errors import DataError

# manifest row = position + 2, as in the saved CSV (the header is row 1), matching validate()
_FIRST_ROW = 2
_WORKERS = min(8, os.cpu_count() or 1)
# bad images listed in the error; the rest are counted
SHOWN_FAILURES = 10


def summarize(manifest: Manifest) -> dict:
    """Counts, groups and per-dimension score statistics (over labelled rows) of a manifest."""
    frame = manifest.frame
    labelled = manifest.labelled()
    return {
        "dataset": manifest.dataset,
        "rows": len(frame),
        "labelled_rows": len(labelled),
        "unlabelled_rows": len(frame) - len(labelled),
        "prompt_groups": int(frame["prompt_group"].nunique()),
        "generators": int(frame["generator"].nunique()),
        "dimensions": {
            dim.name: {
                "kind": dim.kind,
                "scale": [dim.low, dim.high],
                **_stats(labelled[dim.mos_column].astype(float).tolist()),
                "has_std": dim.has_std,
            }
            for dim in manifest.dimensions
        },
        "notes": list(manifest.notes),
    }


def _stats(values: list[float]) -> dict[str, float | None]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"min": None, "max": None, "mean": None}
    return {"min": min(finite), "max": max(finite), "mean": sum(finite) / len(finite)}


def verify_images(
    manifest: Manifest,
    root: Path,
    progress: bool = False,
    allowed_link_roots: Sequence[str | Path] = (),
) -> None:
    """Check that every image the manifest names (labelled or not) exists and converts to RGB.

    Each image is fully decoded and converted by the rules training uses
    (:func:`agiqa.data.decode.to_rgb`), so a mode training could not convert fails here. A
    symbolic link must resolve inside the root, the DVC cache or ``allowed_link_roots`` (see
    :func:`agiqa.data.manifest.resolve_image`).

    Raises:
        DataError: one error for all bad images: how many of each kind, the first
            ``SHOWN_FAILURES`` with their manifest row, and a hint when images are missing.
        ConfigError: an allowed link root that is not a folder.
    """
    where = manifest.source or manifest.dataset
    images = [str(image) for image in manifest.frame["image"]]
    rows = [position + _FIRST_ROW for position in range(len(images))]
    link_roots(root, allowed_link_roots)  # a bad folder is a ConfigError before any decoding

    def problem(index: int) -> _Problem | None:
        return _image_problem(Path(root), images[index], where, rows[index], allowed_link_roots)

    # decoding releases the GIL, so threads speed up large datasets
    with _strict_truncation(), ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        reasons = track(
            pool.map(problem, range(len(images))),
            total=len(images),
            description=f"decoding {manifest.dataset} images",
            disable=not progress,
        )
        failures: list[tuple[int, _Problem]] = [(i, p) for i, p in enumerate(reasons) if p]
    if failures:
        lines = [f"  manifest row {rows[i]}: {images[i]}: {p.text}" for i, p in failures]
        kinds = Counter(p.kind for _, p in failures)
        raise DataError(_failure_message(lines, kinds, len(images), Path(root)), file=where)
    _refuse_one_file_under_two_names(Path(root), images, rows, where, allowed_link_roots)


def _refuse_one_file_under_two_names(
    root: Path, images: list[str], rows: list[int], where: str, allowed: Sequence[str | Path]
) -> None:
    """Two names of one file (a symbolic or hard link inside the root) are one image, which a
    split could put on both sides: refused, naming the rows."""
    names: dict[tuple[int, int], list[int]] = {}
    for index, image in enumerate(images):
        path = resolve_image(root, image, file=where, row=rows[index], allowed_link_roots=allowed)
        info = path.stat()
        names.setdefault((info.st_dev, info.st_ino), []).append(index)
    shared = [indices for indices in names.values() if len(indices) > 1]
    if not shared:
        return
    lines = [
        "  " + " = ".join(f"manifest row {rows[i]} ({images[i]})" for i in indices)
        for indices in shared[:SHOWN_FAILURES]
    ]
    more = (
        [f"  ... and {len(shared) - SHOWN_FAILURES:,} more"] if len(shared) > SHOWN_FAILURES else []
    )
    raise DataError(
        f"{len(shared):,} image file(s) under {root} are reachable under more than one name (a "
        "symbolic or hard link, or identical files that a DVC cache stores once); one image "
        "could land on both sides of a split. Keep one row per image:\n" + "\n".join(lines + more),
        file=where,
    )


@dataclass(frozen=True)
class _Problem:
    kind: str  # missing, undecodable, unsupported or unsafe path
    text: str


def _image_problem(
    root: Path, image: str, where: str, row: int, allowed: Sequence[str | Path]
) -> _Problem | None:
    """Why an image is bad (missing, undecodable, unsupported, unsafe path), or None if fine."""
    try:
        path = resolve_image(root, image, file=where, row=row, allowed_link_roots=allowed)
    except DataError as exc:
        return _Problem("unsafe path", f"unsafe path ({exc.reason})")
    if not path.is_file():
        return _Problem("missing", "missing")
    try:
        with Image.open(path) as picture:
            check_geometry(picture.size)  # the limits training and scoring apply
            picture.load()
            to_rgb(picture)
    except ImageGeometryError as exc:
        return _Problem("unsupported size", f"unsupported size ({exc})")
    except UnsupportedImage as exc:
        return _Problem("unsupported", f"cannot be converted to RGB ({exc})")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return _Problem("undecodable", f"undecodable ({exc})")
    return None


@contextmanager
def _strict_truncation() -> Iterator[None]:
    # PIL would silently pad a truncated file if another module allowed truncated images
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _failure_message(lines: list[str], kinds: Counter[str], total: int, root: Path) -> str:
    """A summary, not one line per image: a wrong root would otherwise print thousands."""
    counts = ", ".join(f"{count:,} {kind}" for kind, count in sorted(kinds.items()))
    head = f"{len(lines):,} of {total:,} images under {root} are not usable ({counts})"
    if len(lines) == total:
        head += "; none is usable"
    shown = lines[:SHOWN_FAILURES]
    out = [f"{head}. The first {len(shown)}:" if len(lines) > len(shown) else f"{head}:", *shown]
    if len(lines) > len(shown):
        out.append(f"  ... and {len(lines) - len(shown):,} more")
    if kinds["missing"]:
        out.append("hint: is `root` right? use `images:` if the images are in a sub-folder of it")
    return "\n".join(out)
