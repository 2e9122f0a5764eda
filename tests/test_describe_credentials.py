"""Credentials in a describer config are refused before they can become params or logs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agiqa.describe.credentials import check_no_credentials, url_credentials
from agiqa.describe.runner import split_entry
from agiqa.describe.workflow import (
    describe_envvars,
    describe_params,
    description_targets,
)
from agiqa.errors import ConfigError
from test_describe_support import SECRET, describe_args, invoke, make_dataset

BASE = {"backend": "openai", "model": "m", "base_url": "https://api.example.com/v1"}


@pytest.mark.parametrize(
    "extra",
    [
        {"api_key": SECRET},
        {"key": SECRET},
        {"token": SECRET},
        {"password": SECRET},
        {"secret": SECRET},
        {"API-Key": SECRET},
        {"apiKey": SECRET},
        {"openai_api_key": SECRET},
        {"access_token": SECRET},
        {"client_secret": SECRET},
        {"authorization": f"Bearer {SECRET}"},
        {"headers": {"Authorization": f"Bearer {SECRET}"}},
    ],
)
def test_credential_keys_are_refused_pointing_to_api_key_env(extra: dict[str, Any]) -> None:
    config = {"describers": {"doubao": {**BASE, **extra}}}
    for call in (
        lambda: describe_params(config, "doubao"),
        lambda: describe_envvars(config),
        lambda: description_targets({"datasets": {}, **config}),
        lambda: split_entry({**BASE, **extra}),
    ):
        with pytest.raises(ConfigError, match="api_key_env") as error:
            call()
        assert SECRET not in str(error.value)
    with pytest.raises(ConfigError, match=r"describer 'doubao': '.*' looks like a credential"):
        describe_params(config, "doubao")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"https://user:{SECRET}@api.example.com/v1", "user info"),
        (f"https://{SECRET}@api.example.com/v1", "user info"),
        (f"HTTP://u:{SECRET}@127.0.0.1:8000", "user info"),
        (f"https://api.example.com/v1?api-key={SECRET}", "query parameter 'api-key'"),
        (f"https://api.example.com/v1?x=1&access_token={SECRET}", "'access_token'"),
    ],
)
def test_urls_with_credentials_are_refused_without_echoing_them(url: str, problem: str) -> None:
    assert problem in (url_credentials(url) or "")
    for entry in ({**BASE, "base_url": url}, {"backend": "published", "url": url}):
        with pytest.raises(ConfigError, match="api_key_env") as error:
            describe_params({"describers": {"d": entry}}, "d")
        message = str(error.value)
        assert "describer 'd'" in message and "carries credentials" in message
        assert SECRET not in message and "user:" not in message


def test_ordinary_entries_pass() -> None:
    entry = {
        **BASE,
        "api_key_env": "ARK_API_KEY",
        "max_tokens": 300,
        "max_tokens_param": "max_completion_tokens",
        "budget_tokens": 10_000,
        "min_new_tokens": 3,
        "instruction": "Describe the image (see https://example.com/guide?lang=en).",
        "failure_patterns": [r"^\s*error\b"],
        "datasets": ["agiqa-3k"],
    }
    check_no_credentials(entry)
    # every key must also be a job setting or an option of the backend (min_new_tokens is not)
    with pytest.raises(ConfigError, match="unknown option"):
        describe_params({"describers": {"d": entry}}, "d")
    known = {k: v for k, v in entry.items() if k not in ("min_new_tokens", "instruction")}
    assert describe_params({"describers": {"d": known}}, "d")["api_key_env"] == "ARK_API_KEY"
    for url in ("file:///data/answers.csv", "http://127.0.0.1:8000/v1", "mailto:a@b.c"):
        assert url_credentials(url) is None, url


def test_the_command_refuses_a_base_url_with_credentials(tmp_path: Path) -> None:
    make_dataset(tmp_path / "ds", 1)
    url = f"http://user:{SECRET}@127.0.0.1:9/v1"
    result = invoke(describe_args(tmp_path / "ds", tmp_path, url))
    assert result.exit_code == 2, result.output
    assert "carries credentials" in result.output and "api_key_env" in result.output
    assert SECRET not in result.output
    assert not (tmp_path / "out.csv").exists()
