"""Replies that are failure messages rather than descriptions ("Error", refusals).

Some endpoints answer HTTP 200 with a failure written as text: SCVA-AGIQA's published code
stored the literal ``Error`` when a request failed, and chat models refuse with "I'm sorry, I
can't ...". Such a reply is treated like any other unusable reply: never cached, retried while
attempts are left (at once a failure for backends whose answer cannot change), and counted as
failed.

A describer's ``failure_patterns`` (a list of regular expressions) replaces the defaults below;
``[]`` turns the check off. Each pattern is searched (``re.search``, case-insensitive) in the
reply with surrounding whitespace removed, and again with leading markup removed (``**Error**``,
``[ERROR]``, ``> Error``). The defaults are anchored at the start of the reply, so a description
that merely mentions an error ("a compression error is visible") is kept. They cover refusals
in English, Spanish, French, German and Chinese and HTTP error texts.

Before the patterns, every reply must have the shape of a description (``shape_problem``),
whatever the patterns: no control characters (NUL bytes), not a JSON value (``null``,
``{"error": ...}``, ``{"foo": 1}``), not an HTML page (a proxy's 502), at least
``MIN_LETTERS`` letters (``N/A``), and mostly in the script of the instruction (an English
instruction answered in Chinese is a refusal or a wrong model, not a description). A byte-order
mark or zero-width character is removed first (``normalise_reply``).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable

# each one is the whole opening of a failure, never a phrase a description could start with
DEFAULT_FAILURE_PATTERNS: tuple[str, ...] = (
    r"^\s*error\b",  # SCVA's stored literal, and "Error: ..." texts of proxies
    r"^\s*(?:i['’]?m|i\s+am)\s+(?:sorry|unable|not\s+able)\b",  # I'm sorry / I am unable
    r"^\s*i\s+(?:cannot|can\s+not|can['’]?t|won['’]?t|am\s+not\s+able)\b",  # I cannot help
    r"^\s*sorry\b",  # Sorry, I can't ...
    r"^\s*as\s+an\s+ai\b",  # As an AI (language model), I ...
    r"^\s*i\s+apologi[sz]e\b",  # I apologize, but ...
    r"^\s*(?:lo\s+siento|lo\s+lamento|no\s+puedo|disculp)",  # Spanish refusals
    r"^\s*(?:je\s+suis\s+d[ée]sol[ée]|d[ée]sol[ée]|je\s+ne\s+peux\s+pas)",  # French
    r"^\s*(?:es\s+tut\s+mir\s+leid|ich\s+kann\s+(?:leider\s+)?nicht)",  # German
    r"^\s*(?:很?抱歉|对不起|對不起|我无法|我無法|我不能)",  # Chinese: sorry / I cannot
    r"^\s*(?:\d{3}\s+)?(?:bad\s+gateway|service\s+unavailable|internal\s+server\s+error"
    r"|gateway\s+time-?out|too\s+many\s+requests)\b",  # HTTP error pages as plain text
)
SNIPPET = 60
#: A description has at least this many letters ("N/A", "null", "-" have fewer).
MIN_LETTERS = 12
#: Share of a reply's letters that must be in the instruction's script.
MIN_SCRIPT_SHARE = 0.5
_INVISIBLE = dict.fromkeys(map(ord, "\ufeff\u200b\u200c\u200d\u2060"))
_MARKUP = re.compile(r"^[\s*_#>`~\[\](){}<>\"'|=:-]+")
_HTML = re.compile(r"<\s*(?:!doctype|html|head|body|title|h1|center|div|meta)\b", re.IGNORECASE)
_ENVELOPE = re.compile(r'^\s*[\[{]\s*"?(?:error|errors|detail|message|code)"?\s*:', re.IGNORECASE)


def normalise_reply(text: str) -> str:
    """The reply without a byte-order mark or zero-width characters, stripped."""
    return text.translate(_INVISIBLE).strip()


def script_of(text: str) -> str | None:
    """The script most of ``text``'s letters are written in (``LATIN``, ``CJK``, ...)."""
    scripts = Counter(_script(char) for char in text if char.isalpha())
    return scripts.most_common(1)[0][0] if scripts else None


def _script(char: str) -> str:
    name = unicodedata.name(char, "UNKNOWN")
    return "CJK" if name.startswith(("CJK", "HIRAGANA", "KATAKANA")) else name.split()[0]


def shape_problem(text: str, script: str | None = None) -> str | None:
    """Why ``text`` (normalised) cannot be a description, whatever it says; None if it can."""
    controls = [c for c in text if unicodedata.category(c) == "Cc" and c not in "\n\r\t"]
    if controls:
        return f"reply holds {len(controls)} control character(s) such as {controls[0]!r}"
    if _HTML.search(text):
        return "reply is an HTML page, not a description"
    if _ENVELOPE.match(text) or _is_json(text):
        return "reply is a JSON value, not a description"
    letters = [c for c in text if c.isalpha()]
    if len(letters) < MIN_LETTERS:
        return f"reply is too short to be a description ({len(letters)} letters)"
    if script is not None:
        share = sum(_script(c) == script for c in letters) / len(letters)
        if share < MIN_SCRIPT_SHARE:
            return (
                f"reply is mostly not in the instruction's script ({script}: "
                f"{100 * share:.0f}% of its letters)"
            )
    return None


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True  # a quoted string, number, null, object or array: none is a description


class FailurePatterns:
    """Compiled failure patterns; ``match`` says which one a reply matches, if any.

    Raises:
        ValueError: When a pattern is not a string or not a valid regular expression (the
            message quotes the pattern).
    """

    def __init__(self, patterns: Iterable[str] | None = None, script: str | None = None) -> None:
        self.sources = tuple(DEFAULT_FAILURE_PATTERNS if patterns is None else patterns)
        self._compiled = [_compile(p) for p in self.sources]
        #: The instruction's script (``script_of``); None checks no script.
        self.script = script

    def match(self, text: str) -> str | None:
        """The first pattern found in ``text`` (as is, or after leading markup), or None."""
        stripped = normalise_reply(text)
        variants = dict.fromkeys((stripped, _MARKUP.sub("", stripped)))
        for source, pattern in zip(self.sources, self._compiled, strict=True):
            if any(pattern.search(variant) for variant in variants):
                return source
        return None

    def reason(self, text: str) -> str | None:
        """A short error message for an unusable reply (quotes its start), or None."""
        normal = normalise_reply(text)
        stripped = " ".join(normal.split())
        snippet = stripped if len(stripped) <= SNIPPET else stripped[: SNIPPET - 3] + "..."
        source = self.match(normal)
        if source is not None:
            return f"reply is a failure message ({snippet!r} matches failure pattern '{source}')"
        problem = shape_problem(normal, self.script)
        return None if problem is None else f"{problem} ({snippet!r})"


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
