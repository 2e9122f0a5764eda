"""IQA evaluation metrics: rank and linear correlations, monotone logistic mappings, RMSE.

All functions take 1-D arrays ``pred`` and ``target`` of equal length and return Python floats.
``compute_metrics`` is the checked entry point: it rejects NaN/inf and inputs shorter than 3, and
returns NaN for the correlations (but a real RMSE) when the predictions or targets are constant,
because correlations are undefined then (a zero-shot model may output near-constant scores).

The logistic mapping before PLCC follows the VQEG practice: a monotonically *increasing* curve
that corrects a non-linear relation between predictions and MOS, fitted per split on the test
part. It never flips a sign and never becomes a threshold, because:

- the curve rises by a non-negative amplitude (``b1 >= b2`` for the 4-parameter form);
- its width is bounded below by ``MIN_WIDTH`` standard deviations of the predictions (and above
  by ``MAX_WIDTH``, where it is a straight line for all purposes);
- its midpoint lies between the ``CENTRE_QUANTILES`` of the predictions, so it cannot turn into
  a step that isolates a few extreme points.

An unconstrained fit of 4 parameters inflates PLCC under the null (predictions independent of the
MOS: mean 0.25 on 48 images); with the constraints the excess stays below 0.05 (tested). When no
increasing curve fits better than a constant (amplitude 0), the mapping is the curve's linear
limit, so ``plcc_logistic`` equals the raw PLCC instead of being undefined.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# scipy is imported inside the functions that use it: it takes about 0.8 s, and the workflow
# imports this module while it parses (docs/performance.md, "Dry run").

_logger = logging.getLogger(__name__)

METRICS = ("srcc", "krcc", "plcc", "plcc_logistic", "rmse", "rmse_logistic")
HIGHER_IS_BETTER = {
    "srcc": True,
    "krcc": True,
    "plcc": True,
    "plcc_logistic": True,
    "rmse": False,
    "rmse_logistic": False,
}
CORRELATIONS = ("srcc", "krcc", "plcc", "plcc_logistic")
MIN_SAMPLES = 3
#: Bounds of the logistic's width, in standard deviations of the predictions.
MIN_WIDTH, MAX_WIDTH = 0.3, 20.0
#: The midpoint lies between these quantiles of the predictions.
CENTRE_QUANTILES = (0.1, 0.9)
_MAXFEV = 20_000


def _as_arrays(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64).ravel()
    target = np.asarray(target, dtype=np.float64).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"pred has {pred.size} values but target has {target.size}")
    return pred, target


def srcc(pred: np.ndarray, target: np.ndarray) -> float:
    """Spearman rank-order correlation coefficient."""
    from scipy import stats

    pred, target = _as_arrays(pred, target)
    return float(stats.spearmanr(pred, target).statistic)


def krcc(pred: np.ndarray, target: np.ndarray) -> float:
    """Kendall rank correlation coefficient (tau-b, which accounts for ties)."""
    from scipy import stats

    pred, target = _as_arrays(pred, target)
    return float(stats.kendalltau(pred, target, variant="b").statistic)


def plcc(pred: np.ndarray, target: np.ndarray) -> float:
    """Pearson linear correlation coefficient on the raw predictions (no fit)."""
    from scipy import stats

    pred, target = _as_arrays(pred, target)
    return float(stats.pearsonr(pred, target).statistic)


def rmse(pred: np.ndarray, target: np.ndarray) -> float:
    """Root-mean-square error on the native scale, without any fit."""
    pred, target = _as_arrays(pred, target)
    return float(np.sqrt(np.mean((pred - target) ** 2)))


# --- monotone logistic mappings ----------------------------------------------------------------


def logistic4(
    x: np.ndarray | float, b1: float, b2: float, b3: float, b4: float
) -> np.ndarray | float:
    """The 4-parameter logistic ``(b1 - b2) / (1 + exp(-(x - b3) / b4)) + b2``.

    ``b1`` and ``b2`` are the upper and lower asymptotes, ``b3`` the midpoint, ``b4`` the width.
    It increases in ``x`` when ``b1 >= b2`` and ``b4 > 0``, which ``fit_logistic`` enforces.
    """
    with np.errstate(over="ignore"):
        return (b1 - b2) / (1.0 + np.exp(-(np.asarray(x, dtype=np.float64) - b3) / b4)) + b2


def logistic5(
    x: np.ndarray | float, b1: float, b2: float, b3: float, b4: float, b5: float
) -> np.ndarray | float:
    """The 5-parameter VQEG logistic ``b1 (1/2 - 1/(1 + exp(b2 (x - b3)))) + b4 x + b5``.

    It increases in ``x`` when ``b1 >= 0``, ``b2 > 0`` and ``b4 >= 0``, which ``fit_logistic``
    enforces (the steepness ``b2`` is the inverse of a width, bounded like ``logistic4``'s).
    """
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore"):
        return b1 * (0.5 - 1.0 / (1.0 + np.exp(b2 * (x - b3)))) + b4 * x + b5


@dataclass(frozen=True)
class LogisticFit:
    """A fitted monotone mapping from predictions onto the MOS scale."""

    kind: str
    params: tuple[float, ...]
    #: True when no increasing curve beat a constant and the linear limit is used instead.
    linear_limit: bool = False

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(LOGISTICS[self.kind].curve(x, *self.params), dtype=np.float64)


@dataclass(frozen=True)
class _Family:
    curve: Callable[..., np.ndarray | float]
    #: (pred, target) -> (initial guess, lower bounds, upper bounds) of the fitted parameters
    setup: Callable[[np.ndarray, np.ndarray], tuple[list[float], list[float], list[float]]]
    #: pred -> parameters of the curve's linear limit (same ranking and PLCC as the raw pred)
    linear: Callable[[np.ndarray], tuple[float, ...]]
    #: the curve as fitted (a re-parametrisation that makes "increasing" a bound), and the map
    #: from its parameters to ``curve``'s
    fitted_curve: Callable[..., np.ndarray | float] | None = None
    to_params: Callable[..., tuple[float, ...]] | None = None


def _spread(pred: np.ndarray) -> tuple[float, float, float]:
    spread = float(np.std(pred)) or 1.0
    low, high = (float(q) for q in np.quantile(pred, CENTRE_QUANTILES))
    return spread, low, high


def _setup4(pred: np.ndarray, target: np.ndarray) -> tuple[list[float], ...]:
    # Fitted as (b2, rise = b1 - b2, b3, b4), so that "increasing" is the bound rise >= 0.
    spread, low, high = _spread(pred)
    span = float(np.ptp(target)) or 1.0
    lower = [float(np.min(target)) - span, 0.0, low, MIN_WIDTH * spread]
    upper = [float(np.max(target)) + span, 4 * span, high, MAX_WIDTH * spread]
    guess = [float(np.min(target)), span, float(np.median(pred)), spread]
    return guess, lower, upper


def _setup5(pred: np.ndarray, target: np.ndarray) -> tuple[list[float], ...]:
    spread, low, high = _spread(pred)
    span = float(np.ptp(target)) or 1.0
    slope = span / (float(np.ptp(pred)) or 1.0)
    lower = [0.0, 1 / (MAX_WIDTH * spread), low, 0.0, -np.inf]
    upper = [4 * span, 1 / (MIN_WIDTH * spread), high, 4 * slope, np.inf]
    guess = [span, 1 / spread, float(np.median(pred)), 0.0, float(np.mean(target))]
    return guess, lower, upper


LOGISTICS: dict[str, _Family] = {
    "logistic4": _Family(
        curve=logistic4,
        setup=_setup4,
        linear=lambda pred: (1.0, 0.0, float(np.mean(pred)), MAX_WIDTH * _spread(pred)[0]),
        fitted_curve=lambda x, b2, rise, b3, b4: logistic4(x, b2 + rise, b2, b3, b4),
        to_params=lambda b2, rise, b3, b4: (b2 + rise, b2, b3, b4),
    ),
    "logistic5": _Family(
        curve=logistic5,
        setup=_setup5,
        linear=lambda pred: (0.0, 1.0, float(np.mean(pred)), 1.0, 0.0),
    ),
}


def fit_logistic(
    pred: np.ndarray, target: np.ndarray, kind: str = "logistic4"
) -> LogisticFit | None:
    """Fit the monotone ``kind`` mapping of ``pred`` onto ``target`` by bounded least squares.

    Returns:
        The fit, or ``None`` when there are no more points than parameters, or the fit fails (the
        caller decides what a failed fit means).
    """
    from scipy import optimize

    pred, target = _as_arrays(pred, target)
    family = _family(kind)
    guess, lower, upper = family.setup(pred, target)
    if len(pred) <= len(guess):  # a fit needs more points than parameters
        _logger.debug("%s fit needs more than %d samples, got %d", kind, len(guess), len(pred))
        return None
    curve = family.fitted_curve or family.curve
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optimize.OptimizeWarning)
            params, _ = optimize.curve_fit(
                curve,
                pred,
                target,
                p0=np.clip(guess, lower, upper),
                bounds=(lower, upper),
                maxfev=_MAXFEV,
            )
    except (RuntimeError, ValueError) as error:
        _logger.debug("%s fit failed: %s", kind, error)
        return None
    if not np.all(np.isfinite(params)):
        return None
    values = (family.to_params or (lambda *p: p))(*params)
    fit = LogisticFit(kind, tuple(float(p) for p in values))
    # No increasing curve fits better than a constant: use the linear limit, not a flat map.
    if np.ptp(fit(pred)) <= 1e-9 * (float(np.ptp(target)) or 1.0):
        return LogisticFit(kind, family.linear(pred), linear_limit=True)
    return fit


def _family(kind: str) -> _Family:
    try:
        return LOGISTICS[kind]
    except KeyError:
        raise ValueError(f"unknown logistic '{kind}'; choose from {sorted(LOGISTICS)}") from None


def fit_logistic4(pred: np.ndarray, target: np.ndarray) -> np.ndarray | None:
    """Parameters ``[b1, b2, b3, b4]`` of the monotone 4-parameter fit (see ``fit_logistic``)."""
    fit = fit_logistic(pred, target, "logistic4")
    return None if fit is None else np.asarray(fit.params)


def logistic_metrics(
    pred: np.ndarray, target: np.ndarray, kind: str = "logistic4"
) -> tuple[float, float]:
    """PLCC and RMSE between ``target`` and the predictions mapped through the fitted logistic.

    When the fit fails (or maps everything to one value) both are NaN and a warning is logged:
    falling back to the raw values would silently report a different metric under this name.
    """
    from scipy import stats

    pred, target = _as_arrays(pred, target)
    fit = fit_logistic(pred, target, kind)
    if fit is None:
        _logger.warning("%s logistic fit failed on %d samples; PLCC/RMSE=NaN", kind, len(pred))
        return math.nan, math.nan
    mapped = fit(pred)
    if np.ptp(mapped) == 0:
        _logger.warning("logistic fit maps all predictions to one value; PLCC/RMSE=NaN")
        return math.nan, math.nan
    plcc_mapped = float(stats.pearsonr(mapped, target).statistic)
    return plcc_mapped, float(np.sqrt(np.mean((mapped - target) ** 2)))


def plcc_logistic(pred: np.ndarray, target: np.ndarray, kind: str = "logistic4") -> float:
    """PLCC after the monotone logistic mapping (see ``logistic_metrics``)."""
    return logistic_metrics(pred, target, kind)[0]


# --- checked entry point -----------------------------------------------------------------------


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


def compute_metrics(
    pred: np.ndarray,
    target: np.ndarray,
    logistic: str = "logistic4",
    metrics: Sequence[str] = METRICS,
) -> dict[str, float]:
    """The ``metrics`` (default all, in ``METRICS`` order); ``logistic`` names the mapping
    (``LOGISTICS``), fitted only when a logistic metric is asked for.

    Raises:
        ValueError: On NaN/inf values, mismatched lengths, fewer than 3 samples or an unknown
            metric.

    Constant ``pred`` or ``target`` give NaN for the correlations (correlation is undefined) and
    ``rmse_logistic``, and a real ``rmse``.
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {METRICS}")
    pred, target = _check(pred, target)
    _family(logistic)
    wanted = [m for m in METRICS if m in metrics]
    if np.ptp(pred) == 0 or np.ptp(target) == 0:
        _logger.warning("constant predictions or targets: correlations are NaN")
        undefined = {**dict.fromkeys(METRICS, math.nan), "rmse": rmse(pred, target)}
        return {m: undefined[m] for m in wanted}
    mapped = (math.nan, math.nan)
    if {"plcc_logistic", "rmse_logistic"} & set(wanted):
        mapped = logistic_metrics(pred, target, logistic)
    computed = {
        "srcc": lambda: srcc(pred, target),
        "krcc": lambda: krcc(pred, target),
        "plcc": lambda: plcc(pred, target),
        "plcc_logistic": lambda: mapped[0],
        "rmse": lambda: rmse(pred, target),
        "rmse_logistic": lambda: mapped[1],
    }
    return {m: computed[m]() for m in wanted}


# --- summaries over splits ---------------------------------------------------------------------


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


def mean_confidence_interval(
    values: Sequence[float], test_train_ratio: float = 0.0, level: float = 0.95
) -> tuple[float, float]:
    """Confidence interval of the mean of per-split values (Student t, ``len - 1`` dof).

    With ``test_train_ratio`` > 0 the variance of the mean uses Nadeau and Bengio's correction
    for resampled splits, ``(1/J + n_test/n_train) s^2`` instead of ``s^2 / J``: training sets of
    different splits overlap, so their scores are not independent and the plain interval would be
    too narrow. NaN bounds when there are fewer than 2 values or any NaN.
    """
    from scipy import stats

    array = np.asarray(values, dtype=np.float64)
    if array.size < 2 or np.isnan(array).any():
        return math.nan, math.nan
    mean = float(np.mean(array))
    scale = math.sqrt((1 / array.size + test_train_ratio) * float(np.var(array, ddof=1)))
    if scale == 0:
        return mean, mean
    low, high = stats.t.interval(level, array.size - 1, loc=mean, scale=scale)
    return float(low), float(high)
