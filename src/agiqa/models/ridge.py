"""The closed-form ridge head of ``imagenet_probe`` (the standard linear probe).

Ridge regression on standardised frozen features, intercept unpenalised, one penalty per output
column (each column is its own ridge problem), each chosen by prompt-grouped K-fold
cross-validation inside the training part (held-out SRCC), so no validation or test image shapes
it. The fitted state lives in buffers, so a checkpoint keeps it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from agiqa.errors import ConfigError

#: The ridge penalties tried by default: 10^-1 ... 10^5 in half decades (standardised features).
RIDGE_ALPHAS = tuple(float(10.0 ** (k / 2)) for k in range(-2, 11))


@dataclass(frozen=True)
class RidgeSettings:
    """The ``ridge`` entry: ``{alphas, cv_folds, seed}`` of the closed-form head."""

    alphas: tuple[float, ...] = RIDGE_ALPHAS
    cv_folds: int = 5
    seed: int = 0

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any] | None) -> RidgeSettings:
        entry = dict(entry or {})
        unknown = sorted(set(entry) - {"alphas", "cv_folds", "seed"})
        if unknown:
            raise ConfigError(f"ridge: unknown keys {unknown}")
        if "alphas" in entry:
            alphas = entry["alphas"]
            if not isinstance(alphas, list | tuple) or not alphas:
                raise ConfigError("ridge.alphas must be a non-empty list of penalties")
            entry["alphas"] = tuple(float(a) for a in alphas)
        settings = cls(**entry)
        if not all(a > 0 for a in settings.alphas):
            raise ConfigError(f"ridge.alphas must be positive; got {list(settings.alphas)}")
        if isinstance(settings.cv_folds, bool) or not isinstance(settings.cv_folds, int):
            raise ConfigError("ridge.cv_folds must be an integer >= 2")
        if settings.cv_folds < 2:
            raise ConfigError("ridge.cv_folds must be an integer >= 2")
        return settings


class RidgeHead(nn.Module):
    """``standardise(x) @ weight + bias``, fitted in closed form (buffers, no gradient).

    Each output column is its own ridge problem, so each has its own penalty (``alpha``).
    """

    def __init__(self, features: int, outputs: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(features, dtype=torch.float64))
        self.register_buffer("scale", torch.ones(features, dtype=torch.float64))
        self.register_buffer("weight", torch.zeros(features, outputs, dtype=torch.float64))
        self.register_buffer("bias", torch.zeros(outputs, dtype=torch.float64))
        self.register_buffer("alpha", torch.full((outputs,), float("nan"), dtype=torch.float64))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        standard = (features.double() - self.mean) / self.scale
        return (standard @ self.weight + self.bias).float()

    def fit(self, features: np.ndarray, targets: np.ndarray, alphas: Sequence[float]) -> None:
        """Standardise on ``features`` and solve each output column with its own penalty."""
        mean = features.mean(axis=0)
        scale = features.std(axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)  # a constant feature stays 0 after centring
        weights, biases = ridge_solutions((features - mean) / scale, targets, tuple(alphas))
        columns = np.arange(targets.shape[1])
        for name, value in (("mean", mean), ("scale", scale), ("alpha", np.asarray(alphas))):
            getattr(self, name).copy_(torch.from_numpy(np.asarray(value, dtype=np.float64)))
        self.weight.copy_(torch.from_numpy(weights[columns, :, columns].T.copy()))
        self.bias.copy_(torch.from_numpy(biases[columns, columns].copy()))


def ridge_solutions(
    features: np.ndarray, targets: np.ndarray, alphas: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Ridge weights for every penalty at once, intercept unpenalised.

    ``argmin_W |Yc - Xc W|^2 + alpha |W|^2`` on the centred data, from one eigendecomposition of
    the smaller Gram matrix: ``V diag(1 / (l + alpha)) V^T Xc^T Yc`` with ``Xc^T Xc = V diag(l)
    V^T`` when there are fewer features than rows, else ``Xc^T U diag(1 / (l + alpha)) U^T Yc``
    with ``Xc Xc^T = U diag(l) U^T`` (the same solution). The intercept is the target mean minus
    the feature mean times W.

    Returns:
        ``[len(alphas), features, outputs]`` weights and ``[len(alphas), outputs]`` intercepts.
    """
    x_mean, y_mean = features.mean(axis=0), targets.mean(axis=0)
    centred, centred_y = features - x_mean, targets - y_mean
    penalties = np.asarray(alphas, dtype=np.float64)[:, None]
    primal = centred.shape[1] <= centred.shape[0]
    gram = centred.T @ centred if primal else centred @ centred.T
    eigenvalues, vectors = np.linalg.eigh(gram)
    shrink = 1.0 / (np.clip(eigenvalues, 0.0, None)[None, :] + penalties)  # [alphas, r]
    if primal:
        projected = vectors.T @ (centred.T @ centred_y)  # [r, outputs]
        weights = np.einsum("fr,ar,ro->afo", vectors, shrink, projected, optimize=True)
    else:
        projected = vectors.T @ centred_y
        dual = np.einsum("nr,ar,ro->ano", vectors, shrink, projected, optimize=True)
        weights = np.einsum("nf,ano->afo", centred, dual, optimize=True)
    return weights, y_mean[None, :] - np.einsum("f,afo->ao", x_mean, weights)


def group_folds(groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold number per row, whole groups per fold (seeded shuffle of the distinct groups)."""
    distinct = np.unique(groups)
    if len(distinct) < folds:
        raise ConfigError(
            f"ridge.cv_folds {folds} needs at least {folds} prompt groups in the training part; "
            f"it has {len(distinct)}"
        )
    order = np.random.default_rng(seed).permutation(len(distinct))
    fold_of = dict(zip(distinct[order], np.arange(len(distinct)) % folds, strict=True))
    return np.array([fold_of[g] for g in groups])


def select_alpha(
    features: np.ndarray, targets: np.ndarray, groups: np.ndarray, settings: RidgeSettings
) -> tuple[list[float], np.ndarray]:
    """Per output column, the penalty with the best held-out SRCC over prompt-grouped folds.

    Returns:
        The chosen penalty of each column and the cross-validated SRCC ``[alphas, columns]``
        (the mean over the folds; -1 where a fold's predictions are constant).
    """
    from scipy.stats import spearmanr

    fold = group_folds(groups, settings.cv_folds, settings.seed)
    scores = np.zeros((len(settings.alphas), targets.shape[1]))
    for held in range(settings.cv_folds):
        train, test = fold != held, fold == held
        mean = features[train].mean(axis=0)
        scale = features[train].std(axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        standard = (features[train] - mean) / scale
        weights, biases = ridge_solutions(standard, targets[train], settings.alphas)
        held_out = (features[test] - mean) / scale
        for a in range(len(settings.alphas)):
            values = held_out @ weights[a] + biases[a]
            for d in range(targets.shape[1]):
                srcc = spearmanr(values[:, d], targets[test, d])[0]
                scores[a, d] += (srcc if np.isfinite(srcc) else -1.0) / settings.cv_folds
    chosen = [float(settings.alphas[int(a)]) for a in np.argmax(scores, axis=0)]
    return chosen, scores
