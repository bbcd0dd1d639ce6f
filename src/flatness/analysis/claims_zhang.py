"""Zhang et al. 2017 claims: random labels are fitted, fitting slows and test error rises with
corruption, explicit regularizers are not needed (verdicts (a)-(d))."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from flatness.analysis._verdict_base import (
    FRACTION,
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REGULARIZERS,
    REPRODUCED,
    TYPE,
    Verdict,
    boot_ci,
    corruption_rows,
    make_verdict,
    ok_rows,
    trend,
)

# --- (a)-(c): random labels -------------------------------------------------------------------


def random_labels_fitted(
    table: pd.DataFrame, threshold: float = 0.99, n_boot: int = 1000, seed: int = 0
) -> Verdict:
    """(a) Nets fit fully random labels: train accuracy at fraction 1 has a CI >= ``threshold``."""
    claim = "Networks fit completely random labels (train accuracy ~1 at corruption fraction 1)."
    df = ok_rows(table, [TYPE, FRACTION, "train_acc", "test_acc"])
    acc = df.loc[(df[TYPE] == "labels") & (df[FRACTION] == 1), "train_acc"].to_numpy(float)
    test = df.loc[(df[TYPE] == "labels") & (df[FRACTION] == 1), "test_acc"].to_numpy(float)
    numbers = {"n_runs": acc.size, "threshold": threshold}
    if acc.size < 2:
        return make_verdict(
            "a", claim, INCONCLUSIVE, f"{acc.size} run(s) with random labels; need >= 2.", numbers
        )
    low, high = boot_ci([acc], lambda a: a[0].mean(), n_boot, seed)
    numbers.update(train_acc=acc.mean(), train_acc_ci=[low, high], test_acc=test.mean())
    verdict = REPRODUCED if low >= threshold else NOT_REPRODUCED
    return make_verdict(
        "a",
        claim,
        verdict,
        (
            f"Random labels reach train accuracy {acc.mean():.3f} (CI {low:.3f} to {high:.3f}, "
            f"n={acc.size}) against the {threshold} bar; test accuracy {test.mean():.3f}."
        ),
        numbers,
    )


def time_to_fit_grows(
    table: pd.DataFrame, corruption_type: str = "labels", n_boot: int = 1000, seed: int = 0
) -> Verdict:
    """(b) Time to fit grows with the corruption fraction (Zhang Fig. 1b).

    Runs that never fit are censored at one epoch past the longest run (they took at least that
    long), which keeps them in the ranking instead of silently dropping the slowest runs.
    """
    claim = "Time to fit the training set grows with the label-corruption fraction."
    df = corruption_rows(table, corruption_type, "time_to_fit_epoch")
    ttf = df["time_to_fit_epoch"].astype(float)
    seen = pd.concat([ttf, df["epochs"].astype(float) if "epochs" in df.columns else ttf])
    cap = seen.max() + 1 if seen.notna().any() else np.nan
    df = df.assign(time_to_fit_epoch=ttf.fillna(cap))
    return trend(
        "b",
        claim,
        df,
        FRACTION,
        "time_to_fit_epoch",
        +1,
        n_boot,
        seed,
        {"n_never_fit": int(ttf.isna().sum())},
    )


def test_error_grows(
    table: pd.DataFrame, corruption_type: str = "labels", n_boot: int = 1000, seed: int = 0
) -> Verdict:
    """(c) Test error grows with the corruption fraction (Zhang Fig. 1c)."""
    claim = "Test error at convergence grows with the label-corruption fraction."
    df = corruption_rows(table, corruption_type, "test_error")
    return trend("c", claim, df, FRACTION, "test_error", +1, n_boot, seed, {})


# --- (d): regularizers ------------------------------------------------------------------------


def regularizers_not_needed(
    table: pd.DataFrame,
    margin: float = 0.05,
    n_classes: int = 10,
    above_chance: float = 0.2,
    regularizers: Sequence[str] = REGULARIZERS,
    n_boot: int = 1000,
    seed: int = 0,
) -> Verdict:
    """(d) With every regularizer off, test accuracy is within ``margin`` of the best combination
    and more than ``above_chance`` above chance (1/n_classes), both with confidence.

    The bootstrap re-picks the best combination in every resample, so the winner's curse of taking
    the maximum of noisy means is part of the interval.
    """
    claim = (
        "Explicit regularizers are not needed to generalize (test accuracy with none is near the "
        "best combination and far above chance)."
    )
    df = ok_rows(table, ["test_acc"])
    if TYPE in df.columns:
        df = df[df[TYPE] == "none"]
    regs = [r for r in regularizers if r in df.columns]
    if not regs:
        raise ValueError(f"table has none of the regularizer columns {list(regularizers)}")
    combo = (
        df[regs]
        .astype(float)
        .fillna(0)
        .ne(0)
        .apply(lambda r: "+".join(c for c, on in zip(regs, r, strict=True) if on) or "none", axis=1)
    )
    groups = {k: g.to_numpy(float) for k, g in df["test_acc"].groupby(combo)}
    chance = 1.0 / n_classes
    numbers = {
        "margin": margin,
        "chance": chance,
        "means": {k: v.mean() for k, v in groups.items()},
        "n_runs": {k: v.size for k, v in groups.items()},
    }
    if "none" not in groups or len(groups) < 2 or min(v.size for v in groups.values()) < 2:
        return make_verdict(
            "d",
            claim,
            INCONCLUSIVE,
            "Need the no-regularizer run and another combination, each with >= 2 seeds.",
            numbers,
        )
    names = list(groups)
    i_none = names.index("none")

    def gap(samples):
        return max(s.mean() for s in samples) - samples[i_none].mean()

    gap_ci = boot_ci([groups[k] for k in names], gap, n_boot, seed)
    none_ci = boot_ci([groups["none"]], lambda s: s[0].mean(), n_boot, seed + 1)
    best = max(numbers["means"], key=numbers["means"].get)
    numbers.update(
        best=best, gap=gap([groups[k] for k in names]), gap_ci=list(gap_ci), none_ci=list(none_ci)
    )
    ok = gap_ci[1] <= margin and none_ci[0] > chance + above_chance
    return make_verdict(
        "d",
        claim,
        REPRODUCED if ok else NOT_REPRODUCED,
        (
            f"Without regularizers test accuracy is {groups['none'].mean():.3f} (CI "
            f"{none_ci[0]:.3f} to {none_ci[1]:.3f}; chance {chance:.2f}); the best combination "
            f"({best}) is {numbers['gap']:.3f} better (CI {gap_ci[0]:.3f} to {gap_ci[1]:.3f}; "
            f"margin {margin})."
        ),
        numbers,
    )
