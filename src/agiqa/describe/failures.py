"""Replies that are failure messages rather than descriptions ("Error", refusals).

Some endpoints answer HTTP 200 with a failure written as text: SCVA-AGIQA's published code
stored the literal ``Error`` when a request failed, and chat models refuse with "I'm sorry, I
can't ...". Such a reply is treated like any other unusable reply: never cached, retried while
attempts are left (at once a failure for backends whose answer cannot change), and counted as
failed.

A describer's ``failure_patterns`` (a list of regular expressions) replaces the defaults below;
``[]`` turns the check off. Each pattern is searched (``re.search``, case-insensitive) in the
reply with surrounding whitespace removed. The defaults are anchored at the start of the reply,
so a description that merely mentions an error ("a compression error is visible") is kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# each one is the whole opening of a failure, never a phrase a description could start with
DEFAULT_FAILURE_PATTERNS: tuple[str, ...] = (
    r"^\s*error\b",  # SCVA's stored literal, and "Error: ..." texts of proxies
    r"^\s*(?:i['’]?m|i\s+am)\s+(?:sorry|unable|not\s+able)\b",  # I'm sorry / I am unable
    r"^\s*i\s+(?:cannot|can\s+not|can['’]?t|won['’]?t|am\s+not\s+able)\b",  # I cannot help
    r"^\s*sorry\b",  # Sorry, I can't ...
    r"^\s*as\s+an\s+ai\b",  # As an AI (language model), I ...
)
SNIPPET = 60


class FailurePatterns:
    """Compiled failure patterns; ``match`` says which one a reply matches, if any.

    Raises:
        ValueError: When a pattern is not a string or not a valid regular expression (the
            message quotes the pattern).
    """

    def __init__(self, patterns: Iterable[str] | None = None) -> None:
        self.sources = tuple(DEFAULT_FAILURE_PATTERNS if patterns is None else patterns)
        self._compiled = [_compile(p) for p in self.sources]

    def match(self, text: str) -> str | None:
        """The first pattern found in ``text``, or None for a usable reply."""
        stripped = text.strip()
        for source, pattern in zip(self.sources, self._compiled, strict=True):
            if pattern.search(stripped):
                return source
        return None

    def reason(self, text: str) -> str | None:
        """A short error message for a failure reply (quotes its start), or None."""
        source = self.match(text)
        if source is None:
            return None
        stripped = " ".join(text.split())
        snippet = stripped if len(stripped) <= SNIPPET else stripped[: SNIPPET - 3] + "..."
        return f"reply is a failure message ({snippet!r} matches failure pattern '{source}')"


def check_patterns(patterns: object) -> tuple[str, ...] | None:
    """``patterns`` as a tuple of valid regular expressions (None keeps the defaults).

    Raises:
        ValueError: Naming the first bad pattern.
    """
    if patterns is None:
        return None
    if isinstance(patterns, str) or not isinstance(patterns, (list, tuple)):
        raise ValueError("failure_patterns must be a list of regular expressions")
    for pattern in patterns:
        _compile(pattern)
    return tuple(patterns)


def _compile(pattern: object) -> re.Pattern[str]:
    if not isinstance(pattern, str):
        raise ValueError(f"failure_patterns: {pattern!r} is not a string")
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as error:
        raise ValueError(
            f"failure_patterns: invalid regular expression {pattern!r}: {error}"
        ) from None
