"""Evaluation metrics against scipy and hand-computed cases."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from scipy import stats

from agiqa.evaluate import metrics
from agiqa.evaluate.metrics import (
    HIGHER_IS_BETTER,
    METRICS,
    compute_metrics,
    fit_logistic4,
    krcc,
    logistic4,
    plcc,
    plcc_logistic,
    rmse,
    srcc,
    summarize,
)


@pytest.fixture
def random_pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    target = rng.uniform(0, 5, size=200)
    pred = target + rng.normal(0, 1.0, size=200)
    return pred, target


def test_against_scipy(random_pair: tuple[np.ndarray, np.ndarray]) -> None:
    pred, target = random_pair
    assert srcc(pred, target) == pytest.approx(stats.spearmanr(pred, target).statistic)
    assert krcc(pred, target) == pytest.approx(stats.kendalltau(pred, target).statistic)
    assert plcc(pred, target) == pytest.approx(stats.pearsonr(pred, target).statistic)
    assert rmse(pred, target) == pytest.approx(np.sqrt(np.mean((pred - target) ** 2)))


def test_results_are_python_floats(random_pair: tuple[np.ndarray, np.ndarray]) -> None:
    result = compute_metrics(*random_pair)
    assert tuple(result) == METRICS
    assert all(type(v) is float for v in result.values())


def test_perfect_and_reversed_order() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert srcc(x, x**3) == pytest.approx(1.0)
    assert krcc(x, x**3) == pytest.approx(1.0)
    assert srcc(x, -x) == pytest.approx(-1.0)
    assert krcc(x, -x) == pytest.approx(-1.0)


def test_hand_computed_four_elements() -> None:
    # pred = [1, 2, 3, 4], target = [1, 3, 2, 4]
    # Kendall: of the 6 pairs only (2, 3) is discordant -> (5 - 1) / 6 = 2/3.
    # Pearson: deviations dx = [-1.5, -0.5, 0.5, 1.5], dy = [-1.5, 0.5, -0.5, 1.5];
    #   sum(dx * dy) = 2.25 - 0.25 - 0.25 + 2.25 = 4, sum(dx^2) = sum(dy^2) = 5 -> r = 4/5.
    # Spearman equals Pearson here because the values are already ranks -> 0.8.
    # RMSE: errors [0, -1, 1, 0] -> sqrt(2 / 4) = sqrt(0.5).
    pred = np.array([1.0, 2.0, 3.0, 4.0])
    target = np.array([1.0, 3.0, 2.0, 4.0])
    assert krcc(pred, target) == pytest.approx(2 / 3)
    assert plcc(pred, target) == pytest.approx(0.8)
    assert srcc(pred, target) == pytest.approx(0.8)
    assert rmse(pred, target) == pytest.approx(math.sqrt(0.5))


def test_kendall_is_tau_b_with_ties() -> None:
    # pred has a tie: tau-b = (C - D) / sqrt((n0 - n1) * (n0 - n2)).
    # pairs: (0,1) tie in pred; (0,2) C; (0,3) C; (1,2) C; (1,3) C; (2,3) C -> C=5, D=0,
    # n0 = 6, n1 = 1 (one tied pair in pred), n2 = 0 -> 5 / sqrt(5 * 6).
    pred = np.array([1.0, 1.0, 2.0, 3.0])
    target = np.array([1.0, 2.0, 3.0, 4.0])
    assert krcc(pred, target) == pytest.approx(5 / math.sqrt(30))


def test_logistic4_shape() -> None:
    assert logistic4(0.0, 5.0, 1.0, 0.0, 2.0) == pytest.approx(3.0)
    # |b4| is used, so the sign of the width does not flip the curve.
    assert logistic4(1.0, 5.0, 1.0, 0.0, -2.0) == pytest.approx(logistic4(1.0, 5.0, 1.0, 0.0, 2.0))
    assert logistic4(100.0, 5.0, 1.0, 0.0, 1.0) == pytest.approx(5.0)
    assert logistic4(-100.0, 5.0, 1.0, 0.0, 1.0) == pytest.approx(1.0)


def test_logistic_fit_recovers_monotone_mapping() -> None:
    rng = np.random.default_rng(0)
    pred = rng.uniform(-3, 3, size=300)
    true_params = (4.5, 0.5, 0.4, 0.6)
    target = logistic4(pred, *true_params) + rng.normal(0, 0.01, size=pred.size)
    params = fit_logistic4(pred, target)
    assert params is not None
    np.testing.assert_allclose(params[:3], true_params[:3], atol=0.05)
    assert abs(params[3]) == pytest.approx(0.6, abs=0.05)
    assert plcc_logistic(pred, target) > 0.999
    assert plcc(pred, target) < 0.98


def test_failed_fit_gives_nan_and_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(metrics, "fit_logistic4", lambda pred, target: None)
    x = np.array([1.0, 2.0, 3.0, 4.0])
    with caplog.at_level(logging.WARNING, logger="agiqa.evaluate.metrics"):
        assert math.isnan(plcc_logistic(x, x))
    assert "logistic fit failed" in caplog.text


def test_fit_returns_none_when_curve_fit_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Optimal parameters not found")

    monkeypatch.setattr(metrics.optimize, "curve_fit", boom)
    assert fit_logistic4(np.arange(5.0), np.arange(5.0)) is None


def test_rmse_hand_case() -> None:
    # errors [1, -2, 2] -> sqrt((1 + 4 + 4) / 3) = sqrt(3)
    assert rmse(np.array([2.0, 0.0, 5.0]), np.array([1.0, 2.0, 3.0])) == pytest.approx(math.sqrt(3))


@pytest.mark.parametrize(
    ("pred", "target", "message"),
    [
        ([1.0, math.nan, 3.0], [1.0, 2.0, 3.0], "pred has 1 NaN"),
        ([1.0, 2.0, 3.0], [1.0, 2.0, math.inf], "target has 1 NaN/inf"),
        ([1.0, 2.0], [1.0, 2.0], "at least 3"),
        ([1.0, 2.0, 3.0], [1.0, 2.0], "pred has 3 values but target has 2"),
    ],
)
def test_bad_input_raises(pred: list[float], target: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compute_metrics(np.array(pred), np.array(target))


def test_constant_predictions_give_nan_correlations() -> None:
    pred = np.full(5, 2.0)
    target = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    result = compute_metrics(pred, target)
    for name in ("srcc", "krcc", "plcc", "plcc_logistic"):
        assert math.isnan(result[name])
    # errors [1, 0, -1, -2, -3] -> sqrt(15 / 5)
    assert result["rmse"] == pytest.approx(math.sqrt(3.0))


def test_directions_cover_all_metrics() -> None:
    assert set(HIGHER_IS_BETTER) == set(METRICS)
    assert HIGHER_IS_BETTER["rmse"] is False
    assert all(HIGHER_IS_BETTER[m] for m in METRICS if m != "rmse")


def test_summarize() -> None:
    mean, std = summarize([0.8, 0.9, 1.0])
    assert mean == pytest.approx(0.9)
    assert std == pytest.approx(0.1)  # ddof=1: sqrt((0.01 + 0 + 0.01) / 2)
    assert summarize([0.5]) == (0.5, 0.0)
    assert all(math.isnan(v) for v in summarize([0.5, math.nan]))
    with pytest.raises(ValueError, match="empty"):
        summarize([])


def test_logistic_fit_on_four_points_or_fewer_is_nan_not_an_error() -> None:
    pred = np.array([0.1, 0.5, 0.9, 0.3])
    target = np.array([1.0, 2.0, 4.0, 1.5])
    assert fit_logistic4(pred, target) is None
    results = compute_metrics(pred, target)
    assert math.isnan(results["plcc_logistic"])
    assert results["srcc"] == pytest.approx(1.0)
