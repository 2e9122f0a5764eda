"""Logging set-up shared by every job and command (a light module: no torch import)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path


def configure_logging(log_file: str | Path | None = None) -> None:
    """Log to the per-job log file when given (the workflow's case), else to stderr."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers = [logging.FileHandler(log_file, mode="w")]
    # Libraries (open_clip logs every factory step at INFO on the root logger) stay at WARNING.
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.getLogger("agiqa").setLevel(os.environ.get("AGIQA_LOG_LEVEL", "INFO"))
