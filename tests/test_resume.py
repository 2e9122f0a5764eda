"""Preemption: a stopped or killed fold job resumes and ends exactly like an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agiqa.train import fold as fold_module
from agiqa.train.fold import FoldTrainer, Preempted, run_fold
from test_train import job, prepare, residual_config

EPOCHS = 4


def test_signal_stops_the_job_and_the_rerun_matches_an_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = prepare(tmp_path, n_prompts=12)
    reference = run_fold(job(tmp_path / "ref", paths, residual_config(epochs=EPOCHS)))

    original = FoldTrainer.train_epoch
    calls = {"n": 0}

    def preempt_in_epoch_three(self, optimizer, scheduler, stop=None):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGUSR1)  # what SLURM sends before preempting
        return original(self, optimizer, scheduler, stop)

    monkeypatch.setattr(FoldTrainer, "train_epoch", preempt_in_epoch_three)
    interrupted = job(tmp_path / "run", paths, residual_config(epochs=EPOCHS))
    with pytest.raises(Preempted):
        run_fold(interrupted)
    checkpoint = Path(interrupted.out_dir) / fold_module.RESUME_FILE
    assert checkpoint.exists()
    assert not (Path(interrupted.out_dir) / "metrics.json").exists()

    monkeypatch.setattr(FoldTrainer, "train_epoch", original)
    resumed = run_fold(interrupted)
    assert resumed["test"] == reference["test"]
    assert resumed["best_epoch"] == reference["best_epoch"]
    assert not checkpoint.exists()  # removed once the job is done


KILLABLE = """
import json, sys
from agiqa.train.fold import FoldJob, run_fold
run_fold(FoldJob(**json.loads(sys.argv[1])))
"""


def test_sigkill_mid_training_then_rerun_gives_identical_metrics(tmp_path: Path) -> None:
    paths = prepare(tmp_path, n_prompts=12)
    config = residual_config(epochs=EPOCHS)
    reference = run_fold(job(tmp_path / "ref", paths, config))
    interrupted = job(tmp_path / "run", paths, config)
    fields = {k: getattr(interrupted, k) for k in interrupted.__dataclass_fields__}
    process = subprocess.Popen(
        [sys.executable, "-c", KILLABLE, json.dumps(fields)],
        cwd=Path(__file__).parent,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = Path(interrupted.out_dir) / fold_module.RESUME_FILE
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.kill()  # no warning, no handler: like a node failure
    process.wait(timeout=60)
    assert checkpoint.exists(), "the job ended before its first checkpoint"
    resumed = run_fold(interrupted)
    assert resumed["test"] == reference["test"]
