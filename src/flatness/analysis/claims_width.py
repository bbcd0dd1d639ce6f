"""Width claims: wider keeps generalizing (Neyshabur), double descent with label noise (Nakkiran),
final losses concentrate (Choromanska) (verdicts (e1), (e2), (f))."""

from __future__ import annotations

import numpy as np
import pandas as pd

from flatness.analysis._verdict_base import (
    FRACTION,
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    TYPE,
    Verdict,
    boot_ci,
    levels_of,
    make_verdict,
    noise_rows,
    ok_rows,
    too_few_seeds,
)
from flatness.analysis.correlation import kendall_tau

# --- (e), (f): width ----------------------------------------------------------------------------


def wide_nets_generalize(
    table: pd.DataFrame,
    width: str = "model.width",
    noise: float = 0.0,
    tol: float = 0.01,
    fit: float = 0.99,
    n_boot: int = 1000,
    seed: int = 0,
) -> Verdict:
    """(e1) Wider keeps generalizing (Neyshabur et al.): past the interpolation width (the first
    width whose mean train accuracy >= ``fit``), the widest net is not worse: the CI of
    err(widest) - err(interpolation width) stays <= ``tol`` (a non-inferiority margin).

    ``noise`` picks the label-noise fraction of the runs compared (0: clean runs).
    """
    claim = (
        "Wider networks keep generalizing: test error at the largest width is no higher than at "
        "the interpolation threshold."
    )
    df = noise_rows(table, width, noise)
    levels = levels_of(df, width, "test_error")
    train = df.groupby(width)["train_acc"].mean()
    numbers = {
        "noise": noise,
        "widths": list(levels),
        "mean_test_error": [v.mean() for v in levels.values()],
        "mean_train_acc": [train[w] for w in levels],
        "tol": tol,
    }
    fitted = [w for w in levels if train[w] >= fit]
    if len(levels) < 2 or too_few_seeds(levels) or not fitted or fitted[0] == max(levels):
        why = "Need >= 2 seeds per width and a width past the interpolation threshold."
        return make_verdict("e1", claim, INCONCLUSIVE, why, numbers)
    interp, widest = fitted[0], max(levels)
    diff = levels[widest].mean() - levels[interp].mean()
    samples = [levels[widest], levels[interp]]
    low, high = boot_ci(samples, lambda s: s[0].mean() - s[1].mean(), n_boot, seed)
    numbers.update(interpolation_width=interp, widest=widest, diff=diff, diff_ci=[low, high])
    summary = (
        f"Test error at width {widest} minus at the interpolation width {interp} is {diff:+.3f} "
        f"(CI {low:+.3f} to {high:+.3f}; allowed up to {tol:+.3f})."
    )
    return make_verdict(
        "e1", claim, REPRODUCED if high <= tol else NOT_REPRODUCED, summary, numbers
    )


def double_descent(
    table: pd.DataFrame,
    width: str = "model.width",
    noise: float | None = None,
    min_peak: float = 0.01,
    n_boot: int = 1000,
    seed: int = 0,
) -> Verdict:
    """(e2) Model-wise double descent (Nakkiran et al.): with label noise, test error has an
    interior peak. The statistic is P = max over interior widths w of
    min(err(w) - min err(narrower), err(w) - min err(wider)); reproduced when its CI is above
    ``min_peak``. The argmax is re-taken in every resample, so picking the peak is inside the CI.

    ``noise`` is the label-noise fraction to use (default: the largest one in the table).
    """
    claim = "With label noise, test error vs width peaks at an intermediate width (double descent)."
    df = ok_rows(table, [width, "test_error", TYPE, FRACTION])
    noisy = df[(df[TYPE] == "labels") & (df[FRACTION] > 0)]
    if noise is None and len(noisy):
        noise = float(noisy[FRACTION].max())
    levels = levels_of(noisy[noisy[FRACTION] == noise], width, "test_error")
    numbers = {
        "noise": noise,
        "widths": list(levels),
        "mean_test_error": [v.mean() for v in levels.values()],
        "min_peak": min_peak,
    }
    if len(levels) < 3 or too_few_seeds(levels):
        why = "Need >= 3 widths with label noise and >= 2 seeds each."
        return make_verdict("e2", claim, INCONCLUSIVE, why, numbers)
    samples = list(levels.values())
    profile = _peak_profile(np.array([s.mean() for s in samples]))
    low, high = boot_ci(
        samples, lambda ss: _peak_profile(np.array([s.mean() for s in ss])).max(), n_boot, seed
    )
    peak_width = list(levels)[1 + int(np.argmax(profile))]
    numbers.update(peak=profile.max(), peak_ci=[low, high], peak_width=peak_width)
    summary = (
        f"Test error at width {peak_width} stands {profile.max():.3f} above both narrower and "
        f"wider nets (CI {low:.3f} to {high:.3f}; needs > {min_peak}) at label noise {noise}."
    )
    return make_verdict(
        "e2", claim, REPRODUCED if low > min_peak else NOT_REPRODUCED, summary, numbers
    )


def _peak_profile(err: np.ndarray) -> np.ndarray:
    """For each interior width: how far its error stands above the best narrower and wider nets."""
    return np.array(
        [min(err[i] - err[:i].min(), err[i] - err[i + 1 :].min()) for i in range(1, err.size - 1)]
    )


def losses_concentrate(
    table: pd.DataFrame,
    width: str = "model.width",
    loss: str = "train_loss",
    n_boot: int = 1000,
    seed: int = 0,
) -> Verdict:
    """(f) Choromanska et al.: the seed spread (std) of the final loss falls with width, i.e. the
    Kendall tau of width vs std has a CI below 0. Needs >= 3 widths with >= 3 seeds each.

    The std is taken within each configuration (``group_id``) so that other varied settings are not
    mistaken for seed spread; with several configurations per width each one is a point.
    """
    claim = "Final losses concentrate as width grows (their seed spread decreases with width)."
    df = ok_rows(table, [width, loss])
    key = "group_id" if "group_id" in df.columns else width
    groups = {k: g for k, g in df.groupby(key)}
    samples = [g[loss].dropna().to_numpy(float) for g in groups.values()]
    widths = np.array([g[width].iloc[0] for g in groups.values()], dtype=float)
    order = np.argsort(widths, kind="stable")
    widths, samples = widths[order], [samples[i] for i in order]
    numbers = {
        "widths": widths.tolist(),
        "std": [v.std(ddof=1) if v.size > 1 else np.nan for v in samples],
    }
    if np.unique(widths).size < 3 or min(v.size for v in samples) < 3:
        return make_verdict(
            "f", claim, INCONCLUSIVE, "Need >= 3 widths with >= 3 seeds each.", numbers
        )
    levels = dict(enumerate(samples))

    def tau(samples):
        return kendall_tau(widths, [s.std(ddof=1) for s in samples])

    low, high = boot_ci(list(levels.values()), tau, n_boot, seed)
    numbers.update(
        tau=tau(list(levels.values())),
        tau_ci=[low, high],
        std_ratio=numbers["std"][-1] / numbers["std"][0],
    )
    return make_verdict(
        "f",
        claim,
        REPRODUCED if high < 0 else NOT_REPRODUCED,
        (
            f"Kendall tau of width vs seed std of {loss} is {numbers['tau']:.2f} (CI {low:.2f} to "
            f"{high:.2f}); std at the widest / narrowest width = {numbers['std_ratio']:.2f}."
        ),
        numbers,
    )
