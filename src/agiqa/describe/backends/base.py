"""What every description backend provides, and the errors that steer the retry loop.

A backend answers one request per ``describe`` call; the runner owns retries, rate limiting,
the budget and the cache, so every backend gets the same robustness for free. A backend says
how a failure should be handled by the error it raises:

- ``TransientError``: worth retrying (429, 5xx, timeout, connection error, malformed reply);
- ``PermanentError``: this image fails, the others go on (e.g. HTTP 400, missing description);
- ``FatalError``: every request would fail the same way (bad key, unknown model): stop the job.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from agiqa.describe.templates import Template
from agiqa.errors import AgiqaError, ConfigError
from agiqa.registry import Registry


class BackendError(AgiqaError):
    """A failed request; ``str(error)`` is short and never holds a secret."""


class TransientError(BackendError):
    """A failure worth retrying; ``retry_after`` is the server's requested wait in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(BackendError):
    """This image cannot be described by this backend; retrying would not help."""


class FatalError(BackendError):
    """Every request would fail this way: the job stops scheduling requests."""


@dataclass(frozen=True)
class Usage:
    """Tokens a request consumed (zeros when the server does not report usage)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Reply:
    """One answer. ``finish_reason`` is ``stop`` for a complete one, ``length`` when cut."""

    text: str
    finish_reason: str = "stop"
    usage: Usage = Usage()
    model: str = ""
    fingerprint: str | None = None


@dataclass(frozen=True)
class ImageItem:
    """An image to describe: its manifest path and, for image backends, its bytes."""

    image: str
    path: Path | None = None
    data: bytes = b""
    sha256: str = ""
    mime: str = ""


@dataclass(frozen=True)
class BackendContext:
    """What a backend may need to know about the job besides its own options."""

    dataset: str
    reader: str | None = None
    root: Path | None = None


class Backend(ABC):
    """One way of producing descriptions; subclasses register in ``BACKENDS``.

    Class attributes:
        needs_image: The runner reads, hashes and passes the image bytes.
        cacheable: Answers go through the description cache (False for table lookups).
        max_concurrency: Upper bound on concurrent ``describe`` calls (None: no bound).
        fixed_template: Label of the instruction the backend's texts were written under, when
            it ignores the configured template (published tables).
        repeatable: The same request always gets the same reply (table lookup, greedy
            decoding), so an unusable reply fails at once instead of being retried.
        location_options: Config keys that say only where pinned content is read from (a
            mirror, a download folder): they stay out of the workflow's params, so moving a
            mirror reruns nothing. The content itself must be pinned by another key (sha256).

    ``Options`` is a dataclass of the backend's config keys; its ``model`` field is the model
    written into the output table (override ``model_name`` when there is none).
    """

    needs_image: ClassVar[bool] = True
    cacheable: ClassVar[bool] = True
    max_concurrency: ClassVar[int | None] = None
    fixed_template: ClassVar[str | None] = None
    repeatable: ClassVar[bool] = False
    location_options: ClassVar[frozenset[str]] = frozenset()
    Options: ClassVar[type]

    def __init__(self, options: Any, context: BackendContext) -> None:
        self.options = options
        self.context = context

    @classmethod
    def from_config(cls, entries: Mapping[str, Any], context: BackendContext) -> Backend:
        """Build the backend from its config keys; an unknown key is a ConfigError."""
        return cls(parse_options(cls.Options, entries, cls.__name__), context)

    @property
    def model_name(self) -> str:
        """The model written into the output table."""
        return str(self.options.model)

    def identity(self) -> dict[str, Any]:
        """Everything about the backend that can change an answer (goes into the cache key)."""
        return {}

    @abstractmethod
    def describe(self, item: ImageItem, template: Template) -> Reply:
        """Make one request (no retries) and return the reply or raise a BackendError."""

    def redact(self, text: str) -> str:
        """``text`` with any secret the backend holds masked out."""
        return text

    def close(self) -> None:  # noqa: B027 (optional hook, most backends hold nothing)
        """Release clients, models, files."""


BACKENDS: Registry[type[Backend]] = Registry("description backend")


def parse_options(options_class: type, entries: Mapping[str, Any], owner: str) -> Any:
    """Instantiate a dataclass of options from config entries, naming unknown keys."""
    known = {f.name for f in dataclasses.fields(options_class)}
    unknown = sorted(set(entries) - known)
    if unknown:
        raise ConfigError(
            f"{owner}: unknown option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    try:
        return options_class(**entries)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{owner}: {error}") from None
