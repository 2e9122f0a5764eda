"""DeQA-Score's soft labels, the fidelity loss, the distribution metrics and the anchor maths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from agiqa.models.mllm.common import token_mean
from agiqa.models.mllm.depictqa import (
    TIE_BREAK,
    calibrated,
    monotone_knots,
    quantile_anchors,
    quantile_knots,
    thurstone_outcomes,
)
from agiqa.models.mllm.losses import (
    distribution_metrics,
    expected_scores,
    fidelity_loss,
    fixed_std_preference,
    gaussian_kl,
    soft_kl,
    thurstone_probability,
    thurstone_target,
)
from agiqa.models.mllm.soft_labels import (
    LEVEL_SCORES,
    hard_level,
    soft_label,
    to_level_scale,
    two_level_label,
)


def phi(x: float, mu: float, sigma: float) -> float:
    return math.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))


def test_mos_and_std_map_linearly_onto_the_level_scale() -> None:
    mu, sigma = to_level_scale(np.array([0.0, 2.5, 5.0]), np.array([0.5, 1.0, 0.0]), 0.0, 5.0)
    np.testing.assert_allclose(mu, [1.0, 3.0, 5.0])
    np.testing.assert_allclose(sigma, [0.4, 0.8, 0.0])
    assert to_level_scale(3.0, None, 0.0, 5.0)[1] is None


def test_gaussian_branch_matches_the_hand_computed_label() -> None:
    """mu 4, sigma 1 (pdf): the worked example, every step by hand."""
    p = [phi(x, 4.0, 1.0) for x in (5, 4, 3, 2, 1)]
    total, first = sum(p), sum(x * v for x, v in zip((5, 4, 3, 2, 1), p, strict=True))
    alpha = (4.0 - 3.0) / (first - 3.0 * total + 1e-9)
    beta = (1.0 - alpha * total) / 5.0
    expected = [max(alpha * v + beta, 0.0) for v in p]
    label = soft_label(4.0, 1.0)
    np.testing.assert_allclose(label, expected, rtol=1e-12)
    # The numbers worked out on paper (alpha 1.219469, beta -0.029579; "bad" clipped to 0).
    np.testing.assert_allclose(label, [0.265497, 0.456919, 0.265497, 0.036262, 0.0], atol=2e-6)
    # The clip at 0 is not renormalised (as published): the mean stays within the 0.1 bound.
    assert abs(label @ LEVEL_SCORES - 4.0) < 0.1 and label.sum() == pytest.approx(1.024175, 1e-5)


def test_cdf_density_uses_the_bin_mass() -> None:
    cdf = soft_label(3.5, 0.6, density="cdf")
    assert cdf.sum() == pytest.approx(1.0, abs=1e-9) and cdf @ LEVEL_SCORES == pytest.approx(3.5)


def test_small_std_falls_back_to_the_two_level_label() -> None:
    # sigma 0.1 < 0.2: mass split linearly between levels 3 and 4.
    np.testing.assert_allclose(soft_label(3.25, 0.1), [0.0, 0.25, 0.75, 0.0, 0.0])
    np.testing.assert_allclose(soft_label(3.25, None), [0.0, 0.25, 0.75, 0.0, 0.0])  # no std


def test_large_correction_error_falls_back_to_the_two_level_label() -> None:
    """mu 1.1, sigma 1: clipping the corrected label leaves its mean 0.54 off (> 0.1)."""
    np.testing.assert_allclose(soft_label(1.1, 1.0), [0.0, 0.0, 0.0, 0.1, 0.9], atol=1e-12)
    # With a looser bound the corrected Gaussian is kept instead.
    assert soft_label(1.1, 1.0, error_threshold=1.0)[2] > 0


def test_two_level_label_at_the_ends_and_on_integers() -> None:
    np.testing.assert_allclose(two_level_label(1.0), [0, 0, 0, 0, 1])
    np.testing.assert_allclose(two_level_label(5.0), [1, 0, 0, 0, 0])
    np.testing.assert_allclose(two_level_label(2.0), [0, 0, 0, 1, 0])


def test_mu_three_keeps_the_gaussian_shape() -> None:
    """The published formula flattens mu = 3 exactly to uniform; ours keeps the Gaussian."""
    label = soft_label(3.0, 1.0)
    assert label.sum() == pytest.approx(1.0) and label @ LEVEL_SCORES == pytest.approx(3.0)
    assert label[2] > label[1] > label[0]


def test_hard_levels_are_five_equal_bins_closed_on_the_right() -> None:
    assert [hard_level(m, 0.0, 5.0) for m in (0.0, 1.0, 1.0001, 2.5, 4.2, 5.0)] == [
        4,
        4,
        3,
        2,
        0,
        0,
    ]


def test_fidelity_loss_matches_its_closed_form() -> None:
    p, g = torch.tensor([0.8, 0.3]), torch.tensor([0.6, 0.3])
    expected = [1 - math.sqrt(0.48) - math.sqrt(0.08), 1 - math.sqrt(0.09) - math.sqrt(0.49)]
    assert fidelity_loss(p, g).item() == pytest.approx(sum(expected) / 2, abs=1e-6)
    assert fidelity_loss(torch.tensor([0.3]), torch.tensor([0.3])).item() == pytest.approx(
        0, abs=1e-4
    )


def test_thurstone_preferences() -> None:
    # (3 - 2) / sqrt(0.5^2 + 0.5^2) = 1.4142: Phi = 0.92135.
    three, two, half = torch.tensor(3.0), torch.tensor(2.0), torch.tensor(0.5)
    assert thurstone_target(three, two, half, half).item() == pytest.approx(0.9213504, abs=1e-6)
    assert thurstone_probability(3.0, 2.0, 0.5, 0.5) == pytest.approx(0.9213504, abs=1e-6)
    assert thurstone_probability(2.0, 2.0, 0.0, 0.0) == 0.5  # no std: a hard target
    assert thurstone_probability(2.1, 2.0, 0.0, 0.0) == pytest.approx(1.0)
    # Fixed unit std: Phi(1 / sqrt 2) = 0.76025.
    assert fixed_std_preference(three, two).item() == pytest.approx(0.7602499, abs=1e-6)


def test_soft_kl_skips_zero_mass_and_is_zero_at_the_target() -> None:
    target = torch.tensor([[0.0, 0.25, 0.75]])
    assert soft_kl(target.clamp(min=1e-30).log(), target).item() == pytest.approx(0.0, abs=1e-6)
    uniform = torch.full((1, 3), 1 / 3).log()
    expected = 0.25 * math.log(0.75) + 0.75 * math.log(2.25)
    assert soft_kl(uniform, target).item() == pytest.approx(expected, abs=1e-6)


def test_distribution_metrics_are_deqa_scores_gaussian_forms() -> None:
    # KL(N(0, 1) || N(1, 2)) = log 2 + (1 + 1) / 8 - 1/2.
    value = gaussian_kl(np.array([0.0]), np.array([1.0]), np.array([1.0]), np.array([2.0]))
    assert value[0] == pytest.approx(math.log(2) + 0.25 - 0.5, abs=1e-6)
    same = distribution_metrics(*(np.array([3.0, 4.0]), np.array([0.5, 0.7])) * 2)
    assert same["kl"] == pytest.approx(0, abs=1e-6) and same["wasserstein"] == 0
    moved = distribution_metrics(np.array([3.0]), np.array([1.0]), np.array([4.0]), np.array([1.0]))
    assert moved["wasserstein"] == pytest.approx(1.0) and moved["js"] > 0


def test_expected_scores_of_level_distributions() -> None:
    mean, std = expected_scores(np.array([[0.5, 0, 0, 0, 0.5], [0, 0, 1, 0, 0]]), LEVEL_SCORES)
    np.testing.assert_allclose(mean, [3.0, 3.0])
    np.testing.assert_allclose(std, [2.0, 0.0])


def test_anchors_cover_the_mos_range_one_per_stratum() -> None:
    mos = np.arange(100, dtype=float)[::-1]
    rows = quantile_anchors(mos, 4, seed=0)
    strata = sorted(int(mos[r]) // 25 for r in rows)
    assert strata == [0, 1, 2, 3]
    np.testing.assert_array_equal(rows, quantile_anchors(mos, 4, seed=0))  # seeded


def test_monotone_knots_are_non_decreasing_and_fit_a_monotone_relation() -> None:
    rng = np.random.default_rng(0)
    win = rng.uniform(size=200)
    target = win**2 + rng.normal(scale=0.05, size=200)
    x, y = monotone_knots(win, target, 32)
    assert len(x) == len(y) == 32 and np.all(np.diff(y) >= 0) and np.all(np.diff(x) > 0)
    assert np.interp(0.9, x, y) == pytest.approx(0.81, abs=0.08)


def test_calibration_ties_are_broken_by_the_raw_win_rate() -> None:
    """The isotonic fit is flat over stretches of win rates; the calibrated map is not."""
    rng = np.random.default_rng(3)
    win = rng.uniform(size=300)
    target = np.clip(win + rng.normal(scale=0.3, size=300), 0, 1)  # noisy: many flat blocks
    x, y = monotone_knots(win[:100], target[:100], 32)  # fitted on one part...
    assert (np.diff(y) == 0).sum() >= 4  # ...with flat segments, as in the simulation
    plain = np.interp(win[100:], x, y)
    mapped = calibrated(win[100:], win[100:], x, y)  # ...applied to another
    assert len(np.unique(plain)) < len(np.unique(win[100:]))  # the plain fit creates ties
    assert len(np.unique(mapped)) == len(np.unique(win[100:]))
    assert np.all(np.diff(mapped[np.argsort(win[100:])]) > 0)
    held_out = target[100:]
    assert spearmanr(mapped, held_out)[0] == spearmanr(win[100:], held_out)[0]
    assert spearmanr(plain, held_out)[0] != spearmanr(win[100:], held_out)[0]
    assert np.abs(mapped - plain).max() <= TIE_BREAK  # the scale is barely moved
    assert mapped.min() >= 0 and mapped.max() <= 1


def test_quantile_calibration_maps_a_unit_score_to_training_quantiles() -> None:
    targets = np.random.default_rng(0).beta(2, 5, size=500)
    x, y = quantile_knots(targets, 32)
    assert x[0] == 0 and x[-1] == 1 and np.all(np.diff(y) >= 0)
    assert np.interp(0.5, x, y) == pytest.approx(np.median(targets), abs=0.02)
    assert (y[0], y[-1]) == (targets.min(), targets.max())


def test_thurstone_score_is_linear_in_the_scale_where_the_win_rate_saturates() -> None:
    """Outcomes p = Phi(mu_i - a_k): the mean of Phi^-1(p) is mu_i - mean(a), exactly."""
    from scipy.special import ndtr

    mu = np.linspace(-2.5, 2.5, 11)
    anchors = np.linspace(-1.0, 1.0, 8)
    p = ndtr(mu[:, None] - anchors[None, :])
    thurstone = thurstone_outcomes(p).mean(axis=1)
    np.testing.assert_allclose(thurstone, mu - anchors.mean(), atol=1e-6)
    win = p.mean(axis=1)
    assert np.corrcoef(win, mu)[0, 1] < np.corrcoef(thurstone, mu)[0, 1] == pytest.approx(1.0)
    # Equal win rates (0.9): the image that wins its comparisons more surely scores higher.
    sure = thurstone_outcomes(np.array([[0.9, 0.9], [0.99, 0.81]])).mean(axis=1)
    assert sure[1] > sure[0]
    assert np.isnan(thurstone_outcomes(np.array([np.nan]))[0])  # spread's NaN columns stay NaN


def bradley_terry_mle(win_rate: float, anchors: np.ndarray) -> float:
    """The maximum-likelihood strength against fixed anchors (bisection on its score equation)."""
    low, high = -40.0, 40.0
    for _ in range(200):
        middle = (low + high) / 2
        expected = np.mean(1 / (1 + np.exp(-(middle - anchors))))
        low, high = (middle, high) if expected < win_rate else (low, middle)
    return (low + high) / 2


def test_a_bradley_terry_fit_against_common_anchors_ranks_as_the_win_rate() -> None:
    """Why ``score`` offers Thurstone's least squares and not a Bradley-Terry MLE: when every
    image meets the same anchors its wins are the MLE's sufficient statistic."""
    rng = np.random.default_rng(1)
    anchors = rng.normal(size=8)
    outcomes = rng.uniform(0.02, 0.98, size=(40, 8))
    win = outcomes.mean(axis=1)
    strengths = np.array([bradley_terry_mle(w, anchors) for w in win])
    assert spearmanr(strengths, win)[0] == pytest.approx(1.0)
    thurstone = thurstone_outcomes(outcomes).mean(axis=1)
    assert spearmanr(thurstone, win)[0] < 0.999


def test_token_mean_weighs_every_answer_token_alike() -> None:
    summed = torch.tensor([6.0, 1.0])  # 3 tokens of mean CE 2, 1 token of CE 1
    counts = torch.tensor([3.0, 1.0])
    assert token_mean(summed, counts).item() == pytest.approx(7 / 4)
    assert (summed / counts).mean().item() == pytest.approx(1.5)  # the per-sample mean differs
    equal = torch.tensor([2.0, 2.0])
    assert token_mean(torch.tensor([4.0, 2.0]), equal).item() == pytest.approx(1.5)
