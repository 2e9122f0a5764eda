"""Dataset checks: a JSON-able summary of a manifest and a full decode of every image it names."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, ImageFile
from rich.progress import track

from agiqa.data.manifest import Manifest, resolve_image
from agiqa.errors import DataError

# manifest row = position + 2, as in the saved CSV (the header is row 1), matching validate()
_FIRST_ROW = 2
_WORKERS = min(8, os.cpu_count() or 1)


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


def verify_images(manifest: Manifest, root: Path, progress: bool = False) -> None:
    """Check that every image the manifest names (labelled or not) exists and fully decodes.

    All failures are collected and raised as one DataError listing each image, its manifest row
    and the reason, so one run shows everything that is wrong.
    """
    where = manifest.source or manifest.dataset
    images = [str(image) for image in manifest.frame["image"]]
    rows = [position + _FIRST_ROW for position in range(len(images))]

    def problem(index: int) -> str | None:
        return _image_problem(Path(root), images[index], where, rows[index])

    failures: list[str] = []
    # decoding releases the GIL, so threads speed up large datasets
    with _strict_truncation(), ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        reasons = track(
            pool.map(problem, range(len(images))),
            total=len(images),
            description=f"decoding {manifest.dataset} images",
            disable=not progress,
        )
        for index, reason in enumerate(reasons):
            if reason:
                failures.append(f"  manifest row {rows[index]}: {images[index]}: {reason}")
    if failures:
        raise DataError(_failure_message(failures, len(images), Path(root)), file=where)


def _image_problem(root: Path, image: str, where: str, row: int) -> str | None:
    """Why an image is bad (missing / undecodable / unsafe path), or None when it is fine."""
    try:
        path = resolve_image(root, image, file=where, row=row)
    except DataError as exc:
        return f"unsafe path ({exc.reason})"
    if not path.is_file():
        return "missing"
    try:
        with Image.open(path) as picture:
            picture.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return f"undecodable ({exc})"
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


def _failure_message(failures: list[str], total: int, root: Path) -> str:
    lines = [f"{len(failures)} of {total} images are missing or undecodable under {root}:"]
    if len(failures) == total:
        lines[0] += " (none is usable: is the dataset root right?)"
    return "\n".join([*lines, *failures])
