"""Shared limits of a describe job: requests per minute, backoff delays and the token budget."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from agiqa.describe.backends.base import Usage


class RateLimiter:
    """Spaces request starts at least ``60 / rpm`` seconds apart, across all worker threads.

    ``defer`` pushes every later start past a moment (a server's Retry-After), so one 429 slows
    all workers instead of each finding out by itself.
    """

    def __init__(self, rpm: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        if rpm is not None and rpm <= 0:
            raise ValueError("rpm must be positive")
        self.interval = 60.0 / rpm if rpm else 0.0
        self._clock = clock
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self, stop: threading.Event) -> bool:
        """Wait for this request's slot; False when ``stop`` was set meanwhile."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        wait = slot - now
        if wait > 0:
            return not stop.wait(wait)
        return not stop.is_set()

    def defer(self, seconds: float) -> None:
        """No request starts within ``seconds`` from now."""
        with self._lock:
            self._next = max(self._next, self._clock() + seconds)


@dataclass(frozen=True)
class Backoff:
    """Retry delays: exponential with full jitter, or the server's Retry-After when given.

    Attempt ``n`` (0-based) waits uniform(0, min(cap, base * 2**n)) seconds. A Retry-After is
    honoured as given (up to ``max_retry_after``) plus up to 10 % jitter, so workers told the
    same moment do not all return at once.
    """

    base: float = 1.0
    cap: float = 60.0
    max_retry_after: float = 600.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        if retry_after is not None:
            honoured = min(retry_after, self.max_retry_after)
            return honoured + rng.uniform(0, 0.1 * max(honoured, self.base))
        return rng.uniform(0, min(self.cap, self.base * 2**attempt))


class TokenBudget:
    """Tokens spent by the job; once ``limit`` is reached no new request is started.

    Requests already in flight finish (and are cached), so the total can exceed the limit by at
    most the usage of ``concurrency`` requests.
    """

    def __init__(self, limit: int | None) -> None:
        if limit is not None and limit <= 0:
            raise ValueError("budget_tokens must be positive")
        self.limit = limit
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._lock = threading.Lock()

    def add(self, usage: Usage) -> None:
        with self._lock:
            self.prompt_tokens += usage.prompt_tokens
            self.completion_tokens += usage.completion_tokens

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def exhausted(self) -> bool:
        return self.limit is not None and self.tokens >= self.limit
