"""Where the tests find ``shared/`` (metadata fixtures, the real AGIQA-3K): beside the checkout.

CI clones the repository with ``shared/`` next to it, so a missing folder fails there instead of
skipping (``need``); on a developer machine without it, the tests that read it skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = next(
    (p for p in (REPO.parent / "shared", REPO / "shared") if p.is_dir()), REPO.parent / "shared"
)
FIXTURES = SHARED / "fixtures" / "agiqa-metadata"
AGIQA_3K = SHARED / "datasets" / "agiqa-3k"


def need(present: bool, reason: str) -> None:
    """Skip a test whose input is missing here; on CI (``CI=true``), where it must be, fail."""
    if present:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(reason + " (CI=true: this test must run)")
    pytest.skip(reason)
