"""Model comparisons, significance-aware best marks and the protocol-sensitivity study.

- ``compare_models``: every pair of models on the same protocol, dataset, dimension and part, per
  table metric: the paired bootstrap over test images (resampled within each split) and the
  corrected resampled t-test across splits (agiqa.evaluate.significance).
- ``significance_marks``: per table column, the top model is marked best only when it is
  significantly better than the runner-up (two-sided, ``alpha``); otherwise the top model and every
  model not significantly worse than it are marked as tied.
- ``protocol_sensitivity``: per dataset, model and dimension, each protocol's mean metrics and its
  difference from the reference protocol (``kfold_grouped``) with a 95% bootstrap interval,
  paired by image when both protocols test the same images.
"""

from __future__ import annotations

import itertools
import logging
import math
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from agiqa.evaluate.metrics import HIGHER_IS_BETTER
from agiqa.evaluate.significance import (
    BOOTSTRAP_METRICS,
    SplitScores,
    bootstrap_comparison,
    bootstrap_means,
    corrected_resampled_t,
    image_weights,
    split_weights_from_images,
    within_split_weights,
)
from agiqa.report.results import PARTS, ReportSettings, RunResult

_logger = logging.getLogger(__name__)

BEST, TIE = "best", "tie"
#: The protocol type other protocols are compared with in the sensitivity study.
REFERENCE_TYPE = "kfold_grouped"
SENSITIVITY_METRICS = ("srcc", "plcc", "plcc_logistic")
P_COLUMNS = {"bootstrap": "p_bootstrap", "corrected_t": "p_corrected_t"}

Runs = dict[tuple[str, str, str], dict[int, RunResult]]  # (protocol, dataset, model) -> split


def _rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator seeded by the config seed and the comparison's identity (order-independent)."""
    return np.random.default_rng([seed, zlib.crc32("/".join(keys).encode())])


def _index(runs: Sequence[RunResult]) -> Runs:
    index: Runs = {}
    for run in runs:
        index.setdefault((run.protocol, run.dataset, run.model), {})[run.split] = run
    return index


def _split_means(
    per_split: pd.DataFrame, keys: dict[str, Any], metric: str, splits: Sequence[int]
) -> tuple[float, np.ndarray]:
    """The metric's per-split values (in ``splits`` order) and their mean."""
    mask = np.ones(len(per_split), dtype=bool)
    for column, value in keys.items():
        mask &= (per_split[column] == value).to_numpy()
    rows = per_split[mask].set_index("split")[metric]
    values = rows.reindex(list(splits)).to_numpy(float)
    return (float(np.mean(values)) if values.size else math.nan), values


def _aligned_scores(
    index: Runs, protocol: str, dataset: str, models: Sequence[str], part: str, dim: str
) -> tuple[list[int], dict[str, list[SplitScores]]]:
    """Scores of each model on the splits they all have, checked to cover the same images."""
    splits = sorted(set.intersection(*(set(index[protocol, dataset, m]) for m in models)))
    scores: dict[str, list[SplitScores]] = {}
    for model in models:
        found = [index[protocol, dataset, model][j].scores(part, dim) for j in splits]
        if any(s is None for s in found):
            continue
        scores[model] = found  # type: ignore[assignment]
    if scores:
        reference = next(iter(scores.values()))
        for model, found in scores.items():
            for ours, theirs in zip(found, reference, strict=True):
                if not np.array_equal(ours.images, theirs.images):
                    run = index[protocol, dataset, model][ours.split]
                    raise ValueError(
                        f"{run.path}: its {part} images differ from the other models' on split "
                        f"{ours.split}; were they trained on different split files? Rerun them."
                    )
    return splits, scores


def compare_models(
    runs: Sequence[RunResult], per_split: pd.DataFrame, settings: ReportSettings
) -> pd.DataFrame:
    """Pairwise comparisons of models (A - B) on every protocol, dataset, dimension and part."""
    index = _index(runs)
    rows: list[dict[str, Any]] = []
    metrics = [m for m in settings.metrics if m in BOOTSTRAP_METRICS]
    for (protocol, dataset), block in per_split.groupby(["protocol", "dataset"], sort=False):
        models = list(dict.fromkeys(block["model"]))
        if len(models) < 2:
            continue
        ratio = float(block["test_train_ratio"].iloc[0])
        for (part, dim), _ in block.groupby(["part", "dimension"], sort=False):
            splits, scores = _aligned_scores(index, protocol, dataset, models, part, dim)
            present = [m for m in models if m in scores]
            if len(present) < 2 or not splits:
                continue
            sizes = [len(s.images) for s in scores[present[0]]]
            rng = _rng(settings.seed, "models", protocol, dataset, part, dim)
            weights = within_split_weights(sizes, settings.resamples, rng)
            for metric in metrics:
                boot = {
                    m: bootstrap_means(scores[m], metric, weights, settings.logistic)
                    for m in present
                }
                observed = {
                    m: _split_means(
                        per_split,
                        {
                            "protocol": protocol,
                            "dataset": dataset,
                            "model": m,
                            "part": part,
                            "dimension": dim,
                        },
                        metric,
                        splits,
                    )
                    for m in present
                }
                for a, b in itertools.combinations(present, 2):
                    comparison = bootstrap_comparison(
                        observed[a][0], observed[b][0], boot[a], boot[b]
                    )
                    t, p_t = corrected_resampled_t(observed[a][1] - observed[b][1], ratio)
                    rows.append(
                        {
                            "protocol": protocol,
                            "dataset": dataset,
                            "dimension": dim,
                            "part": part,
                            "metric": metric,
                            "model_a": a,
                            "model_b": b,
                            "mean_a": comparison.mean_a,
                            "mean_b": comparison.mean_b,
                            "diff": comparison.diff,
                            "ci_low": comparison.ci_low,
                            "ci_high": comparison.ci_high,
                            "p_bootstrap": comparison.p_value,
                            "t_corrected": t,
                            "p_corrected_t": p_t,
                            "n_splits": len(splits),
                            "n_images": int(sum(sizes)),
                            "resamples": settings.resamples,
                        }
                    )
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


COMPARISON_COLUMNS = [
    "protocol",
    "dataset",
    "dimension",
    "part",
    "metric",
    "model_a",
    "model_b",
    "mean_a",
    "mean_b",
    "diff",
    "ci_low",
    "ci_high",
    "p_bootstrap",
    "t_corrected",
    "p_corrected_t",
    "n_splits",
    "n_images",
    "resamples",
]


def pair_p_value(
    comparisons: pd.DataFrame, keys: dict[str, Any], a: str, b: str, test: str
) -> float:
    """The p-value of the comparison of models ``a`` and ``b`` (either order), NaN if absent."""
    mask = np.ones(len(comparisons), dtype=bool)
    for column, value in keys.items():
        mask &= (comparisons[column] == value).to_numpy()
    pair = comparisons[mask]
    pair = pair[
        ((pair["model_a"] == a) & (pair["model_b"] == b))
        | ((pair["model_a"] == b) & (pair["model_b"] == a))
    ]
    return float(pair[P_COLUMNS[test]].iloc[0]) if len(pair) else math.nan


def significance_marks(
    summary: pd.DataFrame, comparisons: pd.DataFrame, settings: ReportSettings
) -> dict[tuple[str, ...], str]:
    """(protocol, dataset, dimension, part, metric, model) -> ``BEST`` or ``TIE``.

    A column with one model gets no mark: there is nothing it is better than.
    """
    if settings.significance_test not in P_COLUMNS:
        raise ValueError(f"significance_test must be one of {sorted(P_COLUMNS)}")
    marks: dict[tuple[str, ...], str] = {}
    groups = summary.groupby(["protocol", "dataset", "dimension", "part"], sort=False)
    for (protocol, dataset, dim, part), group in groups:
        keys = {"protocol": protocol, "dataset": dataset, "dimension": dim, "part": part}
        for metric in settings.metrics:
            means = group.set_index("model")[f"{metric}_mean"].dropna()
            if len(means) < 2:
                continue
            order = list(means.sort_values(ascending=not HIGHER_IS_BETTER[metric]).index)
            column = {**keys, "metric": metric}
            p_vs_top = {
                model: pair_p_value(
                    comparisons, column, order[0], model, settings.significance_test
                )
                for model in order[1:]
            }
            if p_vs_top[order[1]] < settings.alpha:
                marks[protocol, dataset, dim, part, metric, order[0]] = BEST
                continue
            tied = [order[0]] + [m for m in order[1:] if not p_vs_top[m] < settings.alpha]
            for model in tied:
                marks[protocol, dataset, dim, part, metric, model] = TIE
    return marks


def reference_protocol(runs: Sequence[RunResult], settings: ReportSettings) -> str | None:
    """The configured reference protocol, or the first protocol of type ``kfold_grouped``."""
    names = list(dict.fromkeys(run.protocol for run in runs))
    if settings.reference_protocol is not None:
        if settings.reference_protocol not in names:
            raise ValueError(
                f"report.reference_protocol '{settings.reference_protocol}' has no runs "
                f"(protocols with runs: {names})"
            )
        return settings.reference_protocol
    return next((r.protocol for r in runs if r.protocol_settings["type"] == REFERENCE_TYPE), None)


def protocol_sensitivity(
    runs: Sequence[RunResult], per_split: pd.DataFrame, settings: ReportSettings
) -> pd.DataFrame:
    """Each protocol's mean test metrics and its difference from the reference protocol."""
    reference = reference_protocol(runs, settings)
    protocols = list(dict.fromkeys(run.protocol for run in runs))
    if reference is None or len(protocols) < 2:
        return pd.DataFrame()
    index = _index(runs)
    kinds = {run.protocol: run.protocol_spec for run in runs}
    rows = []
    test_rows = per_split[per_split["part"] == "test"]
    for (dataset, model), block in test_rows.groupby(["dataset", "model"], sort=False):
        if (reference, dataset, model) not in index:
            continue
        for dim in dict.fromkeys(block["dimension"]):
            reference_scores = _part_scores(index[reference, dataset, model], dim)
            for protocol in protocols:
                if (protocol, dataset, model) not in index:
                    continue
                other = _part_scores(index[protocol, dataset, model], dim)
                row = {
                    "dataset": dataset,
                    "model": model,
                    "dimension": dim,
                    "protocol": protocol,
                    "reference": reference,
                    "unit": kinds[protocol].kind.unit,
                    "selection": kinds[protocol].selection,
                    "n_splits": len(other),
                }
                row.update(
                    _protocol_difference(
                        test_rows,
                        (dataset, model, dim),
                        (protocol, other),
                        (reference, reference_scores),
                        settings,
                    )
                )
                rows.append(row)
    return pd.DataFrame(rows)


def _part_scores(splits: dict[int, RunResult], dim: str) -> list[SplitScores]:
    found = [splits[j].scores("test", dim) for j in sorted(splits)]
    return [s for s in found if s is not None]


def _protocol_difference(
    test_rows: pd.DataFrame,
    identity: tuple[str, str, str],
    other: tuple[str, list[SplitScores]],
    reference: tuple[str, list[SplitScores]],
    settings: ReportSettings,
) -> dict[str, Any]:
    dataset, model, dim = identity
    (name, scores), (reference_name, reference_scores) = other, reference
    images = [
        np.unique(np.concatenate([s.images for s in group])) for group in (scores, reference_scores)
    ]
    paired = np.array_equal(images[0], images[1])
    rng = _rng(settings.seed, "protocols", dataset, model, dim, name)
    draws = [image_weights(images[0], settings.resamples, rng)]
    draws.append(draws[0] if paired else image_weights(images[1], settings.resamples, rng))
    weights = [
        split_weights_from_images(group, index, draw)
        for group, (index, draw) in zip((scores, reference_scores), draws, strict=True)
    ]
    result: dict[str, Any] = {"paired": bool(paired)}
    for metric in SENSITIVITY_METRICS:
        observed = []
        for protocol, group in ((name, scores), (reference_name, reference_scores)):
            keys = {"dataset": dataset, "model": model, "dimension": dim, "protocol": protocol}
            observed.append(_split_means(test_rows, keys, metric, [s.split for s in group])[0])
        boot = [
            bootstrap_means(group, metric, w, settings.logistic)
            for group, w in zip((scores, reference_scores), weights, strict=True)
        ]
        comparison = bootstrap_comparison(observed[0], observed[1], boot[0], boot[1])
        result[f"{metric}_mean"] = comparison.mean_a
        if name == reference_name:
            continue
        result[f"delta_{metric}"] = comparison.diff
        result[f"delta_{metric}_ci_low"] = comparison.ci_low
        result[f"delta_{metric}_ci_high"] = comparison.ci_high
        result[f"p_{metric}"] = comparison.p_value
    return result


__all__ = [
    "BEST",
    "PARTS",
    "TIE",
    "compare_models",
    "pair_p_value",
    "protocol_sensitivity",
    "significance_marks",
]
