"""The openai backend end to end against a local OpenAI-compatible server that injects faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agiqa.describe.backends import BackendContext
from agiqa.describe.backends.openai_backend import OpenAIBackend
from agiqa.describe.fake_server import FakeOpenAIServer, description_for
from agiqa.describe.runner import Describer, RunSettings
from agiqa.describe.templates import TEMPLATES
from test_describe_support import (
    KEY_ENV,
    SECRET,
    cache_files,
    describe_args,
    invoke,
    make_dataset,
    table,
)


def test_faults_end_described_or_failed_and_a_rerun_makes_zero_calls(tmp_path: Path) -> None:
    digests = make_dataset(tmp_path / "ds", 12)
    sha = list(digests.values())
    with FakeOpenAIServer(api_key=SECRET, slow_seconds=1.5, retry_after=0.4) as server:
        server.script(sha[0], "rate_limit")
        server.script(sha[1], "server_error", "server_error")
        server.script(sha[2], "slow")
        server.script(sha[3], "malformed")
        server.script(sha[4], "empty")
        server.script(sha[5], "truncated")  # cut at max_tokens: fails, not retried
        server.script(sha[6], *["server_error"] * 3)  # more than max_attempts
        server.script(sha[7], "bad_request")  # the request itself is wrong: fails at once
        server.script(sha[8], "empty", "empty", "empty")
        args = describe_args(
            tmp_path / "ds", tmp_path, server.base_url, "--concurrency", "4", "--max-attempts", "3"
        )
        args += ["--allow-failed-fraction", "0.5", "--summary-json", str(tmp_path / "s.json")]
        first = invoke(args)
        assert first.exit_code == 0, first.output

        out = table(tmp_path / "out.csv")
        status = dict(zip(out["image"], out["status"], strict=True))
        failed = {name for name, s in status.items() if s == "failed"}
        assert failed == {f"gen_normal_{i:03d}.jpg" for i in (5, 6, 7, 8)}
        assert set(status.values()) == {"described", "failed"}
        assert (out.loc[out["status"] == "failed", "description"] == "").all()
        errors = dict(zip(out["image"], out["error"], strict=True))
        assert "truncated" in errors["gen_normal_005.jpg"]
        assert (
            "HTTP 500" in errors["gen_normal_006.jpg"]
            and "3 attempts" in errors["gen_normal_006.jpg"]
        )
        assert "HTTP 400" in errors["gen_normal_007.jpg"]
        assert "empty reply" in errors["gen_normal_008.jpg"]
        for name, text in zip(out["image"], out["description"], strict=True):
            if status[name] == "described":
                assert text == description_for(digests[name])

        # only usable descriptions were cached, each exactly as the server wrote it
        cached = [json.loads(p.read_text()) for p in cache_files(tmp_path / "cache")]
        assert len(cached) == 8
        assert {c["description"] for c in cached} == {
            description_for(digests[n]) for n, s in status.items() if s == "described"
        }
        calls = server.calls_per_image()
        assert calls[sha[5]] == 1 and calls[sha[7]] == 1 and calls[sha[6]] == 3
        summary = json.loads((tmp_path / "s.json").read_text())
        assert (summary["described"], summary["cached"], summary["failed"]) == (8, 0, 4)

        # Retry-After was honoured: the retry came at least 0.4 s after the 429
        times = [r.received for r in server.records if r.image_sha256 == sha[0]]
        assert times[1] - times[0] >= 0.4

        # second run: only the 4 failed images are asked again (the faults are used up)
        server.reset_counts()
        second = invoke(args)
        assert second.exit_code == 0, second.output
        asked = set(server.calls_per_image())
        assert asked == {digests[name] for name in failed} and server.calls == 4
        assert set(table(tmp_path / "out.csv")["status"]) == {"cached", "described"}

        # third run: everything comes from the cache, zero calls
        server.reset_counts()
        third = invoke(args)
        assert third.exit_code == 0, third.output
        assert server.calls == 0
        assert set(table(tmp_path / "out.csv")["status"]) == {"cached"}
        assert "cached 12, failed 0" in third.output


def test_job_fails_listing_failed_images_unless_a_fraction_is_allowed(tmp_path: Path) -> None:
    digests = make_dataset(tmp_path / "ds", 6)
    bad = digests["gen_normal_004.jpg"]
    with FakeOpenAIServer(api_key=SECRET) as server:
        server.script(bad, *["server_error"] * 10)
        args = describe_args(tmp_path / "ds", tmp_path, server.base_url, "--max-attempts", "2")
        result = invoke(args)
        assert result.exit_code == 1
        assert "1 of 6 images failed" in result.output and "gen_normal_004.jpg" in result.output
        # the other five were cached, so allowing one failure in six costs 2 new calls only
        server.reset_counts()
        allowed = invoke([*args, "--allow-failed-fraction", "0.2"])
        assert allowed.exit_code == 0, allowed.output
        assert server.calls == 2 and set(server.calls_per_image()) == {bad}
        assert "cached 5, failed 1" in allowed.output


def test_request_carries_true_mime_type_template_and_generation_params(tmp_path: Path) -> None:
    digests = make_dataset(tmp_path / "ds", 3)
    with FakeOpenAIServer(api_key=SECRET) as server:
        extra = ["--template", "quality_aware", "--max-tokens", "77", "--temperature", "0.0"]
        args = describe_args(tmp_path / "ds", tmp_path, server.base_url, *extra, "--seed", "5")
        assert invoke(args).exit_code == 0
        by_image = {r.image_sha256: r for r in server.records}
    png_named_jpg = by_image[digests["gen_normal_000.jpg"]]
    assert png_named_jpg.mime == "image/png"
    assert by_image[digests["gen_normal_001.jpg"]].mime == "image/jpeg"
    body = png_named_jpg.body
    assert body["model"] == "fake-vlm" and body["max_tokens"] == 77
    assert body["temperature"] == 0.0 and body["seed"] == 5
    assert body["messages"][0] == {"role": "system", "content": TEMPLATES["quality_aware"].system}
    assert body["messages"][1]["content"][0]["text"] == TEMPLATES["quality_aware"].user
    assert set(table(tmp_path / "out.csv")["template"]) == {"quality_aware"}


def test_changing_the_instruction_or_params_misses_the_cache(tmp_path: Path) -> None:
    make_dataset(tmp_path / "ds", 2)
    with FakeOpenAIServer(api_key=SECRET) as server:
        base = describe_args(tmp_path / "ds", tmp_path, server.base_url)
        assert invoke(base).exit_code == 0 and server.calls == 2
        assert invoke(base).exit_code == 0 and server.calls == 2
        assert invoke([*base, "--instruction", "Describe it."]).exit_code == 0
        assert server.calls == 4
        assert invoke([*base, "--max-tokens", "123"]).exit_code == 0
        assert server.calls == 6


def test_the_api_key_never_reaches_any_written_file(tmp_path: Path) -> None:
    digests = make_dataset(tmp_path / "ds", 5)
    # the server quotes the key it got in its error messages, as some real APIs do
    with FakeOpenAIServer(api_key=SECRET, echo_key=True) as server:
        server.script(digests["gen_normal_001.jpg"], "rate_limit", "server_error", "malformed")
        server.script(digests["gen_normal_002.jpg"], "bad_request")
        args = describe_args(tmp_path / "ds", tmp_path, server.base_url)
        args += ["--log", str(tmp_path / "logs" / "job.log")]
        args += ["--summary-json", str(tmp_path / "summary.json")]
        ok = invoke([*args, "--allow-failed-fraction", "0.2"])
        assert ok.exit_code == 0, ok.output
        assert "***" in table(tmp_path / "out.csv")["error"].str.cat()
        # a wrong key: the job stops at once with a clear message and still leaks nothing
        wrong = invoke([*args, "--cache-dir", str(tmp_path / "cache2")], key="sk-wrong-key-0000")
        assert wrong.exit_code == 1
    log_text = (tmp_path / "logs" / "job.log").read_text()
    assert "HTTP 401" in log_text and "stopped" in log_text
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "ds" not in p.parts]
    assert len(written) >= 5
    for path in written:
        assert SECRET.encode() not in path.read_bytes(), path
        assert b"sk-wrong-key-0000" not in path.read_bytes(), path
    assert SECRET not in ok.output and SECRET not in wrong.output


def test_missing_key_is_a_clear_error_naming_the_variable(tmp_path: Path) -> None:
    make_dataset(tmp_path / "ds", 1)
    result = invoke(describe_args(tmp_path / "ds", tmp_path, "http://127.0.0.1:9/v1"), key=None)
    assert result.exit_code == 2
    assert KEY_ENV in result.output and "not set" in result.output
    assert not (tmp_path / "out.csv").exists()


def test_budget_stops_cleanly_and_a_rerun_resumes(tmp_path: Path) -> None:
    make_dataset(tmp_path / "ds", 6)
    with FakeOpenAIServer(api_key=SECRET) as server:
        args = describe_args(tmp_path / "ds", tmp_path, server.base_url, "--concurrency", "1")
        # each reply costs 150 tokens: the budget is spent after the third request
        result = invoke([*args, "--budget-tokens", "400"])
        assert result.exit_code == 1
        assert "token budget exhausted after 3 images" in result.output
        assert "3 images were not requested" in result.output
        assert server.calls == 3 and len(cache_files(tmp_path / "cache")) == 3
        out = table(tmp_path / "out.csv")
        assert list(out["status"]) == ["described"] * 3 + ["failed"] * 3
        server.reset_counts()
        assert invoke([*args, "--budget-tokens", "10000"]).exit_code == 0
        assert server.calls == 3


def test_a_rejected_key_stops_the_job_early(tmp_path: Path) -> None:
    digests = make_dataset(tmp_path / "ds", 20)
    with FakeOpenAIServer(api_key=SECRET, default="unauthorized") as server:
        result = invoke(describe_args(tmp_path / "ds", tmp_path, server.base_url))
        assert result.exit_code == 1 and "stopped: HTTP 401" in result.output
        assert server.calls < len(digests)


def test_interrupted_run_resumes_without_requesting_finished_images(tmp_path: Path) -> None:
    n = 24
    make_dataset(tmp_path / "ds", n)
    cache = tmp_path / "cache"
    with FakeOpenAIServer(api_key=SECRET, latency=0.1) as server:
        args = describe_args(tmp_path / "ds", tmp_path, server.base_url, "--concurrency", "2")
        env = {**os.environ, KEY_ENV: SECRET}
        process = subprocess.Popen(
            [sys.executable, "-m", "agiqa.cli", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while len(cache_files(cache)) < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        finished = {json.loads(p.read_text())["image_sha256"] for p in cache_files(cache)}
        assert 8 <= len(finished) < n
        assert not (tmp_path / "out.csv").exists()
        assert not list(cache.glob("*/.*.tmp")), "a temporary file survived"

        # SIGTERM (how Snakemake cancels a job) stops cleanly: in-flight replies get cached
        server.reset_counts()
        terminated = subprocess.Popen(
            [sys.executable, "-m", "agiqa.cli", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        while len(cache_files(cache)) < len(finished) + 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        terminated.send_signal(signal.SIGTERM)
        _, stderr = terminated.communicate(timeout=10)
        assert terminated.returncode == 130, stderr
        assert "interrupted" in stderr and not (tmp_path / "out.csv").exists()
        answered = {r.image_sha256 for r in server.records if r.fault == "ok"}
        finished = {json.loads(p.read_text())["image_sha256"] for p in cache_files(cache)}
        assert answered <= finished, "a reply the server sent was not cached"

        server.reset_counts()
        rerun = subprocess.run(
            [sys.executable, "-m", "agiqa.cli", *args], env=env, capture_output=True, text=True
        )
        assert rerun.returncode == 0, rerun.stderr
        asked = server.calls_per_image()
        assert not finished & set(asked), "a finished image was requested again"
        assert server.calls == n - len(finished)
        assert max(asked.values()) == 1
        out = table(tmp_path / "out.csv")
        assert (out["status"] == "cached").sum() == len(finished)
        assert (out["status"] != "failed").all()


def _peak_concurrency(tmp_path: Path, server: FakeOpenAIServer, concurrency: int, n: int) -> int:
    backend = OpenAIBackend.from_config(
        {"model": "fake-vlm", "base_url": server.base_url, "api_key_env": KEY_ENV},
        BackendContext("tiny"),
    )
    settings = RunSettings(concurrency=concurrency, cache_dir=str(tmp_path / f"c{concurrency}"))
    describer = Describer(backend, TEMPLATES["content_first"], settings, tmp_path / "ds")
    images = [f"gen_normal_{i:03d}.jpg" for i in range(n)]
    server.reset_counts()
    _, summary = describer.run(images, "bench")
    backend.close()
    assert summary.described == n
    return server.peak_in_flight


def test_requests_overlap_up_to_the_concurrency_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Throughput itself is measured by `python -m agiqa.describe.bench` (docs/performance.md),
    not asserted here: timings on a shared machine are noisy. Overlap is what makes it scale."""
    make_dataset(tmp_path / "ds", 16)
    monkeypatch.setenv(KEY_ENV, SECRET)
    with FakeOpenAIServer(api_key=SECRET, latency=0.1) as server:
        assert _peak_concurrency(tmp_path, server, 1, 16) == 1
        assert 1 < _peak_concurrency(tmp_path, server, 8, 16) <= 8
