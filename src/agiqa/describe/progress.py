"""Progress of a describe job: a rich bar on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import logging
import time
from typing import Protocol

log = logging.getLogger("agiqa.describe")


class Progress(Protocol):
    def update(self, done: int, tokens: int, failed: int) -> None: ...

    def close(self) -> None: ...


class LogProgress:
    """One log line per ``every`` images or per ``seconds``, whichever comes first."""

    def __init__(self, total: int, label: str, *, seconds: float = 30.0) -> None:
        self.total = total
        self.label = label
        self.every = max(1, total // 10)
        self.seconds = seconds
        self.start = self._last_time = time.monotonic()
        self._last_done = 0

    def update(self, done: int, tokens: int, failed: int) -> None:
        now = time.monotonic()
        step = done - self._last_done >= self.every or now - self._last_time >= self.seconds
        if not step and done < self.total:
            return
        self._last_done, self._last_time = done, now
        elapsed = max(now - self.start, 1e-9)
        rate = done / elapsed
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        log.info(
            "%s: %d/%d (%.0f%%), %.2f images/s, ETA %s, %s tokens, %d failed",
            self.label,
            done,
            self.total,
            100 * done / max(self.total, 1),
            rate,
            format_duration(eta),
            f"{tokens:,}",
            failed,
        )

    def close(self) -> None:
        pass


class RichProgress:
    """A live bar with images/s, ETA, tokens so far and failures (only on a terminal)."""

    def __init__(self, total: int, label: str) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[tokens]} tok, {task.fields[failed]} failed"),
            console=Console(stderr=True),
            transient=False,
        )
        self._task = self._bar.add_task(label, total=total, rate="", tokens="0", failed=0)
        self._bar.start()

    def update(self, done: int, tokens: int, failed: int) -> None:
        speed = self._bar.tasks[0].speed
        rate = f"{speed:.2f} img/s" if speed else ""
        self._bar.update(self._task, completed=done, rate=rate, tokens=f"{tokens:,}", failed=failed)

    def close(self) -> None:
        self._bar.stop()


def make_progress(total: int, label: str, *, interactive: bool) -> Progress:
    return RichProgress(total, label) if interactive else LogProgress(total, label)


def format_duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
