"""Model comparisons, significance-aware best marks and the protocol-sensitivity study.

- ``compare_models``: every pair of models on the same protocol, dataset, dimension and part, per
  table metric: the corrected resampled t-test across splits (with its interval), which counts
  the variance of training, and the paired cluster bootstrap over test prompt groups (resampled
  within each split), which treats the trained models as fixed (agiqa.evaluate.significance).
- ``significance_marks``: per table column, the top model is marked best only when it is
  significantly better than every other model (two-sided, ``alpha``, by ``significance_test``:
  the corrected t-test unless set to ``bootstrap``); otherwise the top model and every model not
  significantly worse than it are marked as tied. Beating the runner-up alone is not enough:
  under a test that counts training variance, a model with a noisier mean further down can stay
  indistinguishable from the top.
- ``protocol_sensitivity``: per dataset, model and dimension, each protocol's mean metrics and its
  difference from the reference protocol (``kfold_grouped``), with the factors that differ. Its
  95% interval counts training variance: paired by split when both protocols test identical
  folds, else Welch's combination of both protocols' corrected variances. A cluster bootstrap
  interval over prompt groups (the trained models fixed) is given beside it.
- ``protocol_contrasts``: the same differences between every two protocols that differ in one
  factor only (split unit, selection, training-set size), so each factor is measured alone.
"""

from __future__ import annotations

import itertools
import logging
import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from agiqa.data.splits import FACTORS, ProtocolKind
from agiqa.evaluate.metrics import HIGHER_IS_BETTER
from agiqa.evaluate.significance import (
    BOOTSTRAP_METRICS,
    SplitScores,
    bootstrap_comparison,
    bootstrap_means,
    corrected_resampled_t,
    corrected_t_comparison,
    paired_weights,
    split_weights_from_images,
    unpaired_corrected_comparison,
    within_split_weights,
)
from agiqa.report.results import PARTS, ReportSettings, RunResult, metric_part

_logger = logging.getLogger(__name__)

BEST, TIE = "best", "tie"
#: The protocol type other protocols are compared with in the sensitivity study.
REFERENCE_TYPE = "kfold_grouped"
SENSITIVITY_METRICS = ("srcc", "plcc", "plcc_logistic")
P_COLUMNS = {"bootstrap": "p_bootstrap", "corrected_t": "p_corrected_t"}
#: What the bootstrap resamples within a split.
PROMPT_GROUPS, IMAGES = "prompt groups", "images"
#: How a protocol difference's training-variance interval pairs the two protocols.
SPLIT_PAIRED, UNPAIRED = "splits", "unpaired"
#: The level of each factor that the honest protocol has (contrasts start from it).
HONEST_LEVELS = {"unit": "prompt", "selection": "val", "training_set": "carved"}

Runs = dict[tuple[str, str, str], dict[int, RunResult]]  # (protocol, dataset, model) -> split
#: dataset -> prompt group of each image (a Series indexed by image).
Groups = Mapping[str, pd.Series]


def _rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator seeded by the config seed and the comparison's identity (order-independent)."""
    return np.random.default_rng([seed, zlib.crc32("/".join(keys).encode())])


def _index(runs: Sequence[RunResult]) -> Runs:
    index: Runs = {}
    for run in runs:
        index.setdefault((run.protocol, run.dataset, run.model), {})[run.split] = run
    return index


# --- prompt groups ------------------------------------------------------------------------------


def prompt_groups(runs: Sequence[RunResult]) -> dict[str, pd.Series]:
    """dataset -> prompt group per image, from the manifest each dataset's runs recorded.

    Datasets whose manifest cannot be found are left out (their images are then resampled one
    by one, with a warning).
    """
    from agiqa.report.pooled import load_manifests

    return groups_from_manifests(load_manifests(runs))


def groups_from_manifests(manifests: Mapping[str, tuple[pd.DataFrame, list]]) -> dict:
    """dataset -> prompt group per image, from ``agiqa.report.pooled.load_manifests``' result."""
    return {
        dataset: frame.set_index("image")["prompt_group"].astype(str)
        for dataset, (frame, _) in manifests.items()
    }


def _clusters(groups: Groups, dataset: str, images: np.ndarray) -> tuple[np.ndarray, str]:
    """Each image's resampling cluster (its prompt group) and what the clusters are.

    An image without a known group is its own cluster; the unit is then ``images``.
    """
    images = np.asarray(images).astype(str)
    known = groups.get(dataset)
    if known is None:
        return images, IMAGES
    found = pd.Series(images).map(known)
    if found.isna().any():
        _logger.warning(
            "%s: %d test images have no prompt group in the manifest; each is resampled alone",
            dataset,
            int(found.isna().sum()),
        )
        return np.where(found.isna(), "image:" + images, "group:" + found.astype(str)), IMAGES
    return found.to_numpy(str), PROMPT_GROUPS


def _resolve_groups(runs: Sequence[RunResult], groups: Groups | None) -> Groups:
    found = prompt_groups(runs) if groups is None else groups
    for dataset in dict.fromkeys(run.dataset for run in runs):
        if dataset not in found:
            _logger.warning(
                "%s: no prompt groups (no manifest found next to the runs): the bootstrap "
                "resamples images one by one, which understates its uncertainty",
                dataset,
            )
    return found


# --- per-split values and scores ----------------------------------------------------------------


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


def _scores(run: RunResult, part: str, dim: str, metric: str) -> SplitScores | None:
    """The predictions ``metric`` is computed from (agiqa.report.aggregate.metric_part)."""
    return run.scores(metric_part(run, part, metric), dim)


def _aligned_scores(
    index: Runs,
    protocol: str,
    dataset: str,
    models: Sequence[str],
    part: str,
    dim: str,
    metric: str = "srcc",
) -> tuple[list[int], dict[str, list[SplitScores]]]:
    """Scores of each model on the splits they all have, checked to cover the same images."""
    splits = sorted(set.intersection(*(set(index[protocol, dataset, m]) for m in models)))
    scores: dict[str, list[SplitScores]] = {}
    for model in models:
        found = [_scores(index[protocol, dataset, model][j], part, dim, metric) for j in splits]
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


# --- model comparisons ---------------------------------------------------------------------------


def compare_models(
    runs: Sequence[RunResult],
    per_split: pd.DataFrame,
    settings: ReportSettings,
    groups: Groups | None = None,
) -> pd.DataFrame:
    """Pairwise comparisons of models (A - B) on every protocol, dataset, dimension and part.

    Args:
        runs: The finished runs.
        per_split: ``collect_runs`` of them.
        settings: The report settings (resamples, seed, metrics, logistic).
        groups: dataset -> prompt group per image, for the cluster bootstrap; None looks them up
            in the manifests the runs recorded (``prompt_groups``).
    """
    index = _index(runs)
    groups = _resolve_groups(runs, groups)
    rows: list[dict[str, Any]] = []
    metrics = [m for m in settings.metrics if m in BOOTSTRAP_METRICS]
    for (protocol, dataset), block in per_split.groupby(["protocol", "dataset"], sort=False):
        models = list(dict.fromkeys(block["model"]))
        if len(models) < 2:
            continue
        ratio = float(block["test_train_ratio"].iloc[0])
        for (part, dim), rated in block.groupby(["part", "dimension"], sort=False):
            keys = {"protocol": protocol, "dataset": dataset, "part": part, "dimension": dim}
            # Only the models that predict this dimension (a paper preset may train fewer).
            models = list(dict.fromkeys(rated["model"]))
            splits, scores = _aligned_scores(index, protocol, dataset, models, part, dim)
            present = [m for m in models if m in scores]
            if len(present) < 2 or not splits:
                continue
            drawn = [_clusters(groups, dataset, s.images) for s in scores[present[0]]]
            unit = IMAGES if any(u == IMAGES for _, u in drawn) else PROMPT_GROUPS
            rng = _rng(settings.seed, "models", protocol, dataset, part, dim)
            weights = within_split_weights([c for c, _ in drawn], settings.resamples, rng)
            for metric in metrics:
                metric_scores = scores
                if any(
                    metric_part(index[protocol, dataset, m][j], part, metric) != part
                    for m in present
                    for j in splits
                ):
                    _, metric_scores = _aligned_scores(
                        index, protocol, dataset, present, part, dim, metric
                    )
                boot = {
                    m: bootstrap_means(metric_scores[m], metric, weights, settings.logistic)
                    for m in present
                }
                observed = {
                    m: _split_means(per_split, {**keys, "model": m}, metric, splits)
                    for m in present
                }
                for a, b in itertools.combinations(present, 2):
                    booted = bootstrap_comparison(observed[a][0], observed[b][0], boot[a], boot[b])
                    difference = observed[a][1] - observed[b][1]
                    t, _ = corrected_resampled_t(difference, ratio)
                    paired = corrected_t_comparison(observed[a][1], observed[b][1], ratio)
                    rows.append(
                        {
                            **keys,
                            "metric": metric,
                            "model_a": a,
                            "model_b": b,
                            "mean_a": booted.mean_a,
                            "mean_b": booted.mean_b,
                            "diff": booted.diff,
                            "ci_low": booted.ci_low,
                            "ci_high": booted.ci_high,
                            "p_bootstrap": booted.p_value,
                            "t_corrected": t,
                            "p_corrected_t": paired.p_value,
                            "ci_low_corrected_t": paired.ci_low,
                            "ci_high_corrected_t": paired.ci_high,
                            "n_splits": len(splits),
                            "n_images": int(sum(len(s.images) for s in scores[present[0]])),
                            "resampled": unit,
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
    "ci_low_corrected_t",
    "ci_high_corrected_t",
    "n_splits",
    "n_images",
    "resampled",
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

    A column with one model gets no mark: there is nothing it is better than. With a test that
    cannot decide (one split under the corrected t-test), the top models are tied.
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
            if all(p < settings.alpha for p in p_vs_top.values()):
                marks[protocol, dataset, dim, part, metric, order[0]] = BEST
                continue
            tied = [order[0]] + [m for m in order[1:] if not p_vs_top[m] < settings.alpha]
            for model in tied:
                marks[protocol, dataset, dim, part, metric, model] = TIE
    return marks


# --- protocols ----------------------------------------------------------------------------------


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


def changed_factors(kind: ProtocolKind, baseline: ProtocolKind) -> list[str]:
    """The factors (``FACTORS`` keys) in which ``kind`` differs from ``baseline``."""
    return [f for f in FACTORS if getattr(kind, f) != getattr(baseline, f)]


def factor_text(factors: Sequence[str]) -> str:
    """Factor keys as the tables name them (``"selection + training-set size"``)."""
    return " + ".join(FACTORS[f] for f in factors) or "none"


def protocol_sensitivity(
    runs: Sequence[RunResult],
    per_split: pd.DataFrame,
    settings: ReportSettings,
    groups: Groups | None = None,
) -> pd.DataFrame:
    """Each protocol's mean test metrics and its difference from the reference protocol.

    Columns per metric m (the ``SENSITIVITY_METRICS`` that ``report.metrics`` shows): ``m_mean``;
    for every protocol but the reference, ``delta_m`` with the interval that counts training
    variance (``delta_m_ci_low/high``, ``p_m``; ``pairing``: by ``splits`` or ``unpaired``) and
    the cluster bootstrap's over prompt groups (``delta_m_boot_ci_low/high``, ``p_m_bootstrap``;
    ``paired``: one draw for both). ``changes`` names the factors in which the protocol differs
    from the reference.
    """
    reference = reference_protocol(runs, settings)
    protocols = list(dict.fromkeys(run.protocol for run in runs))
    if reference is None or len(protocols) < 2:
        return pd.DataFrame()
    study = _ProtocolStudy(runs, per_split, settings, _resolve_groups(runs, groups))
    rows = []
    for dataset, model, dim in study.cells():
        if (reference, dataset, model) not in study.index:
            continue
        for protocol in protocols:
            if (protocol, dataset, model) in study.index:
                rows.append(study.difference((dataset, model, dim), protocol, reference))
    return pd.DataFrame(rows)


def protocol_contrasts(
    runs: Sequence[RunResult],
    per_split: pd.DataFrame,
    settings: ReportSettings,
    groups: Groups | None = None,
) -> pd.DataFrame:
    """Differences between every two protocols that differ in exactly one factor.

    Each row goes from the protocol with the honest level of its ``factor`` (prompt groups,
    selection on validation, a validation part carved) to the other, with the columns of
    ``protocol_sensitivity`` (``reference`` is the baseline of the row).
    """
    protocols = list(dict.fromkeys(run.protocol for run in runs))
    if len(protocols) < 2:
        return pd.DataFrame()
    study = _ProtocolStudy(runs, per_split, settings, _resolve_groups(runs, groups))
    pairs = []
    for a, b in itertools.permutations(protocols, 2):
        baseline = study.kinds[a].kind
        factors = changed_factors(study.kinds[b].kind, baseline)
        if len(factors) == 1 and getattr(baseline, factors[0]) == HONEST_LEVELS[factors[0]]:
            pairs.append((a, b, factors[0]))
    rows = []
    for dataset, model, dim in study.cells():
        for baseline, protocol, factor in pairs:
            present = all((p, dataset, model) in study.index for p in (baseline, protocol))
            if present:
                row = study.difference((dataset, model, dim), protocol, baseline)
                rows.append({"factor": FACTORS[factor], **row})
    return pd.DataFrame(rows)


class _ProtocolStudy:
    """What protocol differences are computed from: the runs by protocol, their per-split test
    metrics, and the prompt groups."""

    def __init__(
        self,
        runs: Sequence[RunResult],
        per_split: pd.DataFrame,
        settings: ReportSettings,
        groups: Groups,
    ) -> None:
        self.index = _index(runs)
        self.kinds = {run.protocol: run.protocol_spec for run in runs}
        self.test_rows = per_split[per_split["part"] == "test"]
        self.settings = settings
        self.groups = groups
        self._scores: dict[tuple, list[SplitScores]] = {}
        #: The sensitivity metrics the report shows (``report.metrics``; SRCC at least).
        self.metrics = [m for m in SENSITIVITY_METRICS if m in settings.metrics] or ["srcc"]

    def cells(self) -> list[tuple[str, str, str]]:
        """Every (dataset, model, dimension) with test results, in table order."""
        keys = ["dataset", "model", "dimension"]
        return list(dict.fromkeys(self.test_rows[keys].itertuples(index=False, name=None)))

    def values(self, protocol: str, cell: tuple[str, str, str], metric: str) -> np.ndarray:
        dataset, model, dim = cell
        keys = {"dataset": dataset, "model": model, "dimension": dim, "protocol": protocol}
        splits = sorted(self.index[protocol, dataset, model])
        return _split_means(self.test_rows, keys, metric, splits)[1]

    def ratio(self, protocol: str) -> float:
        return self.kinds[protocol].test_train_ratio

    def scores(self, protocol: str, cell: tuple[str, str, str], metric: str) -> list[SplitScores]:
        """Each split's test scores ``metric`` is computed from (read once, then reused)."""
        dataset, model, dim = cell
        runs = self.index[protocol, dataset, model]
        parts = tuple(metric_part(runs[j], "test", metric) for j in sorted(runs))
        key = (protocol, cell, parts)
        if key not in self._scores:
            found = [runs[j].scores(part, dim) for j, part in zip(sorted(runs), parts, strict=True)]
            self._scores[key] = [s for s in found if s is not None]
        return self._scores[key]

    def difference(self, cell: tuple[str, str, str], protocol: str, baseline: str) -> dict:
        """One table row: ``protocol`` against ``baseline`` on one dataset, model, dimension."""
        dataset, model, dim = cell
        kind, base = self.kinds[protocol], self.kinds[baseline]
        row: dict[str, Any] = {
            "dataset": dataset,
            "model": model,
            "dimension": dim,
            "protocol": protocol,
            "reference": baseline,
            "unit": kind.kind.unit,
            "selection": kind.selection,
            "training_set": kind.kind.training_set,
            "changes": factor_text(changed_factors(kind.kind, base.kind)),
            "n_splits": len(self.index[protocol, dataset, model]),
        }
        for metric in self.metrics:
            values = self.values(protocol, cell, metric)
            row[f"{metric}_mean"] = float(np.mean(values)) if values.size else math.nan
        if protocol == baseline:
            return row
        pairing = self._pairing(cell, protocol, baseline)
        boot = self._bootstrap(cell, protocol, baseline)
        for metric in self.metrics:
            values = self.values(protocol, cell, metric)
            reference_values = self.values(baseline, cell, metric)
            if pairing == SPLIT_PAIRED:
                ratio = max(self.ratio(protocol), self.ratio(baseline))
                delta = corrected_t_comparison(values, reference_values, ratio)
            else:
                delta = unpaired_corrected_comparison(
                    values, self.ratio(protocol), reference_values, self.ratio(baseline)
                )
            booted = boot(metric, row[f"{metric}_mean"], float(np.mean(reference_values)))
            row |= {
                f"delta_{metric}": delta.diff,
                f"delta_{metric}_ci_low": delta.ci_low,
                f"delta_{metric}_ci_high": delta.ci_high,
                f"p_{metric}": delta.p_value,
                f"delta_{metric}_boot_ci_low": booted.ci_low,
                f"delta_{metric}_boot_ci_high": booted.ci_high,
                f"p_{metric}_bootstrap": booted.p_value,
            }
        return row | {"pairing": pairing, "paired": boot.paired, "resampled": boot.unit}

    def _pairing(self, cell: tuple[str, str, str], protocol: str, baseline: str) -> str:
        """``splits`` when both protocols test identical folds (same splits, same test images
        in each), else ``unpaired``."""
        dataset, model, _ = cell
        ours, theirs = self.index[protocol, dataset, model], self.index[baseline, dataset, model]
        if sorted(ours) != sorted(theirs) or len(ours) < 2:
            return UNPAIRED
        tested = [self.scores(p, cell, "srcc") for p in (protocol, baseline)]
        if any(len(found) != len(ours) for found in tested):
            return UNPAIRED
        for a, b in zip(*tested, strict=True):
            if a.split != b.split or not np.array_equal(a.images, b.images):
                return UNPAIRED
        return SPLIT_PAIRED

    def _bootstrap(self, cell: tuple[str, str, str], protocol: str, baseline: str) -> _Bootstrap:
        dataset, model, dim = cell
        first = [self.scores(p, cell, "srcc") for p in (protocol, baseline)]
        images = [np.unique(np.concatenate([s.images for s in group])) for group in first]
        paired = bool(np.array_equal(images[0], images[1]))
        rng = _rng(self.settings.seed, "protocols", dataset, model, dim, protocol, baseline)
        draws, units = [], []
        for found in images[:1] if paired else images:
            clusters, unit = _clusters(self.groups, dataset, found)
            draws.append(paired_weights(found, clusters, self.settings.resamples, rng))
            units.append(unit)
        if paired:
            draws.append(draws[0])
        unit = IMAGES if IMAGES in units else PROMPT_GROUPS
        return _Bootstrap(self, cell, (protocol, baseline), draws, paired, unit)


class _Bootstrap:
    """The cluster bootstrap of one protocol difference, metric by metric (one draw for all)."""

    def __init__(
        self,
        study: _ProtocolStudy,
        cell: tuple[str, str, str],
        protocols: tuple[str, str],
        draws: list[tuple[dict[str, int], np.ndarray]],
        paired: bool,
        unit: str,
    ) -> None:
        self.study, self.cell, self.protocols, self.draws = study, cell, protocols, draws
        self.paired, self.unit = paired, unit

    def __call__(self, metric: str, observed: float, observed_reference: float):
        boot = []
        for protocol, (index, draw) in zip(self.protocols, self.draws, strict=True):
            scores = self.study.scores(protocol, self.cell, metric)
            weights = split_weights_from_images(scores, index, draw)
            boot.append(bootstrap_means(scores, metric, weights, self.study.settings.logistic))
        return bootstrap_comparison(observed, observed_reference, boot[0], boot[1])


__all__ = [
    "BEST",
    "PARTS",
    "TIE",
    "compare_models",
    "pair_p_value",
    "prompt_groups",
    "protocol_contrasts",
    "protocol_sensitivity",
    "significance_marks",
]
