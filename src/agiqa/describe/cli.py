"""``agiqa describe``: one dataset's images -> a table of descriptions (see runner.py).

Mounted in ``agiqa.cli`` with ``app.command("describe")(describe_command)``. The workflow's
script calls ``run_job``, the same function the command calls, so both behave identically:
exit 0 on success, 1 when the table is not usable (failures, budget, fatal backend error), 2 on
bad configuration or input, 130 when interrupted (finished descriptions stay cached).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from agiqa.errors import AgiqaError, ConfigError

log = logging.getLogger("agiqa.describe")
EXIT_FAILED, EXIT_CONFIG, EXIT_INTERRUPTED = 1, 2, 130


def describe_command(
    dataset: Annotated[str, typer.Option(help="dataset name (picks the published table)")],
    out: Annotated[Path, typer.Option(help="description table (CSV) to write")],
    root: Annotated[Path | None, typer.Option(help="dataset root; images are read from it")] = None,
    manifest: Annotated[
        Path | None, typer.Option(help="manifest CSV (default: read the dataset from --root)")
    ] = None,
    reader: Annotated[str | None, typer.Option(help="dataset reader (default: --dataset)")] = None,
    backend: Annotated[str | None, typer.Option(help="openai (default), published, local")] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML file holding one describer entry; flags override it")
    ] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint")] = None,
    model: Annotated[str | None, typer.Option(help="model id, or hub id/folder (local)")] = None,
    template: Annotated[
        str | None, typer.Option(help="content_first, quality_aware or content_only")
    ] = None,
    instruction: Annotated[str | None, typer.Option(help="custom user instruction")] = None,
    system: Annotated[str | None, typer.Option(help="custom system text")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="cap on reply tokens")] = None,
    temperature: Annotated[float | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    timeout: Annotated[float | None, typer.Option(help="seconds per request")] = None,
    concurrency: Annotated[int | None, typer.Option(help="requests in flight")] = None,
    rpm: Annotated[float | None, typer.Option(help="most requests per minute")] = None,
    budget_tokens: Annotated[int | None, typer.Option(help="stop after this many tokens")] = None,
    max_attempts: Annotated[int | None, typer.Option(help="attempts per image")] = None,
    allow_failed_fraction: Annotated[
        float | None, typer.Option(help="largest accepted fraction of failed images")
    ] = None,
    api_key_env: Annotated[
        str | None, typer.Option(help="variable holding the API key (default OPENAI_API_KEY)")
    ] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="description cache folder")] = None,
    limit: Annotated[int | None, typer.Option(help="describe only the first N images")] = None,
    option: Annotated[
        list[str] | None, typer.Option("--option", "-o", help="extra backend option KEY=VALUE")
    ] = None,
    summary_json: Annotated[Path | None, typer.Option(help="also write the summary here")] = None,
    log_file: Annotated[Path | None, typer.Option("--log", help="log here, not to stderr")] = None,
) -> None:
    """Describe every image of a dataset with a VLM backend (cached, resumable, robust)."""
    flags = {
        "backend": backend,
        "base_url": base_url,
        "model": model,
        "template": template,
        "instruction": instruction,
        "system": system,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "seed": seed,
        "timeout": timeout,
        "concurrency": concurrency,
        "rpm": rpm,
        "budget_tokens": budget_tokens,
        "max_attempts": max_attempts,
        "allow_failed_fraction": allow_failed_fraction,
        "api_key_env": api_key_env,
        "cache_dir": None if cache_dir is None else str(cache_dir),
        "limit": limit,
    }
    try:
        entry = build_entry(config, flags, option or [])
    except AgiqaError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    code = run_job(
        entry,
        dataset=dataset,
        out=out,
        manifest=manifest,
        root=root,
        reader=reader,
        summary_json=summary_json,
        log_file=log_file,
    )
    if code:
        raise typer.Exit(code)


def build_entry(
    config: Path | None, flags: Mapping[str, Any], options: list[str]
) -> dict[str, Any]:
    """A describer entry: the config file's, then ``--option`` pairs, then explicit flags."""
    entry: dict[str, Any] = {}
    if config is not None:
        loaded = yaml.safe_load(config.read_text())
        if not isinstance(loaded, dict):
            raise ConfigError(f"{config}: expected a mapping of describer keys")
        entry.update(loaded)
    for pair in options:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option expects KEY=VALUE, got '{pair}'")
        entry[key.strip()] = yaml.safe_load(value)
    entry.update({k: v for k, v in flags.items() if v is not None})
    entry.setdefault("backend", "openai")
    return entry


def run_job(
    entry: Mapping[str, Any],
    *,
    dataset: str,
    out: str | Path,
    manifest: str | Path | None = None,
    root: str | Path | None = None,
    reader: str | None = None,
    summary_json: str | Path | None = None,
    log_file: str | Path | None = None,
) -> int:
    """Run one describe job with logging and signal handling; return the exit code."""
    from agiqa.describe.runner import DescribeFailed, run_describe

    with job_logging(log_file), sigterm_as_interrupt():
        try:
            run_describe(
                dict(entry),
                dataset=dataset,
                out=out,
                manifest=manifest,
                root=root,
                reader=reader,
                summary_json=summary_json,
                interactive=sys.stderr.isatty() and log_file is None,
            )
        except DescribeFailed as error:
            log.error("%s", error)
            return EXIT_FAILED
        except AgiqaError as error:
            log.error("error: %s", error)
            return EXIT_CONFIG
        except KeyboardInterrupt:
            log.error("interrupted: finished descriptions are cached; rerun to resume")
            return EXIT_INTERRUPTED
    return 0


@contextlib.contextmanager
def job_logging(log_file: str | Path | None) -> Iterator[None]:
    """INFO lines of ``agiqa.describe`` to stderr, or to ``log_file`` when given."""
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(log_file, encoding="utf-8")
    else:
        handler = _CurrentStderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    previous = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(previous)
        handler.close()


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time, so log lines go above a live bar."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (what Snakemake sends on cancel) like Ctrl-C: stop cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
