"""Errors that name the file and row at fault, so bad input never passes silently."""

from __future__ import annotations

from pathlib import Path


class AgiqaError(Exception):
    """Base class of the errors agiqa raises on purpose."""


class DataError(AgiqaError):
    """Bad dataset input: missing or undecodable image, NaN score, duplicate name, unsafe path.

    ``row`` is the 1-based row number as a person sees it in the file: a spreadsheet's row number,
    or the line number of a CSV (the header, when there is one, is row 1).
    """

    def __init__(self, message: str, *, file: str | Path | None = None, row: int | None = None):
        self.file = None if file is None else str(file)
        self.row = row
        self.reason = message
        where = ""
        if self.file is not None:
            where = self.file if row is None else f"{self.file}, row {row}"
        super().__init__(f"{where}: {message}" if where else message)


class ConfigError(AgiqaError):
    """An invalid or inconsistent configuration."""
