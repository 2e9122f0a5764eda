"""Which GPU a job uses: Snakemake's ``gpu`` resource only counts, it never names a device.

Each GPU job takes a lease on one device index with a non-blocking ``flock`` on
``<lock_dir>/gpu<index>.lock`` and holds it for the life of the process: the kernel releases it
when the process ends, crash or kill included, so a dead job never keeps a GPU. The job then sets
``CUDA_VISIBLE_DEVICES`` to that index before CUDA starts. With ``--resources gpu=N`` at most N
jobs hold leases at once, so each finds a free device.

The devices to share come from ``AGIQA_GPU_DEVICES`` ("0,1"), else ``CUDA_VISIBLE_DEVICES``,
else ``nvidia-smi``. Inside a SLURM allocation (``SLURM_JOB_ID`` with ``CUDA_VISIBLE_DEVICES``
set) the scheduler has already chosen, so no lease is taken.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

DEFAULT_LOCK_DIR = Path("/tmp") / f"agiqa-gpu-leases-{os.getuid()}"


@dataclass
class GpuLease:
    """A held device (``index`` None: no lease taken) and the open lock file that holds it."""

    index: str | None
    reason: str
    handle: IO[str] | None = None

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


def available_devices() -> list[str]:
    """Device indices this machine offers to GPU jobs (see the module docstring)."""
    for variable in ("AGIQA_GPU_DEVICES", "CUDA_VISIBLE_DEVICES"):
        value = os.environ.get(variable)
        if value is not None:
            return [d.strip() for d in value.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listing.stdout.splitlines() if line.strip()]


def acquire_gpu(
    lock_dir: str | Path = DEFAULT_LOCK_DIR, wait_seconds: float = 3600, poll: float = 2.0
) -> GpuLease:
    """Lease a free device and point ``CUDA_VISIBLE_DEVICES`` at it; see the module docstring."""
    if os.environ.get("SLURM_JOB_ID") and os.environ.get("CUDA_VISIBLE_DEVICES"):
        devices = os.environ["CUDA_VISIBLE_DEVICES"]
        log.info("SLURM allocation: using its GPU(s) %s, no lease", devices)
        return GpuLease(None, "slurm")
    devices = available_devices()
    if not devices:
        log.info("no GPU on this machine: the job runs on the CPU")
        return GpuLease(None, "no gpu")
    folder = Path(lock_dir)
    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_seconds
    while True:
        for index in devices:
            handle = (folder / f"gpu{index}.lock").open("a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            os.environ["CUDA_VISIBLE_DEVICES"] = index
            log.info("leased GPU %s (CUDA_VISIBLE_DEVICES=%s)", index, index)
            return GpuLease(index, "leased", handle)
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"no free GPU among {devices} after {wait_seconds:.0f} s: run with "
                f"--resources gpu=N where N is at most the number of GPUs ({len(devices)})"
            )
        log.info("all %d GPUs leased by other jobs; waiting", len(devices))
        time.sleep(poll)


@contextmanager
def gpu_lease(wanted: bool) -> Iterator[GpuLease | None]:
    """A GPU leased for the block (``acquire_gpu``) and released after it; none when not wanted.

    Enter it before anything starts CUDA: the lease sets ``CUDA_VISIBLE_DEVICES``.
    """
    lease = acquire_gpu() if wanted else None
    try:
        yield lease
    finally:
        if lease is not None:
            lease.release()
