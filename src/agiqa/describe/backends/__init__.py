"""Description backends behind one registry: ``openai``, ``published`` and ``local``.

Adding a backend means one module with a ``Backend`` subclass registered in ``BACKENDS``; the
runner gives it caching, retries, rate limiting and the budget.
"""

from __future__ import annotations

from agiqa.describe.backends import local, openai_backend, published
from agiqa.describe.backends.base import (
    BACKENDS,
    Backend,
    BackendContext,
    BackendError,
    FatalError,
    ImageItem,
    PermanentError,
    Reply,
    TransientError,
    Usage,
)

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendContext",
    "BackendError",
    "FatalError",
    "ImageItem",
    "PermanentError",
    "Reply",
    "TransientError",
    "Usage",
]

# imported for their registration side effect; heavy dependencies load only when instantiated
_REGISTERED = (local, openai_backend, published)
