"""Pieces of the describe stage: templates, cache keys and files, limits, config parsing."""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from agiqa.describe.backends import BACKENDS, Backend, BackendContext, ImageItem, Reply
from agiqa.describe.backends.openai_backend import public_endpoint, retry_after_seconds
from agiqa.describe.cache import DescriptionCache, cache_key
from agiqa.describe.images import sniff_mime
from agiqa.describe.limits import Backoff, RateLimiter
from agiqa.describe.runner import RunSettings, read_descriptions, split_entry
from agiqa.describe.templates import TEMPLATES, Template, resolve_template
from agiqa.describe.workflow import (
    describe_envvars,
    describer_datasets,
    description_path,
    description_targets,
)
from agiqa.errors import ConfigError, DataError
from test_describe_support import image_bytes


def test_registered_backends_and_templates() -> None:
    assert BACKENDS.names() == ["local", "openai", "published"]
    assert {"content_first", "quality_aware"} <= set(TEMPLATES)
    assert "50 words" in TEMPLATES["content_first"].user
    assert "distortions" in TEMPLATES["quality_aware"].user


def test_resolve_template_by_name_or_custom_text() -> None:
    assert resolve_template() == TEMPLATES["content_first"]
    custom = resolve_template(instruction="Say what you see.")
    assert (custom.name, custom.system, custom.user) == ("custom", "", "Say what you see.")
    mixed = resolve_template("quality_aware", system="Be terse.")
    assert mixed.name == "quality_aware+custom" and mixed.user == TEMPLATES["quality_aware"].user
    with pytest.raises(ConfigError, match="unknown template 'fancy'"):
        resolve_template("fancy")
    with pytest.raises(ConfigError, match="empty"):
        resolve_template(instruction="  ")


def test_cache_key_covers_every_field_that_changes_the_answer() -> None:
    fields = {
        "image_sha256": "ab" * 32,
        "backend": "openai",
        "model": "m",
        "endpoint": "https://api.example.com/v1",
        "generation": {"max_tokens": 300, "temperature": None, "seed": None},
        "system": TEMPLATES["content_first"].system,
        "instruction": TEMPLATES["content_first"].user,
    }
    key = cache_key(fields)
    assert key == cache_key(dict(reversed(list(fields.items()))))  # order does not matter
    for name, value in [
        ("image_sha256", "cd" * 32),
        ("model", "m2"),
        ("endpoint", "http://127.0.0.1:8000/v1"),
        ("generation", {"max_tokens": 300, "temperature": 0.0, "seed": None}),
        ("instruction", TEMPLATES["content_first"].user + " "),
    ]:
        assert cache_key({**fields, name: value}) != key, name


def test_cache_writes_atomically_and_refuses_or_ignores_bad_entries(tmp_path: Path) -> None:
    cache = DescriptionCache(tmp_path / "cache")
    key = cache_key({"x": 1})
    assert cache.get(key) is None
    with pytest.raises(ValueError, match="empty"):
        cache.put(key, {"description": "   "})
    assert len(cache) == 0
    path = cache.put(key, {"description": "A cat.", "model": "m"})
    assert path == tmp_path / "cache" / key[:2] / f"{key}.json"
    assert cache.get(key)["description"] == "A cat."
    assert "created" in json.loads(path.read_text())
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left over
    path.write_text('{"description": "trunc')  # as if written by a tool that is not atomic
    assert cache.get(key) is None


def test_concurrent_writers_of_one_key_leave_a_valid_entry(tmp_path: Path) -> None:
    cache = DescriptionCache(tmp_path)
    key = cache_key({"same": True})

    def write(i: int) -> None:
        for _ in range(20):
            cache.put(key, {"description": f"writer {i}"})

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.get(key)["description"].startswith("writer ")
    assert len(list(cache.path(key).parent.iterdir())) == 1


def test_mime_is_sniffed_from_content() -> None:
    assert sniff_mime(image_bytes(1, "PNG")) == "image/png"
    assert sniff_mime(image_bytes(1, "JPEG")) == "image/jpeg"
    assert sniff_mime(image_bytes(1, "WEBP")) == "image/webp"
    assert sniff_mime(b"not an image") is None


def test_retry_after_parsing_and_backoff_with_full_jitter() -> None:
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    later = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= retry_after_seconds({"retry-after": later}) <= 31
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None

    backoff, rng = Backoff(base=0.5, cap=4.0), random.Random(0)
    delays = [backoff.delay(attempt, None, rng) for attempt in range(8) for _ in range(50)]
    assert min(delays) >= 0 and max(delays) <= 4.0
    assert max(backoff.delay(0, None, rng) for _ in range(100)) <= 0.5
    honoured = [backoff.delay(0, 2.0, rng) for _ in range(100)]
    assert min(honoured) >= 2.0 and max(honoured) <= 2.2


def test_rate_limiter_spaces_requests_across_threads() -> None:
    limiter, stop = RateLimiter(rpm=1200), threading.Event()  # one start per 50 ms
    starts: list[float] = []

    def work() -> None:
        for _ in range(3):
            limiter.acquire(stop)
            starts.append(time.monotonic())

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    starts.sort()
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.04 and starts[-1] - starts[0] >= 0.38
    limiter.defer(0.2)
    before = time.monotonic()
    limiter.acquire(stop)
    assert time.monotonic() - before >= 0.19


def test_public_endpoint_drops_credentials_and_query() -> None:
    url = "https://user:pw@api.example.com:8443/v1/?key=x#frag"
    assert public_endpoint(url) == "https://api.example.com:8443/v1"


def test_describer_entry_is_split_and_checked() -> None:
    name, settings, options = split_entry(
        {"backend": "openai", "model": "m", "concurrency": 3, "datasets": ["a"], "rpm": 60}
    )
    assert name == "openai" and options == {"model": "m"}
    assert settings == RunSettings(concurrency=3, rpm=60)
    with pytest.raises(ConfigError, match="allow_failed_fraction"):
        split_entry({"backend": "openai", "allow_failed_fraction": 2})
    with pytest.raises(ConfigError, match="needs a 'backend'"):
        split_entry({"model": "m"})
    with pytest.raises(ConfigError, match=r"unknown option.*temprature"):
        BACKENDS.get("openai").from_config({"model": "m", "temprature": 0.1}, None)


def test_read_descriptions_refuses_incomplete_tables(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text(
        "image,description,status,error,backend,model,template\n"
        "a.jpg,A cat.,described,,openai,m,t\n"
        "b.jpg,,failed,HTTP 500,openai,m,t\n"
    )
    with pytest.raises(DataError, match="1 images have no description"):
        read_descriptions(path)
    assert read_descriptions(path, require_complete=False) == {"a.jpg": "A cat."}


def test_workflow_targets_and_envvars() -> None:
    config = {
        "datasets": {
            "synthetic": {"reader": "agiqa-3k", "synthesize": {}},
            "agiqa3k": {"reader": "agiqa-3k", "root": "data/agiqa-3k"},
            "twentyk": {"reader": "aigiqa-20k", "root": "data/20k"},
        },
        "describers": {
            "published": {"backend": "published"},
            "doubao": {"backend": "openai", "model": "d", "api_key_env": "ARK_API_KEY"},
            "gpt": {"backend": "openai", "model": "g", "datasets": ["agiqa3k"]},
        },
    }
    assert describer_datasets(config, "published") == ["agiqa3k"]
    assert describer_datasets(config, "doubao") == ["synthetic", "agiqa3k", "twentyk"]
    assert description_targets(config) == [
        description_path("agiqa3k", "published"),
        description_path("synthetic", "doubao"),
        description_path("agiqa3k", "doubao"),
        description_path("twentyk", "doubao"),
        description_path("agiqa3k", "gpt"),
    ]
    assert description_path("a", "b") == "results/descriptions/a/b.csv"
    assert description_path("a", "b", "results/x") == "results/x/descriptions/a/b.csv"
    assert describe_envvars(config) == ["ARK_API_KEY", "OPENAI_API_KEY"]
    assert description_targets({"datasets": config["datasets"]}) == []
    with pytest.raises(ConfigError, match="unknown dataset"):
        describer_datasets(
            {**config, "describers": {"x": {"backend": "openai", "model": "m", "datasets": ["z"]}}},
            "x",
        )


def test_model_name_comes_from_the_options_model_in_the_base_class() -> None:
    @dataclass(frozen=True)
    class Options:
        model: str

    class Minimal(Backend):  # only what a backend must write itself
        def describe(self, item: ImageItem, template: Template) -> Reply:
            return Reply(text="A cat.")

    assert Minimal(Options("m-1"), BackendContext("tiny")).model_name == "m-1"
    for name in BACKENDS.names():
        assert "model_name" not in vars(BACKENDS.get(name)), name
