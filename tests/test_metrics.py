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
    fit_logistic,
    fit_logistic4,
    krcc,
    logistic4,
    logistic5,
    mean_confidence_interval,
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
    assert logistic4(100.0, 5.0, 1.0, 0.0, 1.0) == pytest.approx(5.0)
    assert logistic4(-100.0, 5.0, 1.0, 0.0, 1.0) == pytest.approx(1.0)


def test_logistic_fit_recovers_monotone_mapping() -> None:
    rng = np.random.default_rng(0)
    pred = rng.uniform(-3, 3, size=300)
    true_params = (4.5, 0.5, 0.4, 0.6)
    target = logistic4(pred, *true_params) + rng.normal(0, 0.01, size=pred.size)
    params = fit_logistic4(pred, target)
    assert params is not None
    np.testing.assert_allclose(params, true_params, atol=0.05)
    assert plcc_logistic(pred, target) > 0.999
    assert plcc(pred, target) < 0.98


def test_failed_fit_gives_nan_and_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(metrics, "fit_logistic", lambda pred, target, kind: None)
    x = np.array([1.0, 2.0, 3.0, 4.0])
    with caplog.at_level(logging.WARNING, logger="agiqa.evaluate.metrics"):
        assert math.isnan(plcc_logistic(x, x))
    assert "logistic fit failed" in caplog.text


def test_fit_returns_none_when_curve_fit_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Optimal parameters not found")

    from scipy import optimize

    monkeypatch.setattr(optimize, "curve_fit", boom)
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
    for name in ("srcc", "krcc", "plcc", "plcc_logistic", "rmse_logistic"):
        assert math.isnan(result[name])
    # errors [1, 0, -1, -2, -3] -> sqrt(15 / 5)
    assert result["rmse"] == pytest.approx(math.sqrt(3.0))


def test_directions_cover_all_metrics() -> None:
    assert set(HIGHER_IS_BETTER) == set(METRICS)
    assert HIGHER_IS_BETTER["rmse"] is HIGHER_IS_BETTER["rmse_logistic"] is False
    assert all(HIGHER_IS_BETTER[m] for m in METRICS if not m.startswith("rmse"))


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


# --- the monotone logistic: no inflation, no sign flip -----------------------------------------


@pytest.mark.parametrize("kind", ["logistic4", "logistic5"])
@pytest.mark.parametrize("n_images", [48, 120])
def test_null_predictions_gain_nothing_from_the_fit(kind: str, n_images: int) -> None:
    # Predictions independent of the MOS: an unconstrained 4-parameter fit gave a mean PLCC_log
    # of 0.25 on 48 images (raw PLCC ~0). The monotone, width-bounded fit stays within 0.05.
    rng = np.random.default_rng(11)
    raw, mapped = [], []
    for _ in range(200):
        pred, target = rng.normal(size=n_images), rng.uniform(0, 5, size=n_images)
        result = compute_metrics(pred, target, logistic=kind)
        raw.append(result["plcc"])
        mapped.append(result["plcc_logistic"])
    assert not np.isnan(mapped).any()
    assert abs(np.mean(mapped) - np.mean(raw)) < 0.05


@pytest.mark.parametrize("kind", ["logistic4", "logistic5"])
def test_anti_correlated_predictor_stays_negative(kind: str) -> None:
    rng = np.random.default_rng(3)
    target = rng.uniform(0, 5, size=100)
    pred = -target + rng.normal(0, 0.6, size=100)
    result = compute_metrics(pred, target, logistic=kind)
    assert result["srcc"] < -0.8
    assert result["plcc_logistic"] < -0.8
    assert result["plcc_logistic"] == pytest.approx(result["plcc"], abs=0.02)


@pytest.mark.parametrize("kind", ["logistic4", "logistic5"])
def test_fitted_mapping_is_increasing_with_bounded_width(kind: str) -> None:
    rng = np.random.default_rng(5)
    for _ in range(30):
        pred, target = rng.normal(size=60), rng.uniform(0, 5, size=60)
        fit = fit_logistic(pred, target, kind)
        assert fit is not None
        grid = np.linspace(pred.min(), pred.max(), 200)
        assert np.all(np.diff(fit(grid)) >= -1e-12)
        if kind == "logistic4" and not fit.linear_limit:
            b1, b2, b3, b4 = fit.params
            assert b1 >= b2
            assert b4 >= metrics.MIN_WIDTH * np.std(pred) * (1 - 1e-9)
            low, high = np.quantile(pred, metrics.CENTRE_QUANTILES)
            assert low - 1e-9 <= b3 <= high + 1e-9


def test_flat_fit_uses_the_linear_limit() -> None:
    pred = np.arange(20.0)
    target = 5 - pred / 4  # strictly decreasing: no increasing curve beats a constant
    fit = fit_logistic(pred, target)
    assert fit is not None and fit.linear_limit
    assert plcc_logistic(pred, target) == pytest.approx(plcc(pred, target), abs=1e-3)


def test_logistic5_recovers_a_vqeg_curve_and_reports_mapped_rmse() -> None:
    rng = np.random.default_rng(2)
    pred = rng.uniform(-3, 3, size=300)
    target = logistic5(pred, 3.0, 1.5, 0.2, 0.2, 2.5) + rng.normal(0, 0.01, size=300)
    result = compute_metrics(pred, target, logistic="logistic5")
    assert result["plcc_logistic"] > 0.999
    assert result["rmse_logistic"] < 0.02 < result["rmse"]


def test_unknown_logistic_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown logistic"):
        compute_metrics(np.arange(6.0), np.arange(6.0), logistic="logistic3")


def test_mean_confidence_interval_against_scipy() -> None:
    values = [0.61, 0.70, 0.55, 0.66, 0.72]
    low, high = mean_confidence_interval(values)
    expected = stats.t.interval(0.95, 4, loc=np.mean(values), scale=stats.sem(values))
    assert (low, high) == pytest.approx(expected)
    # Nadeau-Bengio: the variance of the mean grows by n_test/n_train = 1/4 for 5 folds.
    wide = mean_confidence_interval(values, test_train_ratio=0.25)
    assert wide[1] - wide[0] > high - low
    scale = math.sqrt((1 / 5 + 0.25) * np.var(values, ddof=1))
    assert wide == pytest.approx(stats.t.interval(0.95, 4, loc=np.mean(values), scale=scale))
    assert all(math.isnan(v) for v in mean_confidence_interval([0.5]))


def test_compute_metrics_can_compute_a_subset_without_fitting_the_logistic(monkeypatch) -> None:
    rng = np.random.default_rng(11)
    target = rng.uniform(0, 5, size=50)
    pred = target + rng.normal(0, 1, size=50)
    full = compute_metrics(pred, target)
    assert list(full) == list(METRICS)

    def no_fit(*args, **kwargs):
        raise AssertionError("the logistic was fitted for metrics that do not need it")

    monkeypatch.setattr("agiqa.evaluate.metrics.logistic_metrics", no_fit)
    subset = compute_metrics(pred, target, metrics=("rmse", "srcc"))
    assert list(subset) == ["srcc", "rmse"]  # METRICS order
    assert subset == {"srcc": full["srcc"], "rmse": full["rmse"]}
    with pytest.raises(ValueError, match="unknown metrics"):
        compute_metrics(pred, target, metrics=("srcc", "mae"))
