"""The conformal math of src/vstain/uncertainty/conformal.py: hand-computed values, limits, and coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vstain.errors import VstainError
from vstain.uncertainty.conformal import (
    NotEnoughCalibration,
    conformal_quantile,
    expected_coverage_spread,
    feature_floor,
    field_loss,
    minimum_fields,
    needed_multipliers,
    normalised_scores,
    quantile_rank,
    risk_control_lambda,
)


@pytest.mark.parametrize(("n", "alpha", "k"), [
    (9, 0.1, 9),     # ⌈10 · 0.9⌉ = 9 (the float product 9.000000000000002 must not round up)
    (19, 0.1, 18),   # ⌈20 · 0.9⌉
    (40, 0.1, 37),   # ⌈41 · 0.9⌉ = ⌈36.9⌉
    (40, 0.2, 33),   # ⌈41 · 0.8⌉ = ⌈32.8⌉
    (4, 0.2, 4),     # ⌈5 · 0.8⌉
    (1, 0.5, 1),     # ⌈2 · 0.5⌉
])
def test_quantile_rank_is_the_finite_sample_index(n, alpha, k):
    assert quantile_rank(n, alpha) == k


@pytest.mark.parametrize(("alpha", "fewest"), [(0.1, 9), (0.2, 4), (0.5, 1), (0.05, 19), (0.3, 3)])
def test_minimum_fields_is_the_smallest_n_with_alpha_n_plus_1_at_least_1(alpha, fewest):
    assert minimum_fields(alpha) == fewest
    assert alpha * (fewest + 1) >= 1 - 1e-12
    assert fewest == 1 or alpha * fewest < 1


def test_too_few_fields_for_the_level_is_one_clear_error():
    with pytest.raises(NotEnoughCalibration) as caught:
        quantile_rank(8, 0.1)  # α(n+1) = 0.9 < 1
    message = str(caught.value)
    assert "\n" not in message
    assert "8 calibration fields cannot give 90% intervals" in message
    assert "at least 9" in message and "--alpha" in message
    with pytest.raises(NotEnoughCalibration, match="3 calibration fields"):
        quantile_rank(3, 0.2)


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_alpha_outside_0_1_is_refused(alpha):
    with pytest.raises(VstainError, match="--alpha must be between 0 and 1"):
        quantile_rank(10, alpha)


def test_conformal_quantile_takes_the_kth_smallest_score():
    scores = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert conformal_quantile(scores, 0.2) == 5.0   # k = ⌈6 · 0.8⌉ = 5
    assert conformal_quantile(scores, 0.34) == 4.0  # k = ⌈6 · 0.66⌉ = ⌈3.96⌉ = 4
    assert conformal_quantile(scores, 0.5) == 3.0   # k = ⌈3⌉ = 3


def test_conformal_quantile_with_ties_is_the_tied_value():
    assert conformal_quantile([1.0, 2.0, 2.0, 2.0, 3.0], 0.4) == 2.0  # k = ⌈3.6⌉ = 4: a 2
    assert conformal_quantile([2.0, 2.0, 2.0, 2.0], 0.2) == 2.0


def test_conformal_quantile_refuses_non_finite_scores():
    with pytest.raises(ValueError, match="finite"):
        conformal_quantile([1.0, math.nan, 2.0], 0.5)


def test_normalised_scores_and_floor():
    scores = normalised_scores(np.array([10.0, 4.0]), np.array([7.0, 5.0]), np.array([1.5, 0.5]))
    np.testing.assert_allclose(scores, [2.0, 2.0])
    with pytest.raises(ValueError, match="positive"):
        normalised_scores(np.array([1.0]), np.array([1.0]), np.array([0.0]))
    # median |error| 0.5 vs 0.01 · median |value| 0.305: the error wins
    assert feature_floor(np.array([10.5, 20.0, 30.5]), np.array([10.0, 20.5, 30.5])) == pytest.approx(0.5)
    # tiny errors: the feature's scale
    assert feature_floor(np.array([100.25, 200.0]), np.array([100.0, 200.0])) == pytest.approx(1.50125)
    # whole numbers (counts): at least half a step
    assert feature_floor(np.array([10.0, 12.0, 11.0]), np.array([10.0, 12.0, 11.0])) == 0.5
    assert feature_floor(np.zeros(0), np.zeros(0)) == 1e-12  # never zero


def test_needed_multiplier_and_field_loss_by_hand():
    needed = needed_multipliers(np.array([10.0, 10.0, 10.0]), np.array([13.0, 10.0, 4.0]), np.array([2.0, 0.0, 5.0]),
                                floor=1.0)
    np.testing.assert_allclose(needed, [1.5, 0.0, 1.2])  # |3|/max(2, 1), 0/max(0, 1), |6|/max(5, 1)
    ordered = np.sort(np.array([0.0, 1.0, 2.0, 3.0]))
    assert field_loss(ordered, 0.0) == 0.75   # 1, 2, 3 need more than 0
    assert field_loss(ordered, 2.0) == 0.25   # only 3
    assert field_loss(ordered, 3.0) == 0.0


def test_risk_control_lambda_by_hand():
    # n = 2, α = 0.5: need (2/3)·mean L(λ) + 1/3 <= 1/2, i.e. mean L <= 1/4.
    a = np.array([0.0, 1.0, 2.0, 3.0])  # L_A(2) = 1/4, L_A(3) = 0
    b = np.array([0.0, 0.0, 4.0, 4.0])  # L_B = 1/2 until λ = 4
    lam = risk_control_lambda([a, b], 0.5)
    assert 3.0 <= lam <= 3.0 * (1 + 1e-5)  # mean L(λ < 3) = 3/8; mean L(3) = 1/4
    # Rounded up, never down: the guarantee holds at the returned λ.
    assert np.mean([field_loss(a, lam), field_loss(b, lam)]) <= 0.25


def test_risk_control_needs_enough_fields():
    with pytest.raises(NotEnoughCalibration, match="1 calibration field cannot bound the pixel risk"):
        risk_control_lambda([np.array([1.0])], 0.4)  # B/(n+1) = 1/2 > 0.4


def test_risk_control_gives_zero_when_every_pixel_is_inside_already():
    assert risk_control_lambda([np.zeros(4)] * 9, 0.1) == 0.0


def test_expected_coverage_spread():
    mean, spread = expected_coverage_spread(9, 1000, 0.1)
    assert mean == pytest.approx(0.9)  # Beta(9, 1)
    assert spread == pytest.approx(math.sqrt(9 / (100 * 11) + (0.09 - 9 / 1100) / 1000), rel=1e-9)
    mean40, spread40 = expected_coverage_spread(40, 40, 0.1)
    assert mean40 == pytest.approx(37 / 41)
    assert 0.04 < spread40 < 0.07


def test_split_conformal_covers_new_fields_at_the_level():
    """Heteroscedastic data, σ known up to noise: coverage over many draws is 1 − α (or a little above)."""
    rng = np.random.default_rng(0)
    alpha, n, m, draws = 0.1, 40, 40, 400
    covered = []
    for _ in range(draws):
        sigma = rng.uniform(0.5, 3.0, n + m)
        errors = rng.standard_normal(n + m) * sigma
        scores = np.abs(errors[:n]) / sigma[:n]
        q = conformal_quantile(scores, alpha)
        covered.append(np.mean(np.abs(errors[n:]) <= q * sigma[n:]))
    expected, _ = expected_coverage_spread(n, m, alpha)
    assert abs(np.mean(covered) - expected) < 0.01


def test_risk_control_bounds_the_expected_pixel_miss_rate():
    rng = np.random.default_rng(1)
    alpha, n, draws = 0.1, 20, 100
    risks = []
    for _ in range(draws):
        fields = []
        for _ in range(n + 1):
            scale = rng.uniform(0.5, 2.0)  # fields differ: some are harder than their spread says
            fields.append(np.sort(np.abs(rng.standard_normal(500)) * scale))
        lam = risk_control_lambda(fields[:n], alpha)
        risks.append(field_loss(fields[n], lam))
    assert np.mean(risks) <= alpha + 0.01
    assert np.mean(risks) > alpha - 0.05  # and not uselessly wide


def test_agrees_with_crepes():
    """An independent implementation (crepes' normalised conformal regressor) gives the same intervals.

    Levels where α(n+1) is a whole number are left out: crepes computes ``int((1 − confidence)(n + 1))``
    in floating point, and 1 − 0.9 = 0.0999… makes it take one order statistic more (n = 19, α = 0.1:
    the largest score instead of the 18th); vstain's exact index is tested above.
    """
    crepes = pytest.importorskip("crepes")
    rng = np.random.default_rng(2)
    for n, alpha in ((40, 0.1), (40, 0.2), (25, 0.1), (23, 0.3), (41, 0.25)):
        sigma = rng.uniform(0.5, 2.0, n)
        residuals = rng.standard_normal(n) * sigma * 3
        q = conformal_quantile(np.abs(residuals) / sigma, alpha)
        regressor = crepes.ConformalRegressor().fit(residuals, sigmas=sigma)
        y_hat, new_sigma = np.array([10.0, -4.0]), np.array([1.0, 2.5])
        theirs = regressor.predict_int(y_hat, sigmas=new_sigma, confidence=1 - alpha)
        np.testing.assert_allclose(theirs[:, 0], y_hat - q * new_sigma, rtol=1e-12)
        np.testing.assert_allclose(theirs[:, 1], y_hat + q * new_sigma, rtol=1e-12)
