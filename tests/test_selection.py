"""Epoch-selection rules: agiqa's on validation, each seed code's on test."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from agiqa.data.manifest import Dimension
from agiqa.errors import ConfigError
from agiqa.train.fold import FoldTrainer, Progress, TrainSettings
from agiqa.train.selection import DEFAULT_REPLICA_RULE, RULES, selection_rule

QUALITY = Dimension("quality", "quality", 0, 5)
ALIGN = Dimension("align", "alignment", 0, 5)


@pytest.mark.parametrize(
    ("model_type", "rule"),
    [
        ("clip_residual", "qiyan111_aigc"),
        ("scva", "scva_agiqa"),
        ("dcmpln", "clip_agiqa"),
        ("deqa", "last_epoch"),
        ("depictqa_compare", "last_epoch"),
        ("imagenet_probe", DEFAULT_REPLICA_RULE),
    ],
)
def test_test_selection_follows_the_model_familys_seed_code(model_type: str, rule: str) -> None:
    assert selection_rule("test", model_type, None).name == rule
    assert selection_rule("test", model_type, "agiqa").name == "agiqa"  # the entry decides
    assert selection_rule("val", model_type, "scva_agiqa").name == "agiqa"  # honest: always ours


def test_an_unknown_rule_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="unknown selection rule 'qiyan'"):
        TrainSettings.from_config({"replica_selection": "qiyan"})
    assert TrainSettings.from_config({"replica_selection": "clip_agiqa"}).replica_selection


def test_a_rule_scores_its_dimension_kind_or_everything_when_the_model_lacks_it() -> None:
    rule = RULES.get("qiyan111_aigc")
    scores = {"quality": {"srcc": 0.9}, "align": {"srcc": 0.3}}
    assert rule.score(scores, (QUALITY, ALIGN), "srcc") == pytest.approx(0.3)
    assert rule.score({"quality": {"srcc": 0.9}}, (QUALITY,), "srcc") == pytest.approx(0.9)
    agiqa = RULES.get("agiqa")
    assert agiqa.score(scores, (QUALITY, ALIGN), "srcc") == pytest.approx(0.6)
    assert math.isnan(agiqa.score({"quality": {"srcc": math.nan}}, (QUALITY,), "srcc"))


def _select(rule: str, scores: list[float], patience: int, plcc: list[float] | None = None):
    """Feed per-epoch selection scores to FoldTrainer.select; (progress, epochs run)."""
    trainer = SimpleNamespace(
        rule=RULES.get(rule),
        settings=TrainSettings(patience=patience),
        model=torch.nn.Linear(2, 1),
        selection="test",
    )
    progress = Progress()
    for epoch, score in enumerate(scores, start=1):
        predictions = np.full((3, 1), float(epoch))
        plcc_score = None if plcc is None else plcc[epoch - 1]
        FoldTrainer.select(trainer, epoch, score, plcc_score, predictions, progress)
        if progress.finished:
            return progress, epoch
    return progress, len(scores)


def test_agiqas_rule_keeps_the_best_epoch_and_stops_after_patience() -> None:
    progress, run = _select("agiqa", [0.5, 0.7, 0.6, 0.65, 0.8], patience=2)
    assert (progress.best_epoch, run) == (2, 4)


def test_qiyans_rule_runs_every_epoch() -> None:
    progress, run = _select("qiyan111_aigc", [0.5, 0.7, 0.6, 0.65, 0.8], patience=2)
    assert (progress.best_epoch, run) == (5, 5)


def test_the_last_epoch_rule_never_selects() -> None:
    progress, run = _select("last_epoch", [0.9, 0.7, 0.6], patience=1)
    assert (progress.best_epoch, run) == (3, 3)


def test_scvas_rule_keeps_the_best_plcc_epoch_separately() -> None:
    progress, _ = _select("scva_agiqa", [0.5, 0.7, 0.6], patience=1, plcc=[0.4, 0.3, 0.8])
    assert progress.best_epoch == 2 and progress.best_plcc_epoch == 3
    assert progress.best_plcc_predictions is not None
    assert float(progress.best_plcc_predictions[0, 0]) == 3.0  # that epoch's predictions
