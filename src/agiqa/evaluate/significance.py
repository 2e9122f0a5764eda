"""Paired significance tests and bootstrap intervals between models and between protocols.

Two tests compare models evaluated on the same splits:

- **Corrected resampled t-test** (Nadeau and Bengio, 2003) on the per-split metric differences:
  ``t = mean(d) / sqrt((1/J + n_test/n_train) * var(d))`` with ``J - 1`` degrees of freedom
  (scipy's Student t). The correction accounts for the overlap of training sets across splits,
  which makes the plain paired t-test far too liberal.
- **Paired bootstrap over test images** (resampled within each split): each resample draws every
  split's test images with replacement, the same draw for both models, recomputes the metric per
  split and averages over splits. Two-sided p-value = twice the smaller share of resampled
  differences on either side of zero (with the +1 correction), CI = percentile interval.

Resampled metrics are computed in closed form from multiplicity weights (a resampled image that
appears k times weighs k), vectorised over resamples: Spearman from weighted mid-ranks, Pearson
with weights. PLCC after the logistic uses the mapping fitted on the full split (it is not refit
per resample, the usual simplification; the fit itself is in agiqa.evaluate.metrics).

Protocol sensitivity compares protocols instead of models: when two protocols test the same
images (every agiqa protocol is a repeated K-fold, so each image is tested once per repeat),
images are resampled once for both (paired by image); otherwise independently (unpaired).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from agiqa.evaluate.metrics import fit_logistic

#: Metrics the bootstrap can resample.
BOOTSTRAP_METRICS = ("srcc", "plcc", "plcc_logistic")


@dataclass(frozen=True)
class SplitScores:
    """One model's predictions on one split's evaluated part (aligned by ``images``)."""

    split: int
    images: np.ndarray
    pred: np.ndarray
    target: np.ndarray


# --- weighted correlations, vectorised over resamples -------------------------------------------


def weighted_ranks(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mid-ranks of ``values`` in the sample where item i appears ``weights[b, i]`` times.

    Args:
        values: shape ``[n]``.
        weights: non-negative counts, shape ``[B, n]``.

    Returns:
        Shape ``[B, n]``: the rank each item's copies share (tied values share one rank).
    """
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    group = np.cumsum(np.r_[True, ordered[1:] != ordered[:-1]]) - 1
    group_weight = np.add.reduceat(weights[:, order], starts, axis=1)
    before = np.cumsum(group_weight, axis=1) - group_weight
    ranks = np.empty_like(weights, dtype=np.float64)
    ranks[:, order] = (before + (group_weight + 1) / 2)[:, group]
    return ranks


def weighted_pearson(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Pearson correlation of ``x`` and ``y`` (``[n]`` or ``[B, n]``) with weights ``[B, n]``.

    NaN where either side is constant in a resample.
    """
    total = weights.sum(axis=1, keepdims=True)
    mx = (weights * x).sum(axis=1, keepdims=True) / total
    my = (weights * y).sum(axis=1, keepdims=True) / total
    dx, dy = x - mx, y - my
    cov = (weights * dx * dy).sum(axis=1)
    var = (weights * dx**2).sum(axis=1) * (weights * dy**2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 0, cov / np.sqrt(var), np.nan)


def resampled_metric(
    scores: SplitScores, metric: str, weights: np.ndarray, logistic: str = "logistic4"
) -> np.ndarray:
    """``metric`` of one split under each resample's multiplicity ``weights`` ([B, n])."""
    pred, target = scores.pred, scores.target
    if metric == "srcc":
        return weighted_pearson(
            weighted_ranks(pred, weights), weighted_ranks(target, weights), weights
        )
    if metric == "plcc":
        return weighted_pearson(pred, target, weights)
    if metric == "plcc_logistic":
        fit = fit_logistic(pred, target, logistic)
        if fit is None:
            return np.full(len(weights), np.nan)
        return weighted_pearson(fit(pred), target, weights)
    raise ValueError(f"the bootstrap supports {BOOTSTRAP_METRICS}, not '{metric}'")


# --- draws ------------------------------------------------------------------------------------


def within_split_weights(
    sizes: Sequence[int], resamples: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Per split, multinomial counts of a with-replacement draw of its ``size`` test images."""
    return [rng.multinomial(n, np.full(n, 1 / n), size=resamples) for n in sizes]


def image_weights(
    images: np.ndarray, resamples: int, rng: np.random.Generator
) -> tuple[dict[str, int], np.ndarray]:
    """One with-replacement draw over a set of images, shared by everything that tests them."""
    index = {str(image): i for i, image in enumerate(images)}
    n = len(images)
    return index, rng.multinomial(n, np.full(n, 1 / n), size=resamples)


def bootstrap_means(
    splits: Sequence[SplitScores],
    metric: str,
    weights: Sequence[np.ndarray],
    logistic: str = "logistic4",
) -> np.ndarray:
    """Per resample, the metric averaged over splits (``weights[j]`` belongs to ``splits[j]``)."""
    per_split = [
        resampled_metric(s, metric, w, logistic) for s, w in zip(splits, weights, strict=True)
    ]
    return np.mean(per_split, axis=0)


def split_weights_from_images(
    splits: Sequence[SplitScores], index: Mapping[str, int], draw: np.ndarray
) -> list[np.ndarray]:
    """The columns of an image-level draw that each split's images pick."""
    return [draw[:, [index[str(image)] for image in s.images]] for s in splits]


# --- tests and intervals ------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """A minus B on one metric."""

    mean_a: float
    mean_b: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float


def bootstrap_comparison(
    observed_a: float,
    observed_b: float,
    boot_a: np.ndarray,
    boot_b: np.ndarray,
    level: float = 0.95,
) -> Comparison:
    """Percentile interval and two-sided p-value of A - B from paired (or independent) draws."""
    diffs = boot_a - boot_b
    diffs = diffs[np.isfinite(diffs)]
    diff = observed_a - observed_b
    if not math.isfinite(diff) or diffs.size == 0:
        return Comparison(observed_a, observed_b, diff, math.nan, math.nan, math.nan)
    tail = (1 - level) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    below = (1 + np.sum(diffs <= 0)) / (diffs.size + 1)
    above = (1 + np.sum(diffs >= 0)) / (diffs.size + 1)
    p_value = min(1.0, 2 * min(below, above))
    return Comparison(observed_a, observed_b, diff, float(low), float(high), float(p_value))


def corrected_resampled_t(
    differences: Sequence[float], test_train_ratio: float
) -> tuple[float, float]:
    """Nadeau and Bengio's corrected resampled t-test on per-split differences: (t, p)."""
    from scipy import stats

    d = np.asarray(differences, dtype=np.float64)
    if d.size < 2 or not np.all(np.isfinite(d)):
        return math.nan, math.nan
    mean = float(np.mean(d))
    variance = (1 / d.size + test_train_ratio) * float(np.var(d, ddof=1))
    if variance == 0:
        return (math.copysign(math.inf, mean), 0.0) if mean else (0.0, 1.0)
    t = mean / math.sqrt(variance)
    return t, float(2 * stats.t.sf(abs(t), d.size - 1))
