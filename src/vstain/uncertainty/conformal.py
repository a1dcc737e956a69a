"""Split conformal prediction and conformal risk control, in plain numpy (docs/uncertainty.md).

Two procedures, both with the *field* as the exchangeable unit:

* :func:`conformal_quantile` — split conformal for a per-field feature. With n calibration scores
  ``s_i = |measured on prediction − measured on truth| / σ_i``, the interval for a new field is
  ``prediction ± q·σ`` with ``q`` the ``k``-th smallest score, ``k = ⌈(n+1)(1−α)⌉``
  (:func:`quantile_rank`). Then P(truth inside) >= 1 − α for a new exchangeable field.
* :func:`risk_control_lambda` — conformal risk control (Angelopoulos et al., "Conformal risk
  control", 2022) for pixel maps. A field's loss ``L_i(λ)`` is the fraction of its pixels outside
  ``prediction ± λ·u`` (``u``: the spread plus a floor); it falls as λ grows and is at most
  ``B = 1``. The smallest λ with ``n/(n+1)·mean_i L_i(λ) + B/(n+1) <= α`` makes the expected
  fraction of pixels outside on a new field at most α.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from vstain.errors import VstainError

#: σ floor of whole-number features (counts): half a step.
INTEGER_RESOLUTION = 0.5


class NotEnoughCalibration(VstainError, ValueError):
    """The calibration set is too small for the requested miscoverage level."""


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float in (0, 1), or a one-line :class:`~vstain.errors.VstainError`."""
    alpha = float(alpha)
    if not 0.0 < alpha < 1.0 or math.isnan(alpha):
        raise VstainError(f"--alpha must be between 0 and 1 (the miscoverage, e.g. 0.1 for 90 % intervals), "
                          f"got {alpha}")
    return alpha


def minimum_fields(alpha: float) -> int:
    """The fewest calibration fields that give level ``1 − alpha``: the smallest n with α(n+1) >= 1."""
    alpha = check_alpha(alpha)
    # α(n+1) >= 1  <=>  n >= 1/α − 1; the small tolerance keeps 1/0.1 − 1 = 9 from becoming 10.
    return max(1, math.ceil(1.0 / alpha - 1.0 - 1e-9))


def quantile_rank(n: int, alpha: float) -> int:
    """``k = ⌈(n+1)(1−α)⌉``: which order statistic (1-based) of n scores is the conformal quantile.

    Raises
    ------
    NotEnoughCalibration
        When ``k > n`` (``α(n+1) < 1``): n fields cannot give that level.
    """
    alpha = check_alpha(alpha)
    if n < 1:
        raise NotEnoughCalibration("no calibration field has a usable value")
    # Rounded first so that (n+1)(1−α) = 9.000000000000002 is 9, not 10.
    k = math.ceil(round((n + 1) * (1.0 - alpha), 9))
    if k > n:
        check_enough(n, alpha)
    return max(k, 1)


def check_enough(n: int, alpha: float) -> None:
    """Refuse, in one line, ``n`` calibration fields for level ``1 − alpha`` when α(n+1) < 1."""
    needed = minimum_fields(alpha)
    if n < needed:
        raise NotEnoughCalibration(
            f"{n} calibration field{'s' if n != 1 else ''} cannot give {1 - alpha:.0%} intervals "
            f"(alpha {alpha}): that needs at least {needed}; add calibration fields or raise --alpha")


def conformal_quantile(scores: Sequence[float] | np.ndarray, alpha: float) -> float:
    """The split-conformal quantile of ``scores`` (the ``k``-th smallest, see :func:`quantile_rank`).

    Ties need no special care: the order statistic is a value of the sample, so equal scores
    give that value whichever of them is "the k-th".
    """
    values = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if not np.all(np.isfinite(values)):
        raise ValueError("conformal scores must be finite (drop fields without a value first)")
    return float(values[quantile_rank(values.size, alpha) - 1])


def normalised_scores(predicted: np.ndarray, measured: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """``|predicted − measured| / sigma`` elementwise (``sigma`` > 0, the floor already applied)."""
    predicted, measured, sigma = (np.asarray(a, dtype=np.float64) for a in (predicted, measured, sigma))
    if np.any(sigma <= 0):
        raise ValueError("sigma must be positive (apply the floor first)")
    return np.abs(predicted - measured) / sigma


def feature_floor(predicted: np.ndarray, truth: np.ndarray, *, scale: float = 0.01) -> float:
    """The σ floor of one feature: ``max(median |prediction − truth|, scale·median |value|, resolution, 1e-12)``.

    The score divides each field's error by ``max(σ_TTA, floor)``. The TTA spread is a weak signal
    of a feature's error (fields whose eight variants agree still miss), so it is trusted only
    where it says *more* than the typical error of the calibration fields: then the interval widens
    there; elsewhere it is the typical width. Measured on calibration fields only (21/21 splits of
    the benchmark's 42 calibration fields, docs/uncertainty.md): a floor of 0.1 · median σ gave
    intervals 2.5x wider than a constant-width conformal interval for the same coverage; this floor
    gives the constant width on the median feature and keeps the adaptivity.
    A feature whose calibration values are all whole numbers (a count) is never given a floor below
    :data:`INTEGER_RESOLUTION`, half a step. The floor is a constant of the calibration, fixed before
    the scores are ranked (a median over the calibration fields: the guarantee assumes a score fixed in
    advance; a median over 9 or more fields moves it negligibly).
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if not predicted.size:
        return 1e-12
    error = float(np.median(np.abs(predicted - truth)))
    level = max(float(np.median(np.abs(predicted))), float(np.median(np.abs(truth))))
    whole = bool(np.all(predicted == np.round(predicted)) and np.all(truth == np.round(truth)))
    return max(error, scale * level, INTEGER_RESOLUTION if whole else 0.0, 1e-12)


def needed_multipliers(prediction: np.ndarray, truth: np.ndarray, spread: np.ndarray, floor: float) -> np.ndarray:
    """Per pixel, the smallest λ whose interval ``prediction ± λ·max(spread, floor)`` holds the truth."""
    prediction, truth, spread = (np.asarray(a, dtype=np.float64) for a in (prediction, truth, spread))
    if floor <= 0:
        raise ValueError("the pixel floor must be positive")
    return np.abs(truth - prediction) / np.maximum(spread, floor)


def field_loss(sorted_needed: np.ndarray, lam: float) -> float:
    """Fraction of a field's pixels outside the interval at multiplier ``lam``.

    ``sorted_needed`` is :func:`needed_multipliers` of the field, flattened and sorted ascending; a
    pixel is outside when it needs more than ``lam``.
    """
    n = sorted_needed.size
    return float(n - np.searchsorted(sorted_needed, lam, side="right")) / n if n else 0.0


def risk_control_lambda(fields: Sequence[np.ndarray], alpha: float, *, bound: float = 1.0,
                        tolerance: float = 1e-6) -> float:
    """The smallest λ with ``n/(n+1)·mean_i L_i(λ) + bound/(n+1) <= alpha`` (conformal risk control).

    Parameters
    ----------
    fields
        One array per calibration field: :func:`needed_multipliers` of its pixels, sorted ascending
        and flattened.
    alpha
        The risk level: the expected fraction of a new field's pixels outside its interval.
    bound
        The largest value a field's loss can take (1: a fraction).
    tolerance
        λ is exact to a relative ``tolerance``, rounded up (the guarantee holds at the returned λ).

    Raises
    ------
    NotEnoughCalibration
        When ``bound/(n+1) > alpha``: even intervals that hold every calibration pixel cannot bound
        the risk at α with n fields.
    """
    alpha = check_alpha(alpha)
    n = len(fields)
    if n < 1:
        raise NotEnoughCalibration("no calibration field for the pixel intervals")
    if bound / (n + 1) > alpha:
        raise NotEnoughCalibration(
            f"{n} calibration field{'s' if n != 1 else ''} cannot bound the pixel risk at alpha {alpha} "
            f"(needs at least {math.ceil(bound / alpha - 1 - 1e-9)}); add calibration fields or raise --alpha")

    def risk(lam: float) -> float:
        return n / (n + 1) * float(np.mean([field_loss(f, lam) for f in fields])) + bound / (n + 1)

    if risk(0.0) <= alpha:
        return 0.0
    high = max(float(max((f[-1] for f in fields if f.size), default=0.0)), 1e-12)
    # At the largest needed multiplier every pixel is inside: risk = bound/(n+1) <= alpha.
    low = 0.0
    while high - low > tolerance * max(high, 1e-12):
        middle = 0.5 * (low + high)
        if risk(middle) <= alpha:
            high = middle
        else:
            low = middle
    return high


def expected_coverage_spread(n_calibration: int, n_test: int, alpha: float) -> tuple[float, float]:
    """Mean and standard deviation of the empirical coverage of split conformal intervals.

    With n calibration fields the coverage of a new field is Beta(k, n + 1 − k) distributed
    (``k`` from :func:`quantile_rank`); measured on m test fields it is a Beta-binomial fraction.
    This is how far a correct implementation's measured coverage may wander from 1 − α.
    """
    k = quantile_rank(n_calibration, alpha)
    a, b = float(k), float(n_calibration + 1 - k)
    mean = a / (a + b)
    beta_var = a * b / ((a + b) ** 2 * (a + b + 1))
    # Var of the fraction over m test fields: E[p(1-p)]/m + Var[p].
    m = max(int(n_test), 1)
    expected_pq = mean * (1 - mean) - beta_var
    return mean, math.sqrt(expected_pq / m + beta_var)
