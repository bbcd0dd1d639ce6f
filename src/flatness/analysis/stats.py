"""The calibrated interval rules behind every verdict.

Each claim is decided from a two-sided 95% interval, i.e. one-sided 97.5% bounds: "reproduced" needs
the lower (or upper) bound past the no-effect boundary, so a claim that is false at the boundary is
"reproduced" at most 2.5% of the time. ``tests/test_calibration.py`` checks that by simulation for
every rule, at the seed counts the studies use, and reports each rule's power.

Why these methods and not a percentile bootstrap over seeds: with 2-5 seeds per level a bootstrap of
a mean has too little spread (it ignores the n/(n-1) variance factor and the t tails), and the
simulations showed it says "reproduced" 6-19% of the time on false claims. Student t intervals with
Welch-Satterthwaite degrees of freedom hold at n = 2; pooled-variance t intervals are used where
many comparisons share one variance (double descent); permutation p-values plus Holm's step-down
correct the many measures of claim (g).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.025  # each side of a two-sided 95% interval


@dataclass(frozen=True)
class Interval:
    """A point estimate with its interval; ``df`` is the t degrees of freedom (inf for z)."""

    estimate: float
    low: float
    high: float
    se: float
    df: float

    def as_list(self) -> list[float]:
        return [self.low, self.high]


def contrast(
    samples: Sequence[np.ndarray],
    coefs: Sequence[float],
    alpha: float = ALPHA,
    pooled: bool = False,
) -> Interval:
    """Interval of ``sum_i c_i mean(sample_i)``: Welch-Satterthwaite t, or pooled-variance t.

    Every sample needs >= 2 values (a variance); a zero standard error gives a point interval.
    """
    samples = [np.asarray(s, dtype=float) for s in samples]
    if len(samples) != len(coefs) or min(s.size for s in samples) < 2:
        raise ValueError(
            f"contrast needs one coefficient per sample and >= 2 values each; got sizes "
            f"{[s.size for s in samples]} and {len(coefs)} coefficients"
        )
    c = np.asarray(coefs, dtype=float)
    n = np.array([s.size for s in samples], dtype=float)
    means = np.array([s.mean() for s in samples])
    var = np.array([s.var(ddof=1) for s in samples])
    estimate = float(c @ means)
    if pooled:
        df = float((n - 1).sum())
        se2 = float(((n - 1) * var).sum() / df * (c**2 / n).sum())
    else:
        terms = c**2 * var / n
        se2 = float(terms.sum())
        df = float(se2**2 / (terms**2 / (n - 1)).sum()) if se2 > 0 else np.inf
    return _interval(estimate, np.sqrt(se2), df, alpha)


def mean_interval(values: np.ndarray, alpha: float = ALPHA) -> Interval:
    """Student t interval of a mean (one-sample contrast)."""
    return contrast([values], [1.0], alpha)


def slope_coefs(x: Sequence[float]) -> np.ndarray:
    """Contrast weights whose contrast of the level means is their least-squares slope on ``x``."""
    x = np.asarray(x, dtype=float)
    centred = x - x.mean()
    return centred / (centred**2).sum()


def weighted_slope(x: np.ndarray, y: np.ndarray, var: np.ndarray, alpha: float = ALPHA) -> Interval:
    """Weighted least-squares slope of ``y`` on ``x`` with known variances ``var``: a z interval."""
    w = 1.0 / np.asarray(var, dtype=float)
    xbar = (w * x).sum() / w.sum()
    sxx = (w * (x - xbar) ** 2).sum()
    slope = float((w * (x - xbar) * y).sum() / sxx)
    return _interval(slope, float(np.sqrt(1.0 / sxx)), np.inf, alpha)


def permutation_tau_pvalues(
    sx: np.ndarray, sy: np.ndarray, observed: float, n_perm: int, rng: np.random.Generator
) -> tuple[float, float]:
    """One-sided permutation p-values (tau > 0, tau < 0) of Kendall's tau-b from sign matrices.

    Permuting the target over configurations is exact under "no association"; p = (1 + hits) /
    (1 + n_perm) keeps the Monte Carlo p-value valid.
    """
    n = sx.shape[0]
    den = np.sqrt(np.abs(sx).sum() * np.abs(sy).sum())
    if n < 3 or den == 0 or not np.isfinite(observed):
        return np.nan, np.nan
    taus = np.empty(n_perm)
    for start in range(0, n_perm, 256):
        perms = np.argsort(rng.random((min(256, n_perm - start), n)), axis=1)
        permuted = sy[perms[:, :, None], perms[:, None, :]]
        taus[start : start + len(perms)] = (permuted * sx).sum(axis=(1, 2)) / den
    eps = 1e-12
    greater = (1 + (taus >= observed - eps).sum()) / (1 + n_perm)
    less = (1 + (taus <= observed + eps).sum()) / (1 + n_perm)
    return float(greater), float(less)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and is not counted as a test)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m = order.size
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def _interval(estimate: float, se: float, df: float, alpha: float) -> Interval:
    q = stats.norm.ppf(1 - alpha) if not np.isfinite(df) else stats.t.ppf(1 - alpha, df)
    half = q * se if se > 0 else 0.0
    return Interval(estimate, estimate - half, estimate + half, se, df)
