"""The describe job: manifest images -> a table of descriptions, robustly and resumably.

For every image a worker reads and hashes the file, looks the request up in the cache and, on a
miss, asks the backend, retrying transient failures with exponential backoff and jitter (or the
server's Retry-After) under a shared requests-per-minute limit. A usable reply is cached before
it is counted, so a killed job loses at most the requests in flight and a rerun makes no call
for anything already described. Errors, empty and truncated replies, and replies that are
failure messages (``failures.py``: "Error", refusals) are never cached nor used; a cached entry
that is a failure message (written by older versions) is ignored and requested again.

The job ends with a summary (described / cached / failed) and raises DescribeFailed, listing
the failed images, when more than ``allow_failed_fraction`` of them failed, when the token budget
ran out before every image was requested, or when the backend hit an error that every request
would hit (bad key, unknown model).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from agiqa.describe.backends import (
    BACKENDS,
    Backend,
    BackendContext,
    BackendError,
    FatalError,
    ImageItem,
    PermanentError,
    Reply,
    TransientError,
)
from agiqa.describe.backends.base import parse_options
from agiqa.describe.cache import DescriptionCache, cache_key
from agiqa.describe.credentials import check_no_credentials
from agiqa.describe.failures import FailurePatterns, check_patterns, normalise_reply, script_of
from agiqa.describe.images import load_item
from agiqa.describe.limits import Backoff, RateLimiter, TokenBudget
from agiqa.describe.progress import make_progress
from agiqa.describe.templates import Template, resolve_template
from agiqa.errors import AgiqaError, ConfigError

log = logging.getLogger("agiqa.describe")

DESCRIBED, CACHED, FAILED = "described", "cached", "failed"
TABLE_COLUMNS = ("image", "description", "status", "error", "backend", "model", "template")
# describer keys the workflow reads and the job ignores
WORKFLOW_KEYS = frozenset({"datasets"})
TRUNCATED = frozenset({"length", "max_tokens"})
FAILURES_SHOWN = 20


class DescribeFailed(AgiqaError):
    """The job finished but its table is not good enough to use (message says why)."""


@dataclass(frozen=True)
class RunSettings:
    """Config keys of a describer that belong to the job rather than to its backend.

    Attributes:
        template: Name of an instruction template (``templates.TEMPLATES``).
        instruction: Custom user text (replaces the template's).
        system: Custom system text (replaces the template's; "" sends none).
        concurrency: Requests in flight at once.
        rpm: Most request starts per minute across all workers (None: no limit).
        budget_tokens: Stop starting requests once this many tokens were spent.
        max_attempts: Attempts per image, the first one included.
        backoff_base: Seconds of the first backoff step; doubled per attempt.
        backoff_max: Longest backoff between attempts, in seconds.
        allow_failed_fraction: Largest fraction of failed images the job accepts.
        cache_dir: Folder of the description cache.
        limit: Describe only the first N manifest images (trial runs).
        failure_patterns: Regular expressions of replies that are failure messages, not
            descriptions (``failures.py``); None: ``DEFAULT_FAILURE_PATTERNS``; [] checks none.
    """

    template: str | None = None
    instruction: str | None = None
    system: str | None = None
    concurrency: int = 4
    rpm: float | None = None
    budget_tokens: int | None = None
    max_attempts: int = 6
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    allow_failed_fraction: float = 0.0
    cache_dir: str = "resources/vlm_cache"
    limit: int | None = None
    failure_patterns: Sequence[str] | None = None

    def __post_init__(self) -> None:
        # a tuple keeps the frozen settings hashable when the config gave a list
        object.__setattr__(self, "failure_patterns", check_patterns(self.failure_patterns))
        if self.concurrency < 1 or self.max_attempts < 1:
            raise ValueError("concurrency and max_attempts must be at least 1")
        if not 0.0 <= self.allow_failed_fraction <= 1.0:
            raise ValueError("allow_failed_fraction must lie in [0, 1]")
        if self.backoff_base < 0 or self.backoff_max < 0:
            raise ValueError("backoff_base and backoff_max must not be negative")
        if self.rpm is not None and self.rpm <= 0:
            raise ValueError("rpm must be positive")
        if self.budget_tokens is not None and self.budget_tokens <= 0:
            raise ValueError("budget_tokens must be positive")
        if self.limit is not None and self.limit < 1:
            raise ValueError("limit must be at least 1")

    def template_spec(self) -> Template:
        return resolve_template(self.template, instruction=self.instruction, system=self.system)


def split_entry(
    entry: Mapping[str, Any], owner: str = "describer"
) -> tuple[str, RunSettings, dict[str, Any]]:
    """(backend name, job settings, backend options) of a describer config entry.

    ``owner`` names the entry in error messages (``describer 'doubao'``).
    """
    if "backend" not in entry:
        raise ConfigError("a describer needs a 'backend' (openai, published or local)")
    check_no_credentials(entry, owner)
    run_keys = {f.name for f in dataclasses.fields(RunSettings)}
    run = {k: v for k, v in entry.items() if k in run_keys}
    rest = {
        k: v for k, v in entry.items() if k not in run_keys and k not in WORKFLOW_KEYS | {"backend"}
    }
    return str(entry["backend"]), parse_options(RunSettings, run, owner), rest


@dataclass(frozen=True)
class Row:
    image: str
    status: str
    description: str = ""
    error: str = ""


@dataclass
class Summary:
    """Counts of a finished job, written to the log and optionally as JSON."""

    label: str
    total: int = 0
    described: int = 0
    cached: int = 0
    failed: int = 0
    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    elapsed_s: float = 0.0
    budget_exhausted: bool = False
    not_requested: int = 0
    fatal: str | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def failed_fraction(self) -> float:
        return self.failed / self.total if self.total else 0.0

    @property
    def images_per_second(self) -> float:
        return self.total / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        return (
            f"{self.label}: {self.total} images: described {self.described}, cached "
            f"{self.cached}, failed {self.failed} ({100 * self.failed_fraction:.1f}%); "
            f"{self.requests} requests ({self.retries} retries), {self.tokens:,} tokens; "
            f"{self.images_per_second:.2f} images/s over {self.elapsed_s:.2f} s"
        )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["failures"] = [{"image": i, "error": e} for i, e in self.failures]
        data.update(tokens=self.tokens, images_per_second=self.images_per_second)
        return data


class Describer:
    """Describes a list of manifest images with one backend and one template.

    Args:
        backend: The backend that answers single requests.
        template: Instruction sent with each image.
        settings: Concurrency, limits, retries, budget and cache location.
        root: Dataset root the manifest image paths are relative to.
        interactive: Show a rich progress bar (else periodic log lines).
        seed: Seed of the backoff jitter (None: nondeterministic).
    """

    def __init__(
        self,
        backend: Backend,
        template: Template,
        settings: RunSettings,
        root: Path | None,
        *,
        interactive: bool = False,
        seed: int | None = None,
    ) -> None:
        self.backend = backend
        self.template = template
        self.settings = settings
        self.root = root
        self.interactive = interactive
        self.cache = DescriptionCache(settings.cache_dir) if backend.cacheable else None
        self.limiter = RateLimiter(settings.rpm)
        self.backoff = Backoff(settings.backoff_base, settings.backoff_max)
        self.budget = TokenBudget(settings.budget_tokens)
        instruction = script_of(f"{template.system} {template.user}")
        self.failures = FailurePatterns(settings.failure_patterns, instruction)
        self.stop = threading.Event()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._retries = 0
        self._requests = 0
        self._fatal: str | None = None
        self._not_requested = 0

    @property
    def concurrency(self) -> int:
        bound = self.backend.max_concurrency
        return min(self.settings.concurrency, bound) if bound else self.settings.concurrency

    def run(self, images: Sequence[str], label: str) -> tuple[list[Row], Summary]:
        """Describe ``images``; rows come back in input order."""
        start = time.monotonic()
        rows: dict[int, Row] = {}
        progress = make_progress(len(images), label, interactive=self.interactive)
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="describe")
        failed = 0
        try:
            futures = {pool.submit(self._one, image): i for i, image in enumerate(images)}
            for future in as_completed(futures):
                row = rows[futures[future]] = future.result()
                if row.status == FAILED:
                    failed += 1
                    log.warning("failed %s: %s", row.image, row.error)
                progress.update(len(rows), self.budget.tokens, failed)
        except BaseException:
            # Ctrl-C or SIGTERM: no new requests; those in flight finish and get cached
            self.stop.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            progress.close()
        ordered = [rows[i] for i in range(len(images))]
        return ordered, self._summary(ordered, label, time.monotonic() - start)

    def _summary(self, rows: list[Row], label: str, elapsed: float) -> Summary:
        failures = [(r.image, r.error) for r in rows if r.status == FAILED]
        return Summary(
            label=label,
            total=len(rows),
            described=sum(r.status == DESCRIBED for r in rows),
            cached=sum(r.status == CACHED for r in rows),
            failed=len(failures),
            requests=self._requests,
            retries=self._retries,
            prompt_tokens=self.budget.prompt_tokens,
            completion_tokens=self.budget.completion_tokens,
            elapsed_s=round(elapsed, 3),
            budget_exhausted=self.budget.exhausted and self._not_requested > 0,
            not_requested=self._not_requested,
            fatal=self._fatal,
            failures=failures,
        )

    def _one(self, image: str) -> Row:
        """The row of one image; never raises for a per-image problem."""
        try:
            item = load_item(self.root, image, with_data=self.backend.needs_image)
        except PermanentError as error:
            return Row(image, FAILED, error=str(error))
        key = None
        if self.cache is not None:
            key = self._key(item)
            entry = self.cache.get(key)
            if entry is not None:
                text = normalise_reply(str(entry["description"]))
                reason = self.failures.reason(text)
                if reason is None:
                    return Row(image, CACHED, description=text)
                # cached before failure messages were recognised: ask again, the answer replaces it
                log.warning("ignoring cached reply of %s: %s", image, reason)
        return self._request(item, key)

    def _key(self, item: ImageItem) -> str:
        fields = {
            "image_sha256": item.sha256,
            **self.backend.identity(),
            "system": self.template.system,
            "instruction": self.template.user,
        }
        return cache_key(fields)

    def _request(self, item: ImageItem, key: str | None) -> Row:
        """Ask the backend, retrying transient failures; cache and return a usable reply."""
        error = "not requested"
        for attempt in range(self.settings.max_attempts):
            reason = self._blocked()
            if reason or not self.limiter.acquire(self.stop):
                return self._not_sent(item.image, reason or "job stopped", attempt)
            try:
                reply = self._call(item)
                return self._accept(item, key, reply)
            except TransientError as failure:
                error = self.backend.redact(str(failure))
                if not self._wait_to_retry(item.image, attempt, failure, error):
                    break
            except FatalError as failure:
                self._fail_job(self.backend.redact(str(failure)))
                return Row(item.image, FAILED, error=self.backend.redact(str(failure)))
            except BackendError as failure:
                return Row(item.image, FAILED, error=self.backend.redact(str(failure)))
            except Exception as failure:  # a backend bug must not take the other images down
                log.exception("unexpected error describing %s", item.image)
                message = self.backend.redact(f"{type(failure).__name__}: {failure}")
                return Row(item.image, FAILED, error=message[:200])
        return Row(item.image, FAILED, error=f"{error} (after {attempt + 1} attempts)")

    def _call(self, item: ImageItem) -> Reply:
        """One backend call; its tokens count towards the budget even if the reply is unusable."""
        if self.backend.cacheable:
            with self._lock:
                self._requests += 1
        reply = self.backend.describe(item, self.template)
        self.budget.add(reply.usage)
        return reply

    def _blocked(self) -> str | None:
        if self.stop.is_set():
            return self._fatal or "job stopped"
        if self.budget.exhausted:
            return f"token budget of {self.budget.limit:,} exhausted"
        return None

    def _not_sent(self, image: str, reason: str, attempt: int) -> Row:
        if attempt == 0:
            with self._lock:
                self._not_requested += 1
            return Row(image, FAILED, error=f"not requested: {reason}")
        return Row(image, FAILED, error=f"gave up after {attempt} attempts: {reason}")

    def _accept(self, item: ImageItem, key: str | None, reply: Reply) -> Row:
        """Check a reply; cache and return it when usable, else raise to retry or fail."""
        text = normalise_reply(reply.text)
        if reply.finish_reason in TRUNCATED:
            raise PermanentError(
                "reply truncated at the token limit (finish_reason "
                f"'{reply.finish_reason}'); raise max_tokens"
            )
        if reply.finish_reason == "content_filter":
            raise PermanentError("reply blocked by the endpoint's content filter")
        unusable = "empty reply" if not text else self.failures.reason(text)
        if unusable:
            # a table lookup or greedy decoding would answer the same again: no retry
            raise PermanentError(unusable) if self.backend.repeatable else TransientError(unusable)
        if self.cache is not None and key is not None:
            self.cache.put(key, self._entry(item, reply, text))
        return Row(item.image, DESCRIBED, description=text)

    def _entry(self, item: ImageItem, reply: Reply, text: str) -> dict[str, Any]:
        return {
            "description": text,
            "backend": self.backend.identity().get("backend", ""),
            "model": self.backend.model_name,
            "response_model": reply.model,
            "system_fingerprint": reply.fingerprint,
            "template": self.template.name,
            "image_sha256": item.sha256,
            "finish_reason": reply.finish_reason,
            "usage": {
                "prompt_tokens": reply.usage.prompt_tokens,
                "completion_tokens": reply.usage.completion_tokens,
            },
        }

    def _wait_to_retry(self, image: str, attempt: int, failure: TransientError, error: str) -> bool:
        """Sleep before the next attempt; False when no attempt is left or the job stops."""
        if attempt + 1 >= self.settings.max_attempts:
            return False
        if failure.retry_after is not None:
            self.limiter.defer(failure.retry_after)
        with self._lock:
            self._retries += 1
            delay = self.backoff.delay(attempt, failure.retry_after, self._rng)
        log.info(
            "retry %d/%d of %s in %.2f s: %s",
            attempt + 1,
            self.settings.max_attempts - 1,
            image,
            delay,
            error,
        )
        return not self.stop.wait(delay)

    def _fail_job(self, reason: str) -> None:
        with self._lock:
            if self._fatal is None:
                self._fatal = reason
                log.error("stopping: %s", reason)
        self.stop.set()


def run_describe(
    entry: Mapping[str, Any],
    *,
    dataset: str,
    out: str | Path,
    manifest: str | Path | None = None,
    root: str | Path | None = None,
    reader: str | None = None,
    summary_json: str | Path | None = None,
    interactive: bool = False,
) -> Summary:
    """Run one describer over one dataset and write its table.

    Args:
        entry: The describer's config (``backend`` plus backend and job keys).
        dataset: Dataset name (labels, published-source lookup).
        out: CSV to write (columns ``TABLE_COLUMNS``).
        manifest: Manifest CSV; None reads the dataset with ``reader`` from ``root``.
        root: Dataset root (needed by image backends and to read the dataset).
        reader: Dataset reader name (default ``dataset``).
        summary_json: Also write the summary here.
        interactive: Show a progress bar.

    Raises:
        ConfigError: On a bad entry, DataError on bad input, DescribeFailed on a bad result.
    """
    name, settings, options = split_entry(entry)
    template = settings.template_spec()
    images = manifest_images(dataset, manifest, root, reader)[: settings.limit]
    context = BackendContext(dataset, reader or dataset, Path(root) if root else None)
    backend = BACKENDS.get(name).from_config(options, context)
    template_label = backend.fixed_template or template.name
    label = f"{dataset} / {name}:{backend.model_name} / {template_label}"
    try:
        describer = Describer(backend, template, settings, context.root, interactive=interactive)
        rows, summary = describer.run(images, label)
    finally:
        backend.close()
    write_table(rows, out, backend=name, model=backend.model_name, template=template_label)
    if summary_json:
        _write_atomic(Path(summary_json), json.dumps(summary.to_dict(), indent=2) + "\n")
    log.info("%s", summary.line())
    check(summary, settings.allow_failed_fraction)
    return summary


def manifest_images(
    dataset: str, manifest: str | Path | None, root: str | Path | None, reader: str | None
) -> list[str]:
    """The image column of the manifest (loaded, or built from the dataset root)."""
    if manifest is not None:
        from agiqa.data.manifest import Manifest

        return list(Manifest.load(manifest).frame["image"])
    if root is None:
        raise ConfigError("give a manifest, or a dataset root to read the manifest from")
    from agiqa.data.readers import read_dataset

    return list(read_dataset(reader or dataset, root, dataset=dataset).frame["image"])


def check(summary: Summary, allow_failed_fraction: float) -> None:
    """Raise DescribeFailed unless the table is complete enough to use."""
    if summary.fatal:
        raise DescribeFailed(f"{summary.label}: stopped: {summary.fatal}. {summary.line()}")
    if summary.budget_exhausted:
        done = summary.described + summary.cached
        raise DescribeFailed(
            f"{summary.label}: token budget exhausted after {done} images "
            f"({summary.tokens:,} tokens spent); {summary.not_requested} images were not "
            f"requested and remain for a rerun with a larger budget_tokens: "
            f"{_listing(summary.failures)}"
        )
    if summary.failed and summary.failed_fraction > allow_failed_fraction:
        raise DescribeFailed(
            f"{summary.label}: {summary.failed} of {summary.total} images failed "
            f"({100 * summary.failed_fraction:.2f}% > allowed "
            f"{100 * allow_failed_fraction:.2f}%): {_listing(summary.failures)}"
        )


def _listing(failures: Sequence[tuple[str, str]]) -> str:
    shown = [f"{image} ({error})" for image, error in failures[:FAILURES_SHOWN]]
    more = len(failures) - FAILURES_SHOWN
    return "; ".join(shown) + (f"; and {more} more (see the log)" if more > 0 else "")


def write_table(
    rows: Sequence[Row], out: str | Path, *, backend: str, model: str, template: str
) -> None:
    """Write the description table atomically (a reader never sees half a file)."""
    frame = pd.DataFrame(
        {
            "image": [r.image for r in rows],
            "description": [r.description for r in rows],
            "status": [r.status for r in rows],
            "error": [r.error for r in rows],
            "backend": backend,
            "model": model,
            "template": template,
        },
        columns=list(TABLE_COLUMNS),
    )
    _write_atomic(Path(out), frame.to_csv(index=False))


def read_descriptions(path: str | Path, *, require_complete: bool = True) -> dict[str, str]:
    """image -> description of a describe table, for models that take descriptions.

    Raises:
        DataError: With ``require_complete``, when a row failed (its description is empty).
    """
    from agiqa.errors import DataError

    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    failed = frame.index[frame["status"] == FAILED]
    if require_complete and len(failed):
        first = int(failed[0])
        raise DataError(
            f"{len(failed)} images have no description (first: {frame['image'][first]})",
            file=path,
            row=first + 2,
        )
    usable = frame[frame["status"] != FAILED]
    return dict(zip(usable["image"], usable["description"], strict=True))


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
