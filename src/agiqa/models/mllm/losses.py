"""Losses and distribution metrics of the MLLM models (methods.md 5.4 and 5.6).

- Thurstone preference: the probability that A beats B when their scores are Gaussian,
  ``Phi((mu_A - mu_B) / sqrt(sigma_A^2 + sigma_B^2))``; DeQA-Score's prediction uses a fixed unit
  std, ``Phi((s_A - s_B) / sqrt(2))``.
- Fidelity loss between a predicted preference p and a target g:
  ``1 - sqrt(p g) - sqrt((1 - p)(1 - g))`` (with DeQA-Score's eps = 1e-8 inside the roots).
- Distribution distances (DeQA-Score's ``cal_distribution_gap.py``): both distributions are read
  as Gaussians, the ground truth N(mu, sigma) on the level scale, the prediction N(E[s], std[s])
  of the five-level softmax; KL(gt || pred), JS through the midpoint Gaussian, and the
  2-Wasserstein distance.
"""

from __future__ import annotations

import math

import numpy as np
import torch

EPS = 1e-8


def thurstone_target(
    mu_a: torch.Tensor, mu_b: torch.Tensor, sigma_a: torch.Tensor, sigma_b: torch.Tensor
) -> torch.Tensor:
    """P(A better than B) from MOS and std (any common scale); std 0 gives ~0, 0.5 or ~1."""
    variance = sigma_a**2 + sigma_b**2 + EPS
    return 0.5 * (1 + torch.erf((mu_a - mu_b) / torch.sqrt(2 * variance)))


def thurstone_probability(mu_a: float, mu_b: float, sigma_a: float, sigma_b: float) -> float:
    """``thurstone_target`` for one pair of plain numbers."""
    variance = sigma_a**2 + sigma_b**2 + EPS
    return 0.5 * (1 + math.erf((mu_a - mu_b) / math.sqrt(2 * variance)))


def fixed_std_preference(score_a: torch.Tensor, score_b: torch.Tensor) -> torch.Tensor:
    """P(A better than B) for predicted scores with unit std each: Phi((s_A - s_B) / sqrt 2)."""
    return 0.5 * (1 + torch.erf((score_a - score_b) / 2))


def fidelity_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean fidelity loss of predicted preferences against target preferences."""
    agree = torch.sqrt(predicted * target + EPS)
    disagree = torch.sqrt((1 - predicted) * (1 - target) + EPS)
    return (1 - agree - disagree).mean()


def soft_kl(log_probabilities: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(target || p) where ``log_probabilities`` are log p at the target's support.

    The target puts all its mass on those tokens (levels, or A/B), so the rest of the
    vocabulary contributes nothing; zero-mass entries are skipped (0 log 0 = 0).
    """
    positive = target > 0
    safe = torch.where(positive, target, torch.ones_like(target))
    terms = torch.where(positive, target * (safe.log() - log_probabilities), 0.0)
    return terms.sum(dim=-1)


def expected_scores(probabilities: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of level distributions ``[..., levels]`` with level ``scores``."""
    mean = probabilities @ scores
    variance = (probabilities * (scores - mean[..., None]) ** 2).sum(axis=-1)
    return mean, np.sqrt(np.maximum(variance, 0.0))


def gaussian_kl(mu_1: np.ndarray, mu_2: np.ndarray, sigma_1: np.ndarray, sigma_2: np.ndarray):
    """KL(N(mu_1, sigma_1) || N(mu_2, sigma_2)), elementwise, with DeQA-Score's eps."""
    return (
        np.log(sigma_2 / (sigma_1 + EPS))
        + (sigma_1**2 + (mu_1 - mu_2) ** 2) / (2 * sigma_2**2 + EPS)
        - 0.5
    )


def gaussian_js(mu_1: np.ndarray, mu_2: np.ndarray, sigma_1: np.ndarray, sigma_2: np.ndarray):
    """Jensen-Shannon divergence approximated through the moment-matched midpoint Gaussian."""
    mu_m = 0.5 * (mu_1 + mu_2)
    sigma_m = np.sqrt(0.5 * (sigma_1**2 + sigma_2**2))
    return 0.5 * gaussian_kl(mu_1, mu_m, sigma_1, sigma_m) + 0.5 * gaussian_kl(
        mu_2, mu_m, sigma_2, sigma_m
    )


def gaussian_wasserstein(
    mu_1: np.ndarray, mu_2: np.ndarray, sigma_1: np.ndarray, sigma_2: np.ndarray
):
    """2-Wasserstein distance between two 1-D Gaussians."""
    return np.sqrt((mu_1 - mu_2) ** 2 + (sigma_1 - sigma_2) ** 2)


def distribution_metrics(
    mu_true: np.ndarray, sigma_true: np.ndarray, mu_pred: np.ndarray, sigma_pred: np.ndarray
) -> dict[str, float]:
    """Mean KL(gt || pred), JS and Wasserstein over images (NaN when there is none)."""
    if not len(mu_true):
        return {"kl": math.nan, "js": math.nan, "wasserstein": math.nan}
    pairs = (mu_true, mu_pred, sigma_true, sigma_pred)
    return {
        "kl": float(np.mean(gaussian_kl(*pairs))),
        "js": float(np.mean(gaussian_js(*pairs))),
        "wasserstein": float(np.mean(gaussian_wasserstein(*pairs))),
    }
