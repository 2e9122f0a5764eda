"""VLM descriptions of dataset images: cached, resumable, robust (``agiqa describe``).

- ``runner``: the job (manifest -> table), concurrency, retries, rate limit, budget, summary;
- ``backends``: ``openai`` (any OpenAI-compatible endpoint), ``published`` (SCVA-AGIQA's
  released descriptions) and ``local`` (a transformers image-to-text model);
- ``templates``: the instruction texts (``content_first``, ``quality_aware``, ``content_only``);
- ``cache``: one JSON file per request key, written atomically;
- ``workflow``: targets and settings for ``workflow/rules/describe.smk``;
- ``fake_server`` and ``bench``: a local OpenAI-compatible server for tests and the benchmark.

Models that take descriptions read the table with ``read_descriptions``.
"""

from agiqa.describe.runner import (
    TABLE_COLUMNS,
    DescribeFailed,
    RunSettings,
    Summary,
    read_descriptions,
    run_describe,
)
from agiqa.describe.templates import TEMPLATES, Template, resolve_template

__all__ = [
    "TABLE_COLUMNS",
    "TEMPLATES",
    "DescribeFailed",
    "RunSettings",
    "Summary",
    "Template",
    "read_descriptions",
    "resolve_template",
    "run_describe",
]
