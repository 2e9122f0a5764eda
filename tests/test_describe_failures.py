"""Replies that are failure messages ("Error", refusals): never cached, retried, counted failed."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from agiqa.describe.backends import Backend, BackendContext, ImageItem, Reply
from agiqa.describe.failures import DEFAULT_FAILURE_PATTERNS, FailurePatterns, script_of
from agiqa.describe.fake_server import (
    ERROR_TEXT,
    REFUSAL_TEXT,
    FakeOpenAIServer,
    description_for,
    mentions_error_for,
)
from agiqa.describe.runner import Describer, RunSettings, run_describe, split_entry
from agiqa.describe.templates import TEMPLATES, Template
from agiqa.describe.workflow import describers
from agiqa.errors import ConfigError
from test_describe_support import SECRET, cache_files, describe_args, invoke, make_dataset, table

FAILURES = [
    "Error",
    "  error  ",
    "ERROR: upstream request timed out",
    "I'm sorry, I can't help with that.",
    "I’m sorry, but I cannot describe this image.",
    "I am unable to view images.",
    "I cannot help with this request.",
    "I can't assist with that.",
    "Sorry, I can't do that.",
    "As an AI language model, I cannot see images.",
]
DESCRIPTIONS = [
    "A compression error is visible along the edges of the red car.",
    "A laptop screen shows an error dialog; sharp focus, soft light.",
    "Errors in the rendered hands: six fingers, blurred joints.",
    "An AI-generated portrait of a woman, slightly over-smoothed skin.",
    "I see a cat on a sofa.",  # a first-person description is not a refusal
    "Icons of error states on a flat blue background.",
]


@pytest.mark.parametrize("text", FAILURES)
def test_default_patterns_flag_failure_messages(text: str) -> None:
    assert FailurePatterns().match(text) is not None


@pytest.mark.parametrize("text", DESCRIPTIONS)
def test_default_patterns_keep_descriptions_that_mention_an_error(text: str) -> None:
    assert FailurePatterns().match(text) is None


def test_configured_patterns_replace_the_defaults_and_are_validated() -> None:
    custom = FailurePatterns([r"compression error"])
    assert custom.match("Error") is None
    assert custom.match(DESCRIPTIONS[0]) == "compression error"
    assert FailurePatterns([]).match("Error") is None
    reason = FailurePatterns().reason("Error")
    assert reason is not None and "'Error'" in reason and DEFAULT_FAILURE_PATTERNS[0] in reason

    _, settings, options = split_entry({"backend": "openai", "failure_patterns": ["^x", "y$"]})
    assert settings.failure_patterns == ("^x", "y$") and "failure_patterns" not in options
    assert split_entry({"backend": "openai"})[1].failure_patterns is None
    with pytest.raises(ConfigError, match=r"invalid regular expression '\(unclosed'"):
        split_entry({"backend": "openai", "failure_patterns": ["(unclosed"]})
    with pytest.raises(ConfigError, match="list of regular expressions"):
        split_entry({"backend": "openai", "failure_patterns": "^error"})


def test_workflow_config_names_the_describer_and_the_bad_pattern() -> None:
    config = {
        "describers": {
            "good": {"backend": "openai", "model": "m", "failure_patterns": [r"^\s*error\b"]},
            "doubao": {"backend": "openai", "model": "m", "failure_patterns": ["ok", "[a-"]},
        }
    }
    with pytest.raises(ConfigError, match=r"describer 'doubao'.*'\[a-'"):
        describers(config)
    del config["describers"]["doubao"]
    assert list(describers(config)) == ["good"]
    with pytest.raises(ConfigError, match=r"describer 'n'.*not a string"):
        describers({"describers": {"n": {"backend": "local", "failure_patterns": [3]}}})


def test_failure_replies_are_retried_never_cached_and_counted_failed(tmp_path: Path) -> None:
    digests = make_dataset(tmp_path / "ds", 6)
    sha = list(digests.values())
    with FakeOpenAIServer(api_key=SECRET) as server:
        server.script(sha[0], "error_text")  # then ok: described on the retry
        server.script(sha[1], "refusal", "error_text")  # then ok
        server.script(sha[2], "error_text", "refusal", "error_text")  # more than max_attempts
        server.script(sha[3], "mentions_error")  # a usable description
        args = describe_args(tmp_path / "ds", tmp_path, server.base_url, "--max-attempts", "3")
        args += ["--summary-json", str(tmp_path / "s.json")]
        first = invoke(args)
        assert first.exit_code == 1 and "1 of 6 images failed" in first.output, first.output

        out = table(tmp_path / "out.csv").set_index("image")
        assert out.loc["gen_normal_002.jpg", "status"] == "failed"
        assert out.loc["gen_normal_002.jpg", "description"] == ""
        error = out.loc["gen_normal_002.jpg", "error"]
        assert "failure message ('Error'" in error and "3 attempts" in error
        assert out.loc["gen_normal_000.jpg", "description"] == description_for(sha[0])
        assert out.loc["gen_normal_001.jpg", "description"] == description_for(sha[1])
        assert out.loc["gen_normal_003.jpg", "description"] == mentions_error_for(sha[3])
        calls = server.calls_per_image()
        assert (calls[sha[0]], calls[sha[1]], calls[sha[2]], calls[sha[3]]) == (2, 3, 3, 1)
        summary = json.loads((tmp_path / "s.json").read_text())
        assert (summary["described"], summary["failed"], summary["retries"]) == (5, 1, 5)

        cached = [json.loads(p.read_text())["description"] for p in cache_files(tmp_path / "cache")]
        assert len(cached) == 5 and ERROR_TEXT not in cached and REFUSAL_TEXT not in cached

        # a rerun asks again for the failed image only (its faults are used up now)
        server.reset_counts()
        second = invoke(args)
        assert second.exit_code == 0, second.output
        assert dict(server.calls_per_image()) == {sha[2]: 1}


def test_configured_patterns_flag_a_reply_the_defaults_keep(tmp_path: Path) -> None:
    digests = make_dataset(tmp_path / "ds", 2)
    with FakeOpenAIServer(api_key=SECRET) as server:
        server.script(digests["gen_normal_001.jpg"], *["mentions_error"] * 2)
        args = describe_args(tmp_path / "ds", tmp_path, server.base_url, "--max-attempts", "2")
        args += ["-o", "failure_patterns=['compression error']"]
        result = invoke([*args, "--allow-failed-fraction", "0.5"])
        assert result.exit_code == 0, result.output
    out = table(tmp_path / "out.csv").set_index("image")
    assert out.loc["gen_normal_001.jpg", "status"] == "failed"
    assert "'compression error'" in out.loc["gen_normal_001.jpg", "error"]
    assert len(cache_files(tmp_path / "cache")) == 1


def test_a_cached_failure_message_is_ignored_and_requested_again(tmp_path: Path) -> None:
    digests = make_dataset(tmp_path / "ds", 3)
    with FakeOpenAIServer(api_key=SECRET) as server:
        args = describe_args(tmp_path / "ds", tmp_path, server.base_url)
        assert invoke(args).exit_code == 0 and server.calls == 3
        # as older versions cached it: an "Error" reply stored as a description
        stale = cache_files(tmp_path / "cache")[0]
        entry = json.loads(stale.read_text())
        stale.write_text(json.dumps({**entry, "description": ERROR_TEXT}))
        server.reset_counts()
        result = invoke(args)
        assert result.exit_code == 0, result.output
        assert dict(server.calls_per_image()) == {entry["image_sha256"]: 1}
        assert "cached 2" in result.output and "described 1" in result.output
    assert json.loads(stale.read_text())["description"] == description_for(entry["image_sha256"])
    assert ERROR_TEXT not in set(table(tmp_path / "out.csv")["description"])
    assert set(digests.values()) >= {entry["image_sha256"]}


@dataclass(frozen=True)
class _ScriptedOptions:
    model: str = "scripted"
    replies: tuple[str, ...] = ()


class _Scripted(Backend):
    """Answers from a list, one reply per call (the last one repeats)."""

    Options = _ScriptedOptions
    needs_image = False
    cacheable = False
    calls: ClassVar[list[str]] = []

    def describe(self, item: ImageItem, template: Template) -> Reply:
        self.calls.append(item.image)
        replies = self.options.replies
        return Reply(text=replies[min(self.calls.count(item.image), len(replies)) - 1])


class _Repeatable(_Scripted):
    repeatable = True


@pytest.mark.parametrize(("backend_class", "calls"), [(_Scripted, 3), (_Repeatable, 1)])
def test_a_repeatable_backend_fails_at_once_others_retry(
    tmp_path: Path, backend_class: type[_Scripted], calls: int
) -> None:
    backend_class.calls = []
    backend = backend_class(_ScriptedOptions(replies=("Error",)), BackendContext("tiny"))
    settings = RunSettings(max_attempts=3, backoff_base=0.0, cache_dir=str(tmp_path))
    rows, summary = Describer(backend, TEMPLATES["content_first"], settings, None).run(
        ["a.jpg"], "t"
    )
    assert rows[0].status == "failed" and "failure message" in rows[0].error
    assert len(backend_class.calls) == calls and summary.failed == 1
    assert summary.retries == calls - 1


def test_published_error_literal_fails_through_the_same_patterns(tmp_path: Path) -> None:
    crafted = tmp_path / "answers.csv"
    crafted.write_text(
        "name,prompt,answer\n"
        'a.jpg,p,"A red car; a compression error is visible."\n'
        "b.jpg,p,Error\n"
        'c.jpg,p,"I\'m sorry, I cannot describe this image."\n',
        encoding="utf-8",
    )
    images_root = tmp_path / "ds"
    images_root.mkdir()
    header = "name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align\n"
    rows = "".join(f"{n}.jpg,p,,,,1.0,0.3,2.0,0.4\n" for n in "abc")
    (images_root / "data.csv").write_text(header + rows)
    entry = {
        "backend": "published",
        "source": "agiqa-3k",
        "url": crafted.as_uri(),
        "sha256": hashlib.sha256(crafted.read_bytes()).hexdigest(),
        "download_dir": str(tmp_path / "downloads"),
        "allow_failed_fraction": 1.0,
        "backoff_base": 5.0,  # a retry would make this test slow
    }
    out = tmp_path / "out.csv"
    summary = run_describe(entry, dataset="mine", out=out, root=images_root, reader="agiqa-3k")
    assert (summary.described, summary.failed, summary.retries) == (1, 2, 0)
    frame = table(out).set_index("image")
    assert frame.loc["a.jpg", "status"] == "described"
    assert "failure message ('Error'" in frame.loc["b.jpg", "error"]
    assert "failure message" in frame.loc["c.jpg", "error"]
    # the describer's own patterns apply to published texts as well
    custom = {**entry, "failure_patterns": ["compression error"]}
    summary = run_describe(custom, dataset="mine", out=out, root=images_root, reader="agiqa-3k")
    assert (summary.described, summary.failed) == (1, 2)
    frame = table(out).set_index("image")
    assert frame.loc["a.jpg", "status"] == "failed"
    # the shape checks hold whatever the patterns: "Error" is no description
    assert "too short to be a description" in frame.loc["b.jpg", "error"]


# --- Hardening II item 4: replies shaped nothing like a description --------------------------

GARBAGE = [
    "\ufeffError",
    "**Error**",
    "[ERROR] upstream timeout",
    '{"error": {"message": "quota exceeded", "type": "insufficient_quota"}}',
    '{"error": "bad gat',  # an envelope cut off mid-way
    "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
    "</h1></center><hr><center>nginx</center></body></html>",
    "502 Bad Gateway",
    "null",
    "N/A",
    "\x00\x00\x00\x00 a red car on a wet street at night",
    '{"foo": 1}',
    "I apologize, but I cannot provide a description of this image.",
    "抱歉，我无法描述这张图片。",
    "这是一张红色汽车停在雨夜街道上的照片，画面清晰，色彩饱和，光线柔和，细节丰富。",
    "Lo siento, no puedo describir esta imagen.",
    "No puedo ayudar con esa solicitud.",
]


SHAPE_ONLY = [GARBAGE[i] for i in (3, 4, 5, 7, 8, 9, 10, 13)]


@pytest.mark.parametrize("text", GARBAGE)
def test_a_reply_that_is_no_description_is_refused(text: str) -> None:
    failures = FailurePatterns(None, script_of(TEMPLATES["content_first"].user))
    assert failures.reason(text) is not None


@pytest.mark.parametrize("text", SHAPE_ONLY)
def test_the_shape_checks_hold_without_any_pattern(text: str) -> None:
    """``failure_patterns: []`` turns the patterns off, not the shape of a description."""
    assert FailurePatterns([], "LATIN").reason(text) is not None


@pytest.mark.parametrize("text", [*DESCRIPTIONS, "\ufeffA red car on a wet street at night."])
def test_real_descriptions_keep_their_shape(text: str) -> None:
    assert FailurePatterns(None, "LATIN").reason(text) is None


class _Garbage(Backend):
    """Answers each image with its entry of GARBAGE, as a cacheable remote endpoint would."""

    Options = _ScriptedOptions
    calls: ClassVar[list[str]] = []

    def describe(self, item: ImageItem, template: Template) -> Reply:
        self.calls.append(item.image)
        return Reply(text=GARBAGE[int(item.image.split("_")[-1].split(".")[0])])


def test_garbage_is_never_cached_and_a_rerun_does_not_call_it_cached(tmp_path: Path) -> None:
    """Each reply above used to be marked described and cached; a rerun reported it cached."""
    images = sorted(make_dataset(tmp_path / "ds", len(GARBAGE)))
    backend = _Garbage(_ScriptedOptions(), BackendContext("tiny"))
    settings = RunSettings(max_attempts=1, backoff_base=0.0, cache_dir=str(tmp_path / "cache"))
    for _ in range(2):
        describer = Describer(backend, TEMPLATES["content_first"], settings, tmp_path / "ds")
        rows, summary = describer.run(images, "t")
        assert [r.status for r in rows] == ["failed"] * len(GARBAGE), [r.error for r in rows]
        assert (summary.failed, summary.described, summary.cached) == (len(GARBAGE), 0, 0)
        assert not cache_files(tmp_path / "cache")
