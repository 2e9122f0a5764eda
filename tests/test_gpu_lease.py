"""GPU leases: concurrent jobs get different devices; a crashed job's lease is freed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agiqa.train.gpu import acquire_gpu, available_devices

HOLDER = """
import os, sys, time
from agiqa.train.gpu import acquire_gpu
lease = acquire_gpu(sys.argv[1], wait_seconds=float(sys.argv[2]), poll=0.05)
print(os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)
sys.stdin.read()  # hold the lease until the test closes stdin (or kills us)
"""


def start_job(lock_dir: Path, devices: str, wait: float = 5.0) -> subprocess.Popen:
    env = {**os.environ, "AGIQA_GPU_DEVICES": devices}
    env.pop("SLURM_JOB_ID", None)
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock_dir), str(wait)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def device_of(job: subprocess.Popen) -> str:
    line = job.stdout.readline().strip()
    assert line, job.stderr.read()
    return line


def test_two_concurrent_jobs_get_different_devices_and_a_killed_one_frees_its_own(
    tmp_path: Path,
) -> None:
    first, second = start_job(tmp_path, "0,1"), start_job(tmp_path, "0,1")
    try:
        devices = {device_of(first), device_of(second)}
        assert devices == {"0", "1"}
        third = start_job(tmp_path, "0,1", wait=0.5)  # none free: it gives up with a clear error
        assert third.wait(timeout=60) != 0
        assert "no free GPU among ['0', '1']" in third.stderr.read()
        first.kill()  # a crash: the kernel drops its lock
        first.wait(timeout=30)
        fourth = start_job(tmp_path, "0,1")
        freed = device_of(fourth)
        assert freed in devices
        fourth.stdin.close()
        fourth.wait(timeout=30)
    finally:
        for job in (first, second):
            if job.poll() is None:
                job.stdin.close()
                job.wait(timeout=30)


def test_cpu_only_machines_and_slurm_allocations_take_no_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGIQA_GPU_DEVICES", "")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert available_devices() == []
    assert acquire_gpu(tmp_path).reason == "no gpu"
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    lease = acquire_gpu(tmp_path)
    assert lease.reason == "slurm" and lease.index is None
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert not list(tmp_path.iterdir())


@pytest.fixture()
def one_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with GPU 5 only, outside SLURM."""
    monkeypatch.setenv("AGIQA_GPU_DEVICES", "5")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


@pytest.mark.usefixtures("one_gpu")
def test_a_lease_sets_cuda_visible_devices_and_releases(tmp_path: Path) -> None:
    lease = acquire_gpu(tmp_path, wait_seconds=0.2, poll=0.05)
    assert lease.index == "5" and os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    with pytest.raises(TimeoutError):
        acquire_gpu(tmp_path, wait_seconds=0.2, poll=0.05)
    lease.release()
    again = acquire_gpu(tmp_path, wait_seconds=5, poll=0.05)
    assert again.index == "5"
    again.release()


@pytest.mark.usefixtures("one_gpu")
def test_a_training_job_holds_its_lease_while_it_runs_and_logs_a_preemption_as_resumable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functools import partial
    from types import SimpleNamespace

    from agiqa import steps
    from agiqa.train import fold, gpu

    lease_here = partial(gpu.acquire_gpu, tmp_path / "locks", wait_seconds=0.2, poll=0.05)
    monkeypatch.setattr(gpu, "acquire_gpu", lease_here)
    seen: list[str] = []

    def preempted_run(job: object, live: object = None) -> None:
        seen.append(os.environ["CUDA_VISIBLE_DEVICES"])
        with pytest.raises(TimeoutError):  # the job holds the only GPU
            lease_here()
        raise fold.Preempted("SIGTERM after epoch 3")

    monkeypatch.setattr(fold, "run_fold", preempted_run)
    log_file = tmp_path / "job.log"
    with pytest.raises(fold.Preempted):
        steps.train_job(lambda: SimpleNamespace(device="cuda"), gpu=None, log_file=log_file)
    assert seen == ["5"]
    text = log_file.read_text()
    assert "SIGTERM after epoch 3: the rerun resumes" in text and "step failed" not in text
    lease_here().release()  # released when the job stopped

    def no_lease(*args: object, **kwargs: object) -> None:
        raise AssertionError("a CPU job took a GPU lease")

    monkeypatch.setattr(gpu, "acquire_gpu", no_lease)
    monkeypatch.setattr(fold, "run_fold", lambda job, live=None: seen.append(job.device))
    steps.train_job(lambda: SimpleNamespace(device="cpu"), gpu=None, log_file=log_file)
    assert seen == ["5", "cpu"]
