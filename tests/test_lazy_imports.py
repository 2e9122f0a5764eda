"""A fold job imports only its own model's libraries (per-job start-up, docs/performance.md)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agiqa.errors import ConfigError
from agiqa.models import MODEL_MODULES, MODELS

PROBE = """
import sys
import agiqa.pipeline, agiqa.train.fold
from agiqa.models import MODELS
MODELS.get("imagenet_probe")
print(sorted(m for m in ("open_clip", "transformers", "peft", "timm") if m in sys.modules))
"""


def test_a_probe_job_does_not_import_the_other_models_libraries() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_every_lazy_type_registers_itself() -> None:
    for name in MODEL_MODULES:
        assert MODELS.get(name).__module__ == MODEL_MODULES[name]
    assert MODELS.names() == sorted(MODEL_MODULES)


def test_unknown_types_still_get_suggestions() -> None:
    with pytest.raises(ConfigError, match="Did you mean deqa"):
        MODELS.get("deqa_")
