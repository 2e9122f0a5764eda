"""Paired significance tests and intervals between models and between protocols.

Two tests compare models evaluated on the same splits:

- **Corrected resampled t-test** (Nadeau and Bengio, 2003) on the per-split metric differences:
  ``t = mean(d) / sqrt((1/J + n_test/n_train) * var(d))`` with ``J - 1`` degrees of freedom
  (scipy's Student t). Each split's difference carries everything that moves it: the training
  run (initialisation, data order, the selected epoch) and the draw of test prompts. The
  correction accounts for the overlap of training sets across splits, which makes the plain
  paired t-test far too liberal. The default test behind the tables' marks.
- **Paired cluster bootstrap over test prompt groups** (resampled within each split): each
  resample draws every split's test prompt groups with replacement (an image weighs as often as
  its group is drawn), the same draw for both models, recomputes the metric per split and
  averages over splits. Images of one prompt share errors, so drawing images independently makes
  the intervals too narrow. The bootstrap treats the trained models as fixed: it says how sure we
  are about *these* trained models on the population of prompts, not about the method, whose
  retraining varies the metric too. Two-sided p-value = twice the smaller share of resampled
  differences on either side of zero (with the +1 correction), CI = percentile interval. Without
  known groups every image is its own cluster.

Resampled metrics are computed in closed form from multiplicity weights (a resampled image that
appears k times weighs k), vectorised over resamples: Spearman from weighted mid-ranks, Pearson
and RMSE with weights. PLCC and RMSE after the logistic use the mapping fitted on the full split
(it is not refit per resample, the usual simplification; the fit itself is in
agiqa.evaluate.metrics).

Protocol sensitivity compares protocols instead of models. Intervals that count training variance
come from the per-split values: split-paired (``corrected_t_comparison``) when both protocols test
identical folds, else each protocol's corrected variance of its mean combined as in Welch's test
(``unpaired_corrected_comparison``). The cluster bootstrap is paired by prompt group when both
protocols test the same images (every agiqa protocol is a repeated K-fold, so each image is tested
once per repeat) and independent otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from agiqa.evaluate.metrics import fit_logistic

#: Metrics the bootstrap can resample.
BOOTSTRAP_METRICS = ("srcc", "plcc", "plcc_logistic", "rmse", "rmse_logistic")


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


def weighted_rmse(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Root mean squared difference of ``x`` and ``y`` ([n]) with weights ``[B, n]``."""
    return np.sqrt((weights * (x - y) ** 2).sum(axis=1) / weights.sum(axis=1))


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
    if metric == "rmse":
        return weighted_rmse(pred, target, weights)
    if metric in ("plcc_logistic", "rmse_logistic"):
        fit = fit_logistic(pred, target, logistic)
        if fit is None:
            return np.full(len(weights), np.nan)
        if metric == "rmse_logistic":
            return weighted_rmse(fit(pred), target, weights)
        return weighted_pearson(fit(pred), target, weights)
    raise ValueError(f"the bootstrap supports {BOOTSTRAP_METRICS}, not '{metric}'")


# --- draws ------------------------------------------------------------------------------------


def cluster_weights(clusters: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Per resample, each item's multiplicity in a with-replacement draw of its clusters.

    Args:
        clusters: One label per item (its prompt group); items sharing a label are drawn
            together. Unique labels give the ordinary bootstrap over items.

    Returns:
        Shape ``[resamples, n]``: how often each item's cluster was drawn (as many clusters are
        drawn as there are).
    """
    import pandas as pd  # factorize hashes labels: far quicker than sorting strings

    item_cluster, labels = pd.factorize(np.asarray(clusters))
    k = len(labels)
    draws = rng.multinomial(k, np.full(k, 1 / k), size=resamples)
    return draws[:, item_cluster]


def within_split_weights(
    clusters: Sequence[np.ndarray], resamples: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Per split, ``cluster_weights`` of its test images (``clusters[j]``: one label per image)."""
    return [cluster_weights(labels, resamples, rng) for labels in clusters]


def paired_weights(
    images: np.ndarray, clusters: np.ndarray, resamples: int, rng: np.random.Generator
) -> tuple[dict[str, int], np.ndarray]:
    """One cluster draw over a set of images (``clusters``: one label per image), shared by
    everything that tests them: (image -> column, weights ``[resamples, n]``)."""
    index = {str(image): i for i, image in enumerate(images)}
    return index, cluster_weights(clusters, resamples, rng)


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


def bootstrap_interval(
    scores: SplitScores,
    metric: str,
    clusters: np.ndarray,
    resamples: int,
    rng: np.random.Generator,
    logistic: str = "logistic4",
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of one prediction set's ``metric`` under the cluster bootstrap
    (``clusters``: one label per image, e.g. its prompt group); NaN when no resample is finite."""
    values = resampled_metric(scores, metric, cluster_weights(clusters, resamples, rng), logistic)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


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


def corrected_t_comparison(
    values_a: Sequence[float],
    values_b: Sequence[float],
    test_train_ratio: float,
    level: float = 0.95,
) -> Comparison:
    """A - B paired by split: the corrected resampled t-test and interval on the per-split
    differences (NaN bounds and p with fewer than two finite differences)."""
    from agiqa.evaluate.metrics import mean_confidence_interval

    a, b = np.asarray(values_a, dtype=np.float64), np.asarray(values_b, dtype=np.float64)
    differences = a - b
    low, high = mean_confidence_interval(differences, test_train_ratio, level)
    _, p_value = corrected_resampled_t(differences, test_train_ratio)
    return Comparison(
        _mean(a), _mean(b), _mean(differences), float(low), float(high), float(p_value)
    )


def unpaired_corrected_comparison(
    values_a: Sequence[float],
    ratio_a: float,
    values_b: Sequence[float],
    ratio_b: float,
    level: float = 0.95,
) -> Comparison:
    """A - B of two means over different splits (e.g. protocols with different test folds).

    Each mean's variance is Nadeau and Bengio's ``(1/J + n_test/n_train) s^2``; the two add, with
    Welch-Satterthwaite degrees of freedom. It counts training variance and the draw of each
    protocol's test folds; it ignores that both evaluate the same dataset (which makes the two
    means positively correlated), so it is conservative.
    """
    from scipy import stats

    a, b = np.asarray(values_a, dtype=np.float64), np.asarray(values_b, dtype=np.float64)
    mean_a, mean_b = _mean(a), _mean(b)
    diff = mean_a - mean_b
    if min(a.size, b.size) < 2 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return Comparison(mean_a, mean_b, diff, math.nan, math.nan, math.nan)
    parts = [(1 / x.size + r) * float(np.var(x, ddof=1)) for x, r in ((a, ratio_a), (b, ratio_b))]
    variance = sum(parts)
    if variance == 0:
        return Comparison(mean_a, mean_b, diff, diff, diff, 0.0 if diff else 1.0)
    dof = variance**2 / sum(v**2 / (x.size - 1) for v, x in zip(parts, (a, b), strict=True))
    scale = math.sqrt(variance)
    low, high = stats.t.interval(level, dof, loc=diff, scale=scale)
    p_value = float(2 * stats.t.sf(abs(diff) / scale, dof))
    return Comparison(mean_a, mean_b, diff, float(low), float(high), p_value)


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if values.size else math.nan


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
