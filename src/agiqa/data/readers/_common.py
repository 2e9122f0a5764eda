"""Helpers shared by the dataset readers: table parsing and checks that name the file and row.

Row numbers follow ``DataError``: 1-based, as a person sees them in the file. A CSV row is the
line its record starts on (header = line 1 when there is one); an xlsx row is the sheet row.
"""

from __future__ import annotations

import csv
import io
import math
import re
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
from openpyxl.utils.exceptions import InvalidFileException

from agiqa.data.manifest import (
    BASE_COLUMNS,
    Dimension,
    Manifest,
    canonical_image_path,
    link_roots,
)
from agiqa.errors import ConfigError, DataError
from agiqa.registry import Registry

ReaderFn = Callable[..., Manifest]
READERS: Registry[ReaderFn] = Registry("dataset reader")

_Cell = object
_RawRows = list[tuple[int, list[_Cell]]]


@dataclass(frozen=True)
class Table:
    """Named columns of a metadata table plus the file row of every record."""

    path: Path
    columns: dict[str, list[_Cell]]
    rows: list[int]

    def __len__(self) -> int:
        return len(self.rows)


# --- locating files ---------------------------------------------------------------------------


def require_file(path: Path, layout: str, root: Path) -> Path:
    """Return ``path`` if it is a file inside ``root``, else explain what the layout expects.

    Raises:
        DataError: No such file, or a symbolic link to a file outside the root (and outside
            the DVC cache, where ``dvc checkout`` links files), whose content could change
            under the dataset without any trace in it.
    """
    if not path.is_file():
        raise DataError(f"metadata file not found; the official layout is {layout}", file=path)
    target = path.resolve()
    allowed = link_roots(root)
    if not any(target.is_relative_to(folder) for folder in allowed):
        raise DataError(
            f"the metadata file is a symbolic link (or lies under one) to '{target}', outside "
            f"the dataset root {Path(root).resolve()} (and the DVC cache); copy the file into "
            "the root",
            file=path,
        )
    return path


def first_existing(candidates: Sequence[Path], layout: str, root: Path) -> Path:
    """The first candidate that exists (inside ``root``, as ``require_file`` checks); a
    DataError on the first (official) one when none does."""
    for path in candidates:
        if path.is_file():
            return require_file(path, layout, root)
    others = " or ".join(str(p) for p in candidates[1:])
    also = f" (nor its alternative {others})" if others else ""
    raise DataError(
        f"metadata file not found{also}; the official layout is {layout}", file=candidates[0]
    )


# --- reading raw rows -------------------------------------------------------------------------


def _is_blank(cells: Sequence[_Cell]) -> bool:
    return all(c is None or (isinstance(c, str) and not c.strip()) for c in cells)


def _trim(cells: Sequence[_Cell]) -> list[_Cell]:
    """Drop trailing empty cells (spreadsheets pad rows to the sheet width)."""
    out = list(cells)
    while out and (out[-1] is None or out[-1] == ""):
        out.pop()
    return out


def _decode_error_line(path: Path, position: int) -> int:
    with path.open("rb") as handle:
        return handle.read(position).count(b"\n") + 1


def read_csv_rows(path: Path) -> _RawRows:
    """All non-blank records of a UTF-8 CSV with the line each one starts on."""
    out: _RawRows = []
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = _decode_error_line(path, exc.start)
        raise DataError(
            "not a UTF-8 text file (garbled or binary CSV)", file=path, row=line
        ) from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise DataError("NUL byte in the file (garbled or binary CSV)", file=path, row=line)
    # newline="" splits lines only on \n, \r\n or \r, as csv expects (not on U+2028 and kin)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    previous = 0
    try:
        for record in reader:
            start, previous = previous + 1, reader.line_num
            if not _is_blank(record):
                out.append((start, list(record)))
    except csv.Error as exc:
        raise DataError(f"malformed CSV: {exc}", file=path, row=previous + 1) from None
    return out


#: What a metadata workbook may make the reader do. The official sheets have fewer than 25,000
#: rows and 20 columns; a crafted 7 KB sheet can declare a million rows of 16,384 columns.
XLSX_MAX_ROWS = 500_000
XLSX_MAX_COLUMNS = 1_000
XLSX_MAX_UNCOMPRESSED = 256 * 1024 * 1024


def read_xlsx_rows(path: Path) -> _RawRows:
    """All non-blank rows of the first worksheet with their sheet row numbers.

    Every row the sheet holds is read, whatever range its ``<dimension>`` declares (a stale one
    would hide rows), and the work is bounded: a workbook whose parts unpack to more than
    ``XLSX_MAX_UNCOMPRESSED`` bytes, a row beyond ``XLSX_MAX_ROWS`` or a cell beyond column
    ``XLSX_MAX_COLUMNS`` is refused before it is expanded.
    """
    _check_xlsx_size(path)
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise DataError(f"not a readable .xlsx workbook ({exc})", file=path) from None
    try:
        sheet = book.worksheets[0]
        sheet.reset_dimensions()  # read the rows that are there, not the declared range
        out: _RawRows = []
        for number, cells in enumerate(sheet.iter_rows(min_row=1, values_only=True), start=1):
            if number > XLSX_MAX_ROWS:
                raise DataError(
                    f"the sheet goes on past row {XLSX_MAX_ROWS:,}, more than a metadata table "
                    "holds; remove the rows or cells below the table",
                    file=path,
                    row=number,
                )
            if len(cells) > XLSX_MAX_COLUMNS:
                raise DataError(
                    f"a cell in column {len(cells):,}, beyond the {XLSX_MAX_COLUMNS:,} columns a "
                    "metadata table may have; remove the cells right of the table",
                    file=path,
                    row=number,
                )
            if not _is_blank(cells):
                out.append((number, _trim(cells)))
        return out
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise DataError(f"not a readable .xlsx workbook ({exc})", file=path) from None
    finally:
        book.close()


def _check_xlsx_size(path: Path) -> None:
    """Refuse a workbook whose parts unpack to more than ``XLSX_MAX_UNCOMPRESSED`` (zipfile
    never unpacks more than a member declares, so the declared sizes bound the work)."""
    try:
        with zipfile.ZipFile(path) as archive:
            total = sum(member.file_size for member in archive.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"not a readable .xlsx workbook ({exc})", file=path) from None
    if total > XLSX_MAX_UNCOMPRESSED:
        raise DataError(
            f"the workbook unpacks to {total:,} bytes, more than the {XLSX_MAX_UNCOMPRESSED:,} "
            "a metadata table needs; save the table alone (or as CSV)",
            file=path,
        )


def read_rows(path: Path) -> _RawRows:
    return read_xlsx_rows(path) if path.suffix.lower() == ".xlsx" else read_csv_rows(path)


# --- building tables ---------------------------------------------------------------------------


def _header_names(path: Path, row: int, cells: Sequence[_Cell]) -> list[str]:
    names = ["" if c is None else str(c).strip() for c in cells]
    repeated = sorted({n for n in names if n and names.count(n) > 1})
    if repeated:
        raise DataError(f"header repeats column(s) {repeated}", file=path, row=row)
    return names


def table_with_header(path: Path, required: Sequence[str], raw: _RawRows | None = None) -> Table:
    """Read a CSV/xlsx whose first non-blank row is a header; keep the ``required`` columns."""
    raw = read_rows(path) if raw is None else raw
    if len(raw) < 2:
        raise DataError("the file has no data rows", file=path)
    header_row, header_cells = raw[0]
    names = _header_names(path, header_row, header_cells)
    missing = [c for c in required if c not in names]
    if missing:
        raise DataError(
            f"missing required column(s) {missing}; the header is {names}",
            file=path,
            row=header_row,
        )
    sheet = path.suffix.lower() == ".xlsx"
    for row, cells in raw[1:]:
        # a CSV row must match the header; a sheet row only loses trailing empty cells
        if len(cells) > len(names) or (not sheet and len(cells) < len(names)):
            raise DataError(
                f"row has {len(cells)} cells but the header has {len(names)}", file=path, row=row
            )
    index = {name: names.index(name) for name in required}
    return _build(path, raw[1:], index)


def table_without_header(
    path: Path, names: Sequence[str], *, extra_ok: bool = False, raw: _RawRows | None = None
) -> Table:
    """Read a header-less CSV/xlsx: the first row is data, never skipped.

    With ``extra_ok`` rows may have more cells than ``names`` (ignored); otherwise every row must
    have exactly ``len(names)`` cells, which catches unquoted commas.
    """
    raw = read_rows(path) if raw is None else raw
    if not raw:
        raise DataError("the file has no data rows", file=path)
    sheet = path.suffix.lower() == ".xlsx"
    for row, cells in raw:
        if sheet and len(cells) < len(names):
            # spreadsheet rows lose trailing empty cells; restore them so emptiness is reported
            cells.extend([None] * (len(names) - len(cells)))
        if len(cells) != len(names) and not (extra_ok and len(cells) > len(names)):
            raise DataError(
                f"row has {len(cells)} cells, expected {len(names)} ({', '.join(names)})",
                file=path,
                row=row,
            )
    return _build(path, raw, {name: i for i, name in enumerate(names)})


def _build(path: Path, raw: _RawRows, index: dict[str, int]) -> Table:
    columns: dict[str, list[_Cell]] = {name: [] for name in index}
    for _, cells in raw:
        for name, i in index.items():
            columns[name].append(cells[i] if i < len(cells) else None)
    return Table(path, columns, [row for row, _ in raw])


def looks_like_header(raw: _RawRows, names: Sequence[str]) -> bool:
    """Whether nominally header-less rows start with exactly the header ``names``."""
    if not raw:
        return False
    first = [("" if c is None else str(c).strip().lower()) for c in raw[0][1]]
    return first == [n.lower() for n in names]


# --- column values -----------------------------------------------------------------------------


def text_column(table: Table, name: str, *, allow_empty: bool = False) -> list[str]:
    """A column as stripped strings; an empty cell is a DataError unless ``allow_empty``."""
    out: list[str] = []
    for value, row in zip(table.columns[name], table.rows, strict=True):
        text = "" if value is None else str(value).strip()
        if not text and not allow_empty:
            raise DataError(f"empty '{name}'", file=table.path, row=row)
        out.append(text)
    return out


def parse_number(value: _Cell, *, what: str, file: Path, row: int) -> float:
    """A finite float from a cell; empty, NaN, inf and text are DataErrors."""
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{what} is empty", file=file, row=row)
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(f"{what} '{value}' is not a number", file=file, row=row) from None
    if not math.isfinite(number):
        raise DataError(f"{what} '{value}' is not a finite number", file=file, row=row)
    return number


def check_scale(value: float, dim: Dimension, *, what: str, file: Path, row: int) -> float:
    """Refuse a MOS outside the dimension's declared scale (it would normalise outside [0, 1])."""
    if not dim.low <= value <= dim.high:
        raise DataError(
            f"{what} {value} is outside the scale [{dim.low:g}, {dim.high:g}]", file=file, row=row
        )
    return value


def check_std(value: float, *, what: str, file: Path, row: int) -> float:
    if value < 0:
        raise DataError(f"{what} {value} is negative", file=file, row=row)
    return value


def score_column(table: Table, name: str, dim: Dimension) -> list[float]:
    """A MOS column: finite numbers inside the dimension's scale."""
    return [
        check_scale(
            parse_number(v, what=name, file=table.path, row=r),
            dim,
            what=name,
            file=table.path,
            row=r,
        )
        for v, r in zip(table.columns[name], table.rows, strict=True)
    ]


def std_column(table: Table, name: str) -> list[float]:
    """A standard-deviation column: finite, non-negative numbers."""
    return [
        check_std(
            parse_number(v, what=name, file=table.path, row=r), what=name, file=table.path, row=r
        )
        for v, r in zip(table.columns[name], table.rows, strict=True)
    ]


# --- rows: paths, duplicates, groups, generators -----------------------------------------------


def images_folder(images: str, option: str = "images") -> str:
    """The canonical form of a reader's ``images`` option: a sub-folder of the root, or ``""``.

    Args:
        images: the option's value.
        option: the option's name, for the message (other paths under the root use this too).

    Raises:
        ConfigError: not a string, or a path that is absolute or leaves the root.
    """
    if not isinstance(images, str):
        raise ConfigError(f"{option} must be a path under the dataset root, not {images!r}")
    if images.replace("\\", "/").strip().strip("/") in ("", "."):
        return ""
    try:
        return canonical_image_path(images, file=option, row=None)
    except DataError as error:
        raise ConfigError(
            f"{option} '{images}' must be a path under the dataset root ({error.reason})"
        ) from None


def image_paths(
    names: Sequence[str], rows: Sequence[int], file: Path, images: str = ""
) -> list[str]:
    """The canonical manifest paths of a metadata file's image names, under ``images``.

    Each name is normalised on its own first (``canonical_image_path``), so a name cannot climb
    out of the ``images`` folder; duplicates must be looked for in the result, never in the raw
    names (``x.jpg`` and ``./x.jpg`` are one file).

    Raises:
        DataError: naming ``file`` and the row of an empty, absolute or escaping name.
        ConfigError: a bad ``images`` option.
    """
    folder = images_folder(images)
    out: list[str] = []
    for name, row in zip(names, rows, strict=True):
        path = canonical_image_path(name, file=file, row=row)
        out.append(f"{folder}/{path}" if folder else path)
    return out


def duplicate_rows(keys: Sequence[str]) -> dict[str, list[int]]:
    """Positions of every key that occurs more than once, in order of first appearance."""
    seen: dict[str, list[int]] = {}
    for position, key in enumerate(keys):
        seen.setdefault(key, []).append(position)
    return {key: where for key, where in seen.items() if len(where) > 1}


def check_unique(
    names: Sequence[str], rows: Sequence[int], files: Sequence[Path] | Path, what: str = "image"
) -> None:
    """A name that occurs twice is a DataError naming the file and row of the repeat."""
    per_row = [files] * len(names) if isinstance(files, Path) else list(files)
    for name, where in duplicate_rows(names).items():
        places = ", ".join(f"{per_row[p]} row {rows[p]}" for p in where)
        repeat = where[1]
        raise DataError(
            f"{what} '{name}' appears {len(where)} times ({places})",
            file=per_row[repeat],
            row=rows[repeat],
        )


def group_ids(keys: Iterable[str]) -> list[str]:
    """Stable ids ``p<index>`` in order of first appearance, zero-padded to equal width."""
    keys = list(keys)
    order: dict[str, int] = {}
    for key in keys:
        order.setdefault(key, len(order))
    width = max(3, len(str(len(order))))
    return [f"p{order[key]:0{width}d}" for key in keys]


def generators_from_names(
    names: Sequence[str], pattern: re.Pattern[str], notes: list[str]
) -> list[str]:
    """The generator captured by ``pattern`` from each file name; ``unknown`` (noted) otherwise."""
    out: list[str] = []
    for name in names:
        match = pattern.match(Path(name).name)
        out.append(match.group(1) if match else "unknown")
    unknown = out.count("unknown")
    if unknown:
        notes.append(f"{unknown} image name(s) do not encode a generator; generator = 'unknown'")
    return out


# --- assembling the manifest -------------------------------------------------------------------


def build_frame(
    base: dict[str, Sequence[object]],
    scores: dict[str, Sequence[float]],
) -> pd.DataFrame:
    """The manifest table: base columns first, then mos_/std_ columns as float."""
    frame = pd.DataFrame({name: list(base[name]) for name in BASE_COLUMNS})
    for column in ("image", "prompt", "prompt_group", "generator", "subset"):
        frame[column] = frame[column].astype(str)
    frame["labelled"] = frame["labelled"].astype(bool)
    for name, values in scores.items():
        frame[name] = np.asarray(values, dtype=float)
    return frame
