"""Significance tests and bootstrap intervals: closed forms against scipy, known answers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from agiqa.evaluate.significance import (
    SplitScores,
    bootstrap_comparison,
    bootstrap_means,
    corrected_resampled_t,
    weighted_pearson,
    weighted_ranks,
    within_split_weights,
)
from agiqa.report.aggregate import collect_runs, summarize_runs
from agiqa.report.compare import (
    BEST,
    TIE,
    compare_models,
    protocol_sensitivity,
    significance_marks,
)
from agiqa.report.results import ReportSettings, load_runs
from run_factory import noisy, write_run


def test_weighted_spearman_equals_scipy_on_the_repeated_sample() -> None:
    rng = np.random.default_rng(0)
    pred = np.round(rng.normal(size=40), 1)  # rounding makes ties
    target = np.round(rng.uniform(0, 5, size=40), 0)
    weights = rng.multinomial(40, np.full(40, 1 / 40), size=6)
    ranks_pred, ranks_target = weighted_ranks(pred, weights), weighted_ranks(target, weights)
    ours = weighted_pearson(ranks_pred, ranks_target, weights)
    for b in range(6):
        repeated = np.repeat(np.arange(40), weights[b])
        expected = stats.spearmanr(pred[repeated], target[repeated]).statistic
        assert ours[b] == pytest.approx(expected, abs=1e-12)
        assert weighted_pearson(pred, target, weights)[b] == pytest.approx(
            stats.pearsonr(pred[repeated], target[repeated]).statistic, abs=1e-12
        )


def test_corrected_t_is_the_plain_paired_t_without_correction_and_wider_with_it() -> None:
    diffs = [0.02, 0.05, 0.01, 0.04, 0.03]
    t, p = corrected_resampled_t(diffs, test_train_ratio=0.0)
    plain = stats.ttest_1samp(diffs, 0.0)
    assert t == pytest.approx(plain.statistic) and p == pytest.approx(plain.pvalue)
    t_nb, p_nb = corrected_resampled_t(diffs, test_train_ratio=0.25)
    expected_t = np.mean(diffs) / math.sqrt((1 / 5 + 0.25) * np.var(diffs, ddof=1))
    assert t_nb == pytest.approx(expected_t)
    assert p_nb == pytest.approx(2 * stats.t.sf(expected_t, 4)) and p_nb > p
    assert corrected_resampled_t([0.0, 0.0, 0.0], 0.25) == (0.0, 1.0)


def test_bootstrap_p_value_and_interval() -> None:
    boot_a = np.linspace(0.5, 0.7, 1000)
    comparison = bootstrap_comparison(0.6, 0.4, boot_a, np.full(1000, 0.4))
    assert comparison.diff == pytest.approx(0.2)
    assert comparison.p_value == pytest.approx(2 / 1001)  # no resample crosses zero
    assert 0.1 < comparison.ci_low < comparison.ci_high < 0.3


def _scores(rng: np.random.Generator, noise: float, targets: list[np.ndarray]) -> list:
    return [
        SplitScores(j, np.arange(len(t)).astype(str), noisy(t, noise, rng), t)
        for j, t in enumerate(targets)
    ]


def test_bootstrap_is_calibrated_under_the_null() -> None:
    # Two models with the same noise level: about alpha of the comparisons come out significant.
    rng = np.random.default_rng(1)
    rejections = 0
    for _ in range(100):
        targets = [rng.uniform(0, 5, size=60) for _ in range(5)]
        a, b = _scores(rng, 1.5, targets), _scores(rng, 1.5, targets)
        weights = within_split_weights([60] * 5, 500, rng)
        boot = [bootstrap_means(model, "srcc", weights) for model in (a, b)]
        observed = [np.mean([stats.spearmanr(s.pred, s.target)[0] for s in m]) for m in (a, b)]
        rejections += bootstrap_comparison(*observed, *boot).p_value < 0.05
    assert rejections <= 12  # expected 5 of 100; binomial 99th percentile is about 11


def _two_models(tmp_path: Path, noise_b: float, *, transform: bool = False) -> list[Path]:
    rng = np.random.default_rng(2)
    dirs = []
    for split in range(5):
        target = rng.uniform(0, 5, size=80)
        val_target = rng.uniform(0, 5, size=20)
        pred_a = noisy(target, 0.4, rng)
        pred_b = 2 * pred_a + 1 if transform else noisy(target, noise_b, rng)
        for model, pred in (("good", pred_a), ("other", pred_b)):
            dirs.append(
                write_run(
                    tmp_path,
                    model,
                    split,
                    {"quality": (pred, target)},
                    val={"quality": (noisy(val_target, 0.4, rng), val_target)},
                )
            )
    return dirs


def _analyse(dirs: list[Path], settings: ReportSettings):
    runs = load_runs(dirs)
    per_split = collect_runs(runs)
    summary = summarize_runs(per_split)
    comparisons = compare_models(runs, per_split, settings)
    return summary, comparisons, significance_marks(summary, comparisons, settings)


def test_a_clearly_better_model_is_marked_best(tmp_path: Path) -> None:
    settings = ReportSettings(resamples=1000)
    _, comparisons, marks = _analyse(_two_models(tmp_path, noise_b=2.0), settings)
    srcc = comparisons[(comparisons["metric"] == "srcc") & (comparisons["part"] == "test")]
    assert srcc["p_bootstrap"].item() < 0.01
    assert srcc["p_corrected_t"].item() < 0.05
    assert srcc["ci_low"].item() > 0
    assert marks["kfold_grouped", "synthetic", "quality", "test", "srcc", "good"] == BEST
    assert ("kfold_grouped", "synthetic", "quality", "test", "srcc", "other") not in marks


def test_models_that_rank_identically_are_tied(tmp_path: Path) -> None:
    # "other" is an increasing function of "good": SRCC is identical on every image draw.
    settings = ReportSettings(resamples=500)
    _, comparisons, marks = _analyse(_two_models(tmp_path, 0, transform=True), settings)
    srcc = comparisons[(comparisons["metric"] == "srcc") & (comparisons["part"] == "test")]
    assert srcc["diff"].item() == pytest.approx(0.0, abs=1e-12)
    assert srcc["p_bootstrap"].item() == 1.0
    for model in ("good", "other"):
        assert marks["kfold_grouped", "synthetic", "quality", "test", "srcc", model] == TIE


def test_corrected_t_can_drive_the_marks(tmp_path: Path) -> None:
    settings = ReportSettings(resamples=200, significance_test="corrected_t")
    _, _, marks = _analyse(_two_models(tmp_path, noise_b=2.0), settings)
    assert marks["kfold_grouped", "synthetic", "quality", "test", "srcc", "good"] == BEST


def test_protocol_sensitivity_pairs_by_image_and_finds_the_inflation(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    images = [f"img{i:04d}.jpg" for i in range(300)]
    target = rng.uniform(0, 5, size=300)
    honest = noisy(target, 1.0, rng)
    inflated = noisy(target, 0.5, rng)  # e.g. selected on test: better-looking numbers
    dirs = []
    for name, kind, pred in (
        ("kfold_grouped", "kfold_grouped", honest),
        ("literature_replica", "literature_replica", inflated),
    ):
        order = rng.permutation(300)  # each protocol has its own folds over the same images
        for split in range(5):
            chosen = order[split::5]
            dirs.append(
                write_run(
                    tmp_path,
                    "m",
                    split,
                    {"quality": (pred[chosen], target[chosen])},
                    images=[images[i] for i in chosen],
                    protocol=name,
                    protocol_type=kind,
                )
            )
    runs = load_runs(dirs)
    table = protocol_sensitivity(runs, collect_runs(runs), ReportSettings(resamples=1000))
    replica = table[table["protocol"] == "literature_replica"].iloc[0]
    assert bool(replica["paired"]) and replica["selection"] == "test"
    assert replica["delta_srcc"] > 0 and replica["delta_srcc_ci_low"] > 0
    reference = table[table["protocol"] == "kfold_grouped"].iloc[0]
    assert math.isnan(reference.get("delta_srcc", math.nan))


def test_protocols_on_different_images_are_compared_unpaired(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    dirs = []
    for name in ("kfold_grouped", "image_split"):
        for split in range(5):
            target = rng.uniform(0, 5, size=40)
            dirs.append(
                write_run(
                    tmp_path,
                    "m",
                    split,
                    {"quality": (noisy(target, 1.0, rng), target)},
                    images=[f"{name}{split}_{i}.jpg" for i in range(40)],
                    protocol=name,
                )
            )
    runs = load_runs(dirs)
    table = protocol_sensitivity(runs, collect_runs(runs), ReportSettings(resamples=300))
    assert not table[table["protocol"] == "image_split"]["paired"].item()
