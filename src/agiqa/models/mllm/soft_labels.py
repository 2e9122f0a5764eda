"""DeQA-Score's score-distribution soft labels (methods.md 5.3), per image.

Five levels, ordered as the level words: excellent, good, fair, poor, bad = 5, 4, 3, 2, 1.

1. MOS and std map linearly to the level scale: mu = 4 (MOS - low) / (high - low) + 1 and
   sigma = 4 std / (high - low). ``low``/``high`` are the MOS range the labels are built on
   (DeQA-Score: the dataset's observed min and max; the deqa model uses its training part's).
2. ``pdf``: the Gaussian density N(x; mu, sigma) at x = 5..1 (KonIQ, KADID), or ``cdf``: the
   mass Phi(x + 0.5) - Phi(x - 0.5) (SPAQ's small stds).
3. An affine correction p' = max(alpha p + beta, 0) with alpha = (mu - 3) / (B - 3A + 1e-9),
   beta = (1 - alpha A) / 5, A = sum p, B = sum x p, so that sum p' = 1 and sum x p' = mu (before
   the clip at 0, which the published code does not renormalise after).
4. The two-level label (mass split linearly between the neighbouring integer levels) replaces it
   when sigma < 0.2 or |sum x p' - mu| > 0.1, and for datasets without a std.

One deliberate difference: at mu = 3 exactly both conditions of step 3 hold for any alpha, and
the published formula then returns alpha = 0, a uniform label (within 1e-8 of mu = 3 it is
nearly uniform). We take alpha = 1 there (the Gaussian shifted by beta), which meets both
conditions and stays close to the labels of its neighbours.
"""

from __future__ import annotations

import math

import numpy as np

#: Level scores in the order of the level words (excellent ... bad).
LEVEL_SCORES = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
DENSITIES = ("pdf", "cdf")
#: DeQA-Score's fallback thresholds (build_soft_labels/config.json).
STD_THRESHOLD = 0.2
ERROR_THRESHOLD = 0.1
_SYMMETRIC = 1e-6


def to_level_scale(
    mos: np.ndarray | float, std: np.ndarray | float | None, low: float, high: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """MOS and std on the [1, 5] level scale of the MOS range [low, high]."""
    if not high > low:
        raise ValueError(f"the MOS range needs high > low; got [{low}, {high}]")
    span = high - low
    mu = 4.0 * (np.asarray(mos, dtype=float) - low) / span + 1.0
    sigma = None if std is None else 4.0 * np.asarray(std, dtype=float) / span
    return mu, sigma


def two_level_label(mu: float) -> np.ndarray:
    """Mass split between the integer levels around ``mu`` (clipped to [1, 5])."""
    mu = min(max(float(mu), 1.0), 5.0)
    lower = min(math.floor(mu), 4)
    label = np.zeros(5)
    # Index of score s in LEVEL_SCORES is 5 - s.
    label[5 - lower] = lower + 1 - mu
    label[5 - (lower + 1)] = mu - lower
    return label


def gaussian_levels(mu: float, sigma: float, density: str = "pdf") -> np.ndarray:
    """Step 2: the uncorrected Gaussian values at the five levels."""
    from scipy.stats import norm

    if density == "pdf":
        return norm.pdf(LEVEL_SCORES, loc=mu, scale=sigma)
    if density == "cdf":
        return norm.cdf(LEVEL_SCORES + 0.5, mu, sigma) - norm.cdf(LEVEL_SCORES - 0.5, mu, sigma)
    raise ValueError(f"density must be one of {DENSITIES}; got {density!r}")


def affine_correction(probabilities: np.ndarray, mu: float) -> np.ndarray:
    """Step 3: p' = max(alpha p + beta, 0) so that p' sums to 1 and has mean ``mu``."""
    total = probabilities.sum()
    first_moment = probabilities @ LEVEL_SCORES
    # Any alpha fits at mu = 3; the published formula's 0 there would flatten the label.
    symmetric = abs(mu - 3.0) < _SYMMETRIC
    alpha = 1.0 if symmetric else (mu - 3.0) / (first_moment - 3.0 * total + 1e-9)
    beta = (1.0 - alpha * total) / 5.0
    return np.maximum(alpha * probabilities + beta, 0.0)


def soft_label(
    mu: float,
    sigma: float | None,
    density: str = "pdf",
    std_threshold: float = STD_THRESHOLD,
    error_threshold: float = ERROR_THRESHOLD,
) -> np.ndarray:
    """The five-level label of one image, from ``mu`` and ``sigma`` on the level scale.

    Args:
        mu: Mean opinion on the [1, 5] level scale (``to_level_scale``).
        sigma: Its std on that scale; None (no published std) gives the two-level label.
        density: ``pdf`` or ``cdf`` (step 2).
        std_threshold: Below this sigma the two-level label is used.
        error_threshold: Above this |mean - mu| after correction, too.

    Returns:
        Probabilities for excellent, good, fair, poor, bad.
    """
    if sigma is None or not np.isfinite(sigma) or sigma < std_threshold:
        return two_level_label(mu)
    corrected = affine_correction(gaussian_levels(mu, sigma, density), mu)
    if abs(corrected @ LEVEL_SCORES - mu) > error_threshold:
        return two_level_label(mu)
    return corrected


def hard_level(mos: float, low: float, high: float) -> int:
    """Index (0 = excellent ... 4 = bad) of the answer word: five equal bins of [low, high].

    As DeQA-Score's ``get_level``: bins are closed on the right, the lowest also on the left.
    """
    if not high > low:
        raise ValueError(f"the MOS range needs high > low; got [{low}, {high}]")
    position = (float(mos) - low) / (high - low) * 5.0
    bin_index = min(max(math.ceil(position - 1e-8) - 1, 0), 4)  # 0 = bad ... 4 = excellent
    return 4 - bin_index
