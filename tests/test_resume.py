"""Preemption: a stopped or killed fold job resumes and ends exactly like an uninterrupted one."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from agiqa.data.manifest import Manifest
from agiqa.data.splits import Protocol, make_splits, write_splits
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


def _preempted_run(tmp_path: Path, paths, monkeypatch: pytest.MonkeyPatch):
    """Stop a job during epoch 2 with a scheduler signal; resume.pt (after epoch 1) stays."""
    original = FoldTrainer.train_epoch
    calls = {"n": 0}

    def preempt_in_epoch_two(self, optimizer, scheduler, stop=None):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGUSR1)
        return original(self, optimizer, scheduler, stop)

    monkeypatch.setattr(FoldTrainer, "train_epoch", preempt_in_epoch_two)
    interrupted = job(tmp_path / "run", paths, residual_config(epochs=EPOCHS))
    with pytest.raises(Preempted):
        run_fold(interrupted)
    monkeypatch.setattr(FoldTrainer, "train_epoch", original)
    return interrupted


def test_a_new_split_file_never_resumes_an_old_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Kill, change the protocol seed (a new split file), rerun: the old checkpoint was trained on
    # images that may now be test images, so it must be discarded.
    paths = prepare(tmp_path, n_prompts=12)
    interrupted = _preempted_run(tmp_path, paths, monkeypatch)
    assert (Path(interrupted.out_dir) / fold_module.RESUME_FILE).exists()
    manifest = Manifest.load(paths[1])
    write_splits(make_splits(manifest.labelled(), Protocol(folds=4, seed=1)), paths[2])
    fresh = run_fold(job(tmp_path / "fresh", paths, residual_config(epochs=EPOCHS)))
    with caplog.at_level(logging.WARNING, logger="agiqa.train.fold"):
        rerun = run_fold(interrupted)
    assert "written for another configuration, split file or manifest" in caplog.text
    assert "resumed from" not in caplog.text
    assert rerun["test"] == fresh["test"]  # trained from scratch on the new split


def test_a_planted_pickle_is_never_unpickled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    paths = prepare(tmp_path, n_prompts=12)
    config = residual_config(epochs=2)
    reference = run_fold(job(tmp_path / "ref", paths, config))
    planted = job(tmp_path / "run", paths, config)
    marker = tmp_path / "code-ran"
    Path(planted.out_dir).mkdir(parents=True)
    torch.save(_Exploit(str(marker)), Path(planted.out_dir) / fold_module.RESUME_FILE)
    with caplog.at_level(logging.WARNING, logger="agiqa.train.fold"):
        result = run_fold(planted)
    assert not marker.exists()
    assert "does not load as plain tensors and types" in caplog.text
    assert result["test"] == reference["test"]


class _Exploit:
    """Unpickling this object would create a file: what a planted resume.pt could do."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_resume_state_loads_with_weights_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = prepare(tmp_path, n_prompts=12)
    interrupted = _preempted_run(tmp_path, paths, monkeypatch)
    state = torch.load(Path(interrupted.out_dir) / fold_module.RESUME_FILE, weights_only=True)
    assert state["resume_key"] == interrupted.resume_key()
    assert len(state["history"]) == 1  # the interrupted second epoch is dropped
