"""IQA evaluation metrics: rank and linear correlations, the 4-parameter logistic fit, RMSE.

All functions take 1-D arrays ``pred`` and ``target`` of equal length and return Python floats.
``compute_metrics`` is the checked entry point: it rejects NaN/inf and inputs shorter than 3, and
returns NaN for the correlations (but a real RMSE) when the predictions or targets are constant,
because correlations are undefined then (a zero-shot model may output near-constant scores).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import optimize, stats

_logger = logging.getLogger(__name__)

METRICS = ("srcc", "krcc", "plcc", "plcc_logistic", "rmse")
HIGHER_IS_BETTER = {
    "srcc": True,
    "krcc": True,
    "plcc": True,
    "plcc_logistic": True,
    "rmse": False,
}
MIN_SAMPLES = 3
_MAXFEV = 20_000


def _as_arrays(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64).ravel()
    target = np.asarray(target, dtype=np.float64).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"pred has {pred.size} values but target has {target.size}")
    return pred, target


def srcc(pred: np.ndarray, target: np.ndarray) -> float:
    """Spearman rank-order correlation coefficient."""
    pred, target = _as_arrays(pred, target)
    return float(stats.spearmanr(pred, target).statistic)


def krcc(pred: np.ndarray, target: np.ndarray) -> float:
    """Kendall rank correlation coefficient (tau-b, which accounts for ties)."""
    pred, target = _as_arrays(pred, target)
    return float(stats.kendalltau(pred, target, variant="b").statistic)


def plcc(pred: np.ndarray, target: np.ndarray) -> float:
    """Pearson linear correlation coefficient on the raw predictions (no fit)."""
    pred, target = _as_arrays(pred, target)
    return float(stats.pearsonr(pred, target).statistic)


def logistic4(
    x: np.ndarray | float, b1: float, b2: float, b3: float, b4: float
) -> np.ndarray | float:
    """The 4-parameter logistic ``(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``.

    ``b1`` and ``b2`` are the upper and lower asymptotes, ``b3`` the midpoint, ``|b4|`` the width.
    """
    # A zero width would divide by zero; the smallest positive float keeps the step function.
    width = abs(b4) or np.finfo(np.float64).tiny
    with np.errstate(over="ignore"):
        return (b1 - b2) / (1.0 + np.exp(-(np.asarray(x, dtype=np.float64) - b3) / width)) + b2


def fit_logistic4(pred: np.ndarray, target: np.ndarray) -> np.ndarray | None:
    """Fit ``logistic4`` mapping ``pred`` onto ``target`` by least squares.

    The initial guess is ``b1 = max(target)``, ``b2 = min(target)``, ``b3 = mean(pred)``,
    ``b4 = std(pred)`` (1 when that is zero).

    Returns:
        The parameters ``[b1, b2, b3, b4]``, or ``None`` when there are 4 samples or fewer, the
        fit does not converge, or it gives non-finite parameters (the caller decides what a
        failed fit means).
    """
    pred, target = _as_arrays(pred, target)
    if len(pred) <= 4:  # four parameters need more than four points to be a fit at all
        _logger.debug("logistic fit needs more than 4 samples, got %d", len(pred))
        return None
    spread = float(np.std(pred))
    guess = [float(np.max(target)), float(np.min(target)), float(np.mean(pred)), spread or 1.0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            params, _ = optimize.curve_fit(logistic4, pred, target, p0=guess, maxfev=_MAXFEV)
    except (RuntimeError, ValueError) as error:
        _logger.debug("logistic fit failed: %s", error)
        return None
    if not np.all(np.isfinite(params)):
        return None
    return np.asarray(params, dtype=np.float64)


def plcc_logistic(pred: np.ndarray, target: np.ndarray) -> float:
    """PLCC between ``target`` and the predictions mapped through the fitted 4-parameter logistic.

    This is the usual VQEG practice for IQA. When the fit fails (or maps everything to one value)
    the result is NaN and a warning is logged: falling back to the raw PLCC would silently report
    a different metric under this name. The fitted curve may be decreasing, so this measures the
    strength of a monotone relation: it can be positive while ``srcc`` is negative.
    """
    pred, target = _as_arrays(pred, target)
    params = fit_logistic4(pred, target)
    if params is None:
        _logger.warning(
            "4-parameter logistic fit failed on %d samples; plcc_logistic=NaN", len(pred)
        )
        return math.nan
    mapped = np.asarray(logistic4(pred, *params))
    if np.ptp(mapped) == 0:
        _logger.warning("logistic fit maps all predictions to one value; plcc_logistic=NaN")
        return math.nan
    return float(stats.pearsonr(mapped, target).statistic)


def rmse(pred: np.ndarray, target: np.ndarray) -> float:
    """Root-mean-square error on the native scale, without any fit."""
    pred, target = _as_arrays(pred, target)
    return float(np.sqrt(np.mean((pred - target) ** 2)))


def _check(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, target = _as_arrays(pred, target)
    if pred.size < MIN_SAMPLES:
        raise ValueError(f"need at least {MIN_SAMPLES} samples to compute metrics, got {pred.size}")
    for name, values in (("pred", pred), ("target", target)):
        bad = ~np.isfinite(values)
        if bad.any():
            raise ValueError(
                f"{name} has {int(bad.sum())} NaN/inf value(s) (first at index {int(bad.argmax())})"
            )
    return pred, target


def compute_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """All metrics in ``METRICS`` order.

    Raises:
        ValueError: On NaN/inf values, mismatched lengths or fewer than 3 samples.

    Constant ``pred`` or ``target`` give NaN for ``srcc``, ``krcc``, ``plcc`` and
    ``plcc_logistic`` (correlation is undefined) and a real ``rmse``.
    """
    pred, target = _check(pred, target)
    if np.ptp(pred) == 0 or np.ptp(target) == 0:
        _logger.warning("constant predictions or targets: correlations are NaN")
        correlations = dict.fromkeys(("srcc", "krcc", "plcc", "plcc_logistic"), math.nan)
        return {**correlations, "rmse": rmse(pred, target)}
    return {
        "srcc": srcc(pred, target),
        "krcc": krcc(pred, target),
        "plcc": plcc(pred, target),
        "plcc_logistic": plcc_logistic(pred, target),
        "rmse": rmse(pred, target),
    }


def summarize(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``) of per-split values.

    A single value gives a std of ``0.0``; any NaN makes both results NaN (a split whose metric is
    undefined makes the average undefined too).

    Raises:
        ValueError: On an empty sequence.
    """
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("cannot summarize an empty sequence of values")
    if np.isnan(array).any():
        return math.nan, math.nan
    if array.size == 1:
        return float(array[0]), 0.0
    return float(np.mean(array)), float(np.std(array, ddof=1))
