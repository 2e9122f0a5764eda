"""Training recipes (optimizer, decay groups, schedules, precision) and the trainer's hooks."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from agiqa.errors import ConfigError
from agiqa.train import recipe
from agiqa.train.fold import FoldTrainer, TrainSettings, run_fold
from test_train import job, prepare, residual_config


def test_no_decay_leaves_biases_and_1d_parameters_undecayed() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
    groups = recipe.parameter_groups(model, 0.05, no_decay=True)
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    assert [p.shape for p in groups[0]["params"]] == [torch.Size([3, 4])]
    assert len(groups[1]["params"]) == 3  # linear bias, norm weight and bias
    (single,) = recipe.parameter_groups(model, 0.05, no_decay=False)
    assert len(single["params"]) == 4


def test_optimizers() -> None:
    groups = recipe.parameter_groups(nn.Linear(2, 1), 0.1, no_decay=False)
    assert type(recipe.make_optimizer("adam", groups, 1e-3)) is torch.optim.Adam
    groups = recipe.parameter_groups(nn.Linear(2, 1), 0.1, no_decay=False)
    assert type(recipe.make_optimizer("adamw", groups, 1e-3)) is torch.optim.AdamW


def test_betas_reach_the_optimizer_and_are_checked() -> None:
    settings = TrainSettings.from_config({"optimizer": "adamw", "betas": [0.9, 0.95]})
    assert settings.betas == (0.9, 0.95)
    groups = recipe.parameter_groups(nn.Linear(2, 1), 0.1, no_decay=False)
    optimizer = recipe.make_optimizer(settings.optimizer, groups, 1e-3, settings.betas)
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.95)
    assert TrainSettings.from_config({}).betas == (0.9, 0.999)  # PyTorch's
    for bad in ([0.9], [0.9, 1.0], "0.9"):
        with pytest.raises(ConfigError, match="betas"):
            TrainSettings.from_config({"betas": bad})


def factors(schedule: str, **extra: object) -> list[float]:
    settings = {"total_steps": 10, "steps_per_epoch": 2, "warmup_steps": 2, **extra}
    return [recipe.lr_factor(step, schedule=schedule, **settings) for step in range(10)]


def test_schedules() -> None:
    assert factors("constant") == [0.5, 1.0] + [1.0] * 8
    cosine = factors("cosine")
    assert cosine[:2] == [0.5, 1.0] and cosine[2] == 1.0
    assert all(a >= b for a, b in itertools.pairwise(cosine[2:])) and cosine[-1] < 0.05
    # step: x0.1 after epoch 2 and again after epoch 4 (2 steps per epoch)
    step = factors("step", milestones=(2, 4), gamma=0.1, warmup_steps=0)
    assert step == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01])
    assert recipe.warmup_steps(3, 0.5, steps_per_epoch=7, total_steps=70) == 21
    assert recipe.warmup_steps(None, 0.05, steps_per_epoch=7, total_steps=100) == 5


def test_amp_modes() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert recipe.amp_dtype("fp16", cuda) is torch.float16
    assert recipe.amp_dtype(True, cuda) is torch.bfloat16
    assert recipe.amp_dtype("off", cuda) is None
    assert recipe.amp_dtype("bf16", cpu) is None  # full precision on the CPU


def test_bad_recipes_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"train\.optimizer"):
        TrainSettings.from_config({"optimizer": "sgd"})
    with pytest.raises(ConfigError, match=r"train\.schedule"):
        TrainSettings.from_config({"schedule": "linear"})
    with pytest.raises(ConfigError, match=r"train\.amp"):
        TrainSettings.from_config({"amp": "fp8"})
    settings = TrainSettings.from_config({"schedule": "step", "milestones": [3, 6]})
    assert settings.milestones == (3, 6)


def test_constant_schedule_keeps_the_learning_rate(tmp_path: Path) -> None:
    paths = prepare(tmp_path, n_prompts=12)
    config = residual_config(epochs=2, schedule="constant", optimizer="adam", warmup_ratio=0.0)
    run_fold(job(tmp_path, paths, config))
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert history["lr"].tolist() == [1e-3, 1e-3]


def test_a_model_trains_on_the_dimensions_it_names(tmp_path: Path) -> None:
    paths = prepare(tmp_path, n_prompts=12)
    metrics = run_fold(
        job(tmp_path, paths, {**residual_config(epochs=1), "dimensions": ["quality"]})
    )
    assert set(metrics["test"]) == {"quality"}
    columns = pd.read_csv(tmp_path / "run" / "predictions.csv").columns
    assert [c for c in columns if c.startswith("pred_")] == ["pred_quality"]
    with pytest.raises(ConfigError, match=r"dimensions \['sharpness'\] are not rated"):
        run_fold(job(tmp_path, paths, {**residual_config(epochs=1), "dimensions": ["sharpness"]}))


def test_predictions_are_clipped_to_the_scale(tmp_path: Path, monkeypatch) -> None:
    paths = prepare(tmp_path, n_prompts=12)
    trainer = FoldTrainer(job(tmp_path, paths, residual_config(epochs=1)))
    # A model that overshoots the scale (the residual CLIP reached 6.0 on 0-5).
    overshoot = lambda inputs: torch.full((len(inputs["images"]), 2), 1.2)  # noqa: E731
    monkeypatch.setattr(trainer.model, "forward_batch", overshoot)
    assert trainer.predict("test").max() == 1.0


class _TwoViews(torch.utils.data.Dataset):
    """Every row twice: the second copy's output is shifted, the reduction averages them."""

    def __init__(self, inner: torch.utils.data.Dataset) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return 2 * len(self.inner)

    def __getitem__(self, index: int):
        inputs, targets, row = self.inner[index // 2]
        return {**inputs, "shift": torch.tensor(float(index % 2))}, targets, row


def test_models_can_emit_several_samples_per_row(tmp_path: Path, monkeypatch) -> None:
    # The hooks a pair- or crop-based model overrides: make_dataset, forward_batch and
    # reduce_predictions. The trainer itself knows nothing of them.
    paths = prepare(tmp_path, n_prompts=12)
    config = residual_config(epochs=1) | {"train": {"epochs": 1, "feature_cache": False}}
    trainer = FoldTrainer(job(tmp_path, paths, config))
    model = trainer.model
    original_dataset, original_forward = model.make_dataset, model.forward_batch
    monkeypatch.setattr(
        model, "make_dataset", lambda data, train: _TwoViews(original_dataset(data, train))
    )

    def forward(inputs):
        shift = inputs.pop("shift")
        return original_forward(inputs) * 0 + 0.25 + 0.5 * shift[:, None]

    def mean_per_row(outputs, rows, n_rows):
        sums = np.zeros((n_rows, outputs.shape[1]))
        np.add.at(sums, rows, outputs)
        return (sums / np.bincount(rows, minlength=n_rows)[:, None]).astype(np.float32)

    monkeypatch.setattr(model, "forward_batch", forward)
    monkeypatch.setattr(model, "reduce_predictions", mean_per_row)
    trainer.datasets = trainer.build_datasets()
    assert len(trainer.datasets["test", False]) == 2 * len(trainer.parts["test"])
    np.testing.assert_allclose(trainer.predict("test"), 0.5)  # (0.25 + 0.75) / 2
    optimizer, scheduler = trainer.optimization()
    assert trainer.train_epoch(optimizer, scheduler) >= 0
