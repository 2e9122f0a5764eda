"""The workflow's steps as plain functions: each rule's thin script calls one of them.

Rules pass config values as Python arguments, never through a shell string, so a dataset name,
root or URL can hold any character (``$(...)``, spaces) without being run. Every step logs to
its job's log file and re-raises its error, which Snakemake then reports: a bad input
(``AgiqaError``) as its one-line message, without a traceback, unless ``AGIQA_DEBUG=1`` is set.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from agiqa.errors import AgiqaError
from agiqa.logs import configure_logging

if TYPE_CHECKING:
    from agiqa.track.live import Tracking
    from agiqa.train.fold import FoldJob

log = logging.getLogger("agiqa.steps")


@contextmanager
def job_log(
    log_file: str | Path | None, resumable: tuple[type[Exception], ...] = ()
) -> Iterator[None]:
    """Log to the job's file (stderr without one); an error is logged there, then raised.

    ``resumable`` errors (a preempted training job) are logged as such, not as failures.
    """
    configure_logging(log_file)
    sys.excepthook = _one_line_for_bad_input
    try:
        yield
    except resumable as stop:
        log.warning("%s: the rerun resumes from the last epoch's checkpoint", stop)
        raise
    except AgiqaError as error:  # bad input: the message names the file and row
        log.error("%s", error)
        raise
    except Exception:
        log.exception("step failed")
        raise


def _one_line_for_bad_input(kind: type[BaseException], error: BaseException, trace) -> None:
    """A job script that ends on a bad input prints its message, not a traceback (the job log
    has it too); any other error, or ``AGIQA_DEBUG=1``, keeps Python's traceback."""
    if issubclass(kind, AgiqaError) and os.environ.get("AGIQA_DEBUG") != "1":
        sys.stderr.write(f"error: {error}\n(AGIQA_DEBUG=1 shows the traceback)\n")
        return
    sys.__excepthook__(kind, error, trace)


def train_job(
    make_job: Callable[[], FoldJob],
    *,
    gpu: bool | None,
    log_file: str | Path | None,
    tracking: Tracking | None = None,
) -> None:
    """One training job (a fold, or a cross-dataset model) as the workflow runs it.

    Logs to ``log_file``, leases a GPU before CUDA starts (``gpu`` None: when the job's device
    is not the CPU) and runs ``run_fold``, logging the run to MLflow as it trains when
    ``tracking`` says where; a preemption is logged as resumable and re-raised.
    """
    from agiqa.track.live import LiveRun
    from agiqa.train.fold import Preempted, run_fold
    from agiqa.train.gpu import gpu_lease

    with job_log(log_file, resumable=(Preempted,)):
        job = make_job()
        with gpu_lease(job.device != "cpu" if gpu is None else gpu):
            run_fold(job, LiveRun(tracking) if tracking is not None else None)


def _write_json(data: dict, out: str | Path) -> None:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def synthesize(out: str, options: dict, log_file: str) -> None:
    """Render the embedded synthetic dataset into ``out``."""
    from agiqa.data.synthetic import generate

    with job_log(log_file):
        log.info("wrote %s", generate(Path(out), **options))


def verify_dataset(
    dataset: str,
    reader: str,
    root: str,
    options: dict,
    allowed_link_roots: Sequence[str],
    out: str,
    log_file: str,
    max_images: int | None = None,
) -> dict:
    """Read the metadata and decode every image once; write the JSON summary to ``out``.

    With ``max_images`` (the dataset entry's), only the images the manifest keeps are decoded.
    """
    from agiqa.data.check import summarize, verify_images
    from agiqa.data.manifest import limit_images
    from agiqa.data.readers import read_dataset

    with job_log(log_file):
        manifest = limit_images(read_dataset(reader, root, dataset=dataset, **options), max_images)
        verify_images(manifest, Path(root), allowed_link_roots=allowed_link_roots)
        summary = summarize(manifest)
        # what the DVC step compares with the files DVC recorded
        summary.update({"images_verified": True, "root": root, "images": len(manifest.frame)})
        _write_json(summary, out)
        log.info("%s: %d images verified under %s", dataset, len(manifest.frame), root)
        return summary


def build_manifest(
    dataset: str,
    reader: str,
    root: str,
    options: dict,
    out: str,
    log_file: str,
    max_images: int | None = None,
) -> None:
    """Write the canonical manifest (CSV, and its dimensions as JSON beside it)."""
    from agiqa.data.manifest import limit_images
    from agiqa.data.readers import read_dataset

    with job_log(log_file):
        manifest = limit_images(read_dataset(reader, root, dataset=dataset, **options), max_images)
        manifest.save(Path(out))
        log.info(
            "wrote %s: %d rows, %d labelled", out, len(manifest.frame), len(manifest.labelled())
        )


def write_split(manifest: str, protocol: dict, out: str, log_file: str | None) -> None:
    """Write the split file of a dataset for a protocol's resolved settings."""
    from agiqa.data.manifest import Manifest
    from agiqa.data.splits import Protocol, make_splits, write_splits

    with job_log(log_file):
        settings = Protocol.from_config(protocol)
        splits = make_splits(Manifest.load(manifest).labelled(), settings)
        write_splits(splits, out)
        log.info("wrote %s: %d splits of %d images", out, settings.n_splits, len(splits))


def download_dataset(
    dataset: str, root: str, source: str, download: dict, downloads: str, log_file: str
) -> None:
    """Download, verify and install a dataset at ``root`` (manual hosts stop with instructions)."""
    from agiqa.data.download import install_dataset
    from agiqa.data.sources import sources_for

    with job_log(log_file):
        sources = sources_for(source, url=download.get("url"), sha256=download.get("sha256"))
        install_dataset(dataset, Path(root), sources, downloads=Path(downloads), log=log.info)


def track_datasets(
    paths: Sequence[str], verified: Sequence[str], remote: dict, out: str, log_file: str
) -> None:
    """``dvc add`` the opted-in dataset roots, checking what DVC recorded; set up the remote."""
    from agiqa.data import dvc

    with job_log(log_file):
        if dvc.ensure_remote(remote["url"], remote["name"]):
            log.info("added DVC remote %s -> %s", remote["name"], remote["url"])
        expected = dvc.expected_from_verified([Path(v) for v in verified])
        tracked = dvc.track(list(paths), Path("."), expected)
        _write_json({"tracked": tracked, "remote": remote}, out)


def seed_weights(file_name: str, out: str, log_file: str | None) -> None:
    """Put a packaged weights file into torch's hub cache, sha256-checked (``agiqa weights
    seed``), and write the marker ``out`` the jobs that load it wait for."""
    from agiqa.weights import PACKAGED, seed_hub_cache

    with job_log(log_file):
        result = seed_hub_cache(PACKAGED[file_name])
        state = "copied to" if result.copied else "already in"
        log.info("%s (sha256 verified) %s %s", file_name, state, result.path.parent)
        _write_json({"path": str(result.path), "sha256": PACKAGED[file_name].sha256}, out)
