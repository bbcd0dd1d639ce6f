"""Width claims: wider keeps generalizing (Neyshabur), double descent with label noise (Nakkiran),
losses of the minima found concentrate as the network grows (Choromanska) ((e1), (e2), (f1), (f2)).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special

from flatness.analysis._verdict_base import (
    FRACTION,
    TYPE,
    Counts,
    Verdict,
    decide,
    inconclusive,
    interval_text,
    levels_of,
    noise_rows,
    too_few_seeds,
    usable,
    verdict,
)
from flatness.analysis.claims import CLAIMS
from flatness.analysis.stats import ALPHA, Interval, contrast, weighted_slope


def wide_nets_generalize(
    table: pd.DataFrame,
    width: str = "model.width",
    noise: float = 0.0,
    fit: float = 0.99,
    missing: int = 0,
) -> Verdict:
    """(e1) Past the interpolation width (the first width whose mean train accuracy >= ``fit``),
    the widest net is not worse: err(widest) - err(interpolation width) < the declared margin
    (a non-inferiority test, Welch t). ``noise``: the label-noise fraction compared (0: clean).
    """
    df, diverged = noise_rows(table, width, noise)
    levels = levels_of(df, width, "test_error")
    train = df.groupby(width)["train_acc"].mean()
    counts = Counts(len(df), missing, diverged)
    numbers = {
        "noise": noise,
        "fit_bar": fit,
        "widths": list(levels),
        "mean_test_error": [v.mean() for v in levels.values()],
        "mean_train_acc": [train[w] for w in levels],
    }
    fitted = [w for w in levels if train[w] >= fit]
    if len(levels) < 2 or too_few_seeds(levels) or not fitted or fitted[0] == max(levels):
        why = f"need >= 2 seeds per width and a width past the interpolation width (train acc >= {fit})."
        return inconclusive("e1", counts, why, numbers)
    interp, widest = fitted[0], max(levels)
    iv = contrast([levels[widest], levels[interp]], [1, -1])
    numbers.update(interpolation_width=interp, widest=widest)
    finding = (
        f"Test error at width {widest} minus at the interpolation width {interp} (first width "
        f"with mean train accuracy >= {fit}): {interval_text(iv, '+.3f')}."
    )
    return verdict("e1", counts, decide(CLAIMS["e1"], iv.low, iv.high), finding, numbers, iv)


def double_descent(
    table: pd.DataFrame,
    width: str = "model.width",
    noise: float | None = None,
    fit: float = 0.99,
    missing: int = 0,
) -> Verdict:
    """(e2) With label noise, test error peaks at the interpolation threshold (Nakkiran et al.).

    Candidate peaks are declared from the *train* accuracy, not the test error: the interpolation
    width (first width whose mean train accuracy on the noisy labels >= ``fit``) and its grid
    neighbours (every interior width if no width fits). Statistic: P = max over candidates w of
    min(max_{l<w} d(w, l), max_{r>w} d(w, r)), d(w, v) = err(w) - err(v). Every difference gets a
    pooled-variance t interval, Bonferroni over the M = sum_w max(#narrower, #wider) comparisons
    that can make a false peak; P's bounds are the same max-min of the bounds.
    ``noise``: the label-noise fraction (default: the largest in the table).
    """
    df, diverged = usable(table, [width, "test_error", "train_acc", TYPE, FRACTION])
    noisy = df[(df[TYPE] == "labels") & (df[FRACTION] > 0)]
    if noise is None and len(noisy):
        noise = float(noisy[FRACTION].max())
    rows = noisy[noisy[FRACTION] == noise]
    levels = levels_of(rows, width, "test_error")
    counts = Counts(len(rows), missing, diverged)
    numbers = {"noise": noise, "fit_bar": fit, "widths": list(levels),
               "mean_test_error": [v.mean() for v in levels.values()]}  # fmt: skip
    if len(levels) < 3 or too_few_seeds(levels):
        why = "need >= 3 widths with label noise and >= 2 seeds each."
        return inconclusive("e2", counts, why, numbers)
    samples, k = list(levels.values()), len(levels)
    train = rows.groupby(width)["train_acc"].mean().reindex(list(levels)).to_numpy(float)
    fitted = np.flatnonzero(train >= fit)
    centre = int(fitted[0]) if fitted.size else None
    candidates = [i for i in range(1, k - 1) if centre is None or abs(i - centre) <= 1]
    if not candidates:
        why = f"the interpolation width (train accuracy >= {fit}) is the narrowest or widest."
        return inconclusive("e2", counts, why, numbers)
    n_tests = sum(max(i, k - 1 - i) for i in candidates)
    diffs = {}
    for i in candidates:
        for j in (j for j in range(k) if j != i):
            coefs = np.zeros(k)
            coefs[i], coefs[j] = 1.0, -1.0
            diffs[i, j] = contrast(samples, coefs, ALPHA / n_tests, pooled=True)

    def peak(field):
        return [min(max(getattr(diffs[i, j], field) for j in range(i)),
                    max(getattr(diffs[i, j], field) for j in range(i + 1, k)))
                for i in candidates]  # fmt: skip

    heights, lows, highs = peak("estimate"), peak("low"), peak("high")
    top = int(np.argmax(heights))
    iv = Interval(heights[top], max(lows), max(highs), np.nan, np.nan)
    widths = list(levels)
    numbers.update(peak_width=widths[candidates[top]], n_comparisons=n_tests,
                   candidate_widths=[widths[i] for i in candidates],
                   interpolation_width=None if centre is None else widths[centre])  # fmt: skip
    finding = (
        f"At label noise {noise}, test error at width {numbers['peak_width']} (candidates "
        f"{numbers['candidate_widths']}: the interpolation width and its neighbours) stands "
        f"{interval_text(iv)} above the best narrower and wider nets (Bonferroni over "
        f"{n_tests} comparisons)."
    )
    return verdict("e2", counts, decide(CLAIMS["e2"], iv.low, iv.high), finding, numbers, iv)


def _per_config(df: pd.DataFrame, width: str):
    """(width, rows) per configuration: ``group_id`` when present, else per width."""
    key = "group_id" if "group_id" in df.columns else width
    groups = [(float(g[width].iloc[0]), g) for _, g in df.groupby(key)]
    return sorted(groups, key=lambda wg: wg[0])


def losses_concentrate(
    table: pd.DataFrame, width: str = "model.width", min_seeds: int = 4, missing: int = 0
) -> Verdict:
    """(f1) Choromanska et al.: the spread of the final *test* loss across seeds narrows with width.

    Scale-free: the coefficient of variation (std / mean), so a loss that merely shrinks does not
    count as concentrating. Its log has sampling variance psi1((n-1)/2)/4 + CV^2/n (normal data),
    so the weighted slope of log CV on log2(width) gets a z interval.
    """
    df, diverged = usable(table, [width, "test_loss"])
    configs = [(w, g["test_loss"].dropna().to_numpy(float)) for w, g in _per_config(df, width)]
    counts = Counts(len(df), missing, diverged)
    widths = [w for w, _ in configs]
    numbers = {"widths": widths, "n_seeds": [v.size for _, v in configs],
               "cv": [v.std(ddof=1) / v.mean() if v.size > 1 else np.nan for _, v in configs]}  # fmt: skip
    if len(set(widths)) < 3 or min(v.size for _, v in configs) < min_seeds:
        return inconclusive("f1", counts, f"need >= 3 widths with >= {min_seeds} seeds.", numbers)
    cv = np.array(numbers["cv"])
    n = np.array(numbers["n_seeds"], dtype=float)
    var = special.polygamma(1, (n - 1) / 2) / 4 + cv**2 / n
    iv = weighted_slope(np.log2(widths), np.log(cv), var)
    finding = (
        f"Slope of log(CV of test loss) per doubling of width: {interval_text(iv)}; CV goes "
        f"from {cv[0]:.3g} (width {widths[0]:g}) to {cv[-1]:.3g} (width {widths[-1]:g})."
    )
    return verdict("f1", counts, decide(CLAIMS["f1"], iv.low, iv.high), finding, numbers, iv)


def train_test_correlation_weakens(
    table: pd.DataFrame, width: str = "model.width", min_seeds: int = 5, missing: int = 0
) -> Verdict:
    """(f2) Choromanska et al.: across seeds, train and test loss correlate less as width grows.

    Per configuration the Pearson r of (train loss, test loss) over seeds; Fisher's z = atanh(r)
    has variance 1/(n-3), so the weighted slope of z on log2(width) gets a z interval.
    """
    df, diverged = usable(table, [width, "train_loss", "test_loss"])
    configs = [(w, g[["train_loss", "test_loss"]].dropna().to_numpy(float))
               for w, g in _per_config(df, width)]  # fmt: skip
    counts = Counts(len(df), missing, diverged)
    widths = [w for w, _ in configs]
    numbers = {"widths": widths, "n_seeds": [len(v) for _, v in configs]}
    if len(set(widths)) < 3 or min(len(v) for _, v in configs) < min_seeds:
        return inconclusive("f2", counts, f"need >= 3 widths with >= {min_seeds} seeds.", numbers)
    r = np.array([np.corrcoef(v[:, 0], v[:, 1])[0, 1] for _, v in configs])
    numbers["r"] = r.tolist()
    if not np.isfinite(r).all():
        return inconclusive("f2", counts, "a width has constant train or test loss.", numbers)
    n = np.array(numbers["n_seeds"], dtype=float)
    z = np.arctanh(np.clip(r, -0.999999, 0.999999))
    iv = weighted_slope(np.log2(widths), z, 1.0 / (n - 3))
    finding = (
        f"Slope of Fisher z(train/test loss correlation) per doubling of width: "
        f"{interval_text(iv)}; r goes from {r[0]:.2f} to {r[-1]:.2f}."
    )
    return verdict("f2", counts, decide(CLAIMS["f2"], iv.low, iv.high), finding, numbers, iv)
