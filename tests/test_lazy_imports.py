"""A fold job imports only its own model's libraries, and the workflow's parse none of them.

Per-job start-up and the paper dry run's time depend on it (docs/performance.md).
"""

from __future__ import annotations

import json
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


#: What the workflow imports at parse time, then its check of every model entry of the paper grid.
PARSE = """
import json, sys
import yaml
import agiqa.cross_dataset, agiqa.data.split_info, agiqa.describe.workflow, agiqa.pipeline
import agiqa.report.aggregate
from agiqa.config_checks import check_config
with open("config/paper.yaml") as config:
    check_config(yaml.safe_load(config))
heavy = ("open_clip", "transformers", "peft", "timm", "torchvision", "scipy", "openai", "mlflow")
print(json.dumps({"heavy": [m for m in heavy if m in sys.modules], "modules": sorted(sys.modules)}))
"""


def test_the_workflow_parse_checks_every_model_without_their_libraries() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PARSE], capture_output=True, text=True, check=True
    )
    loaded = json.loads(result.stdout)
    assert loaded["heavy"] == []
    assert set(MODEL_MODULES.values()) <= set(loaded["modules"])  # every entry was checked


def test_every_lazy_type_registers_itself() -> None:
    for name in MODEL_MODULES:
        assert MODELS.get(name).__module__ == MODEL_MODULES[name]
    assert MODELS.names() == sorted(MODEL_MODULES)


def test_unknown_types_still_get_suggestions() -> None:
    with pytest.raises(ConfigError, match="Did you mean deqa"):
        MODELS.get("deqa_")
