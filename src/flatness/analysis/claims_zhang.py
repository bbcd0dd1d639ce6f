"""Zhang et al. 2017 claims: random labels are fitted, fitting slows and test error rises with
corruption, explicit regularizers are not needed (verdicts (a)-(d2)).

Each function takes the study rows of its grid and ``missing`` (runs of those grids with no
metrics), and returns one ``Verdict`` decided by the claim's declared rule (``claims.CLAIMS``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from flatness.analysis._verdict_base import (
    CONTRADICTED,
    FRACTION,
    INCONCLUSIVE,
    REGULARIZERS,
    REPRODUCED,
    TYPE,
    Counts,
    Verdict,
    corruption_rows,
    decide,
    inconclusive,
    interval_text,
    levels_of,
    too_few_seeds,
    usable,
    verdict,
)
from flatness.analysis.claims import CLAIMS
from flatness.analysis.stats import ALPHA, Interval, contrast, mean_interval, slope_coefs

# --- (a)-(c): random labels -------------------------------------------------------------------


def random_labels_fitted(table: pd.DataFrame, missing: int = 0) -> Verdict:
    """(a) Train accuracy at corruption fraction 1: its t interval must clear the 0.99 bar."""
    df, diverged = usable(table, [TYPE, FRACTION, "train_acc", "test_acc"])
    random = df[(df[TYPE] == "labels") & (df[FRACTION] == 1)]
    acc = random["train_acc"].to_numpy(float)
    counts = Counts(acc.size, missing, diverged)
    if acc.size < 2:
        return inconclusive("a", counts, f"{acc.size} run(s) with random labels; need >= 2.")
    iv = mean_interval(acc)
    test = float(random["test_acc"].mean())
    finding = f"Random labels reach train accuracy {interval_text(iv, '.4f')}; test {test:.3f}."
    return verdict(
        "a", counts, decide(CLAIMS["a"], iv.low, iv.high), finding, {"test_acc": test}, iv
    )


def trend(cid: str, df: pd.DataFrame, y: str, counts: Counts, extra: dict) -> Verdict:
    """Slope of the level means of ``y`` on the corruption fraction, Welch t interval."""
    levels = levels_of(df, FRACTION, y)
    numbers = {"levels": list(levels), "means": [v.mean() for v in levels.values()], **extra}
    if len(levels) < 3 or too_few_seeds(levels):
        sizes = [v.size for v in levels.values()]
        why = f"need >= 3 corruption levels with >= 2 seeds each; have seeds {sizes}."
        return inconclusive(cid, counts, why, numbers)
    iv = contrast(list(levels.values()), slope_coefs(list(levels)))
    finding = (
        f"Slope of {y} on the corruption fraction: {interval_text(iv)}; level means "
        f"{numbers['means'][0]:.3g} (fraction {min(levels):g}) to {numbers['means'][-1]:.3g} "
        f"(fraction {max(levels):g})."
    )
    return verdict(cid, counts, decide(CLAIMS[cid], iv.low, iv.high), finding, numbers, iv)


def time_to_fit_grows(table: pd.DataFrame, corruption_type: str = "labels", missing: int = 0):
    """(b) log(time to fit) grows with the corruption fraction (Zhang Fig. 1b).

    Runs that never fit are censored at one epoch past the longest run (they took at least that
    long), which keeps them in the estimate instead of silently dropping the slowest runs; their
    number is printed.
    """
    df, diverged = corruption_rows(table, corruption_type, "time_to_fit_epoch")
    ttf = df["time_to_fit_epoch"].astype(float)
    seen = pd.concat([ttf, df["epochs"].astype(float) if "epochs" in df.columns else ttf])
    cap = seen.max() + 1 if seen.notna().any() else np.nan
    df = df.assign(log_time_to_fit=np.log(ttf.fillna(cap).clip(lower=1)))
    extra = {"n_never_fit": int(ttf.isna().sum()), "censored_at_epoch": cap}
    return trend("b", df, "log_time_to_fit", Counts(len(df), missing, diverged), extra)


def test_error_grows(table: pd.DataFrame, corruption_type: str = "labels", missing: int = 0):
    """(c) Test error grows with the corruption fraction (Zhang Fig. 1c)."""
    df, diverged = corruption_rows(table, corruption_type, "test_error")
    return trend("c", df, "test_error", Counts(len(df), missing, diverged), {})


# --- (d1), (d2): regularizers -----------------------------------------------------------------


def regularizer_groups(table: pd.DataFrame, regularizers: Sequence[str] = REGULARIZERS):
    """Test accuracies per regularizer combination ("none": all off), and the diverged count."""
    df, diverged = usable(table, ["test_acc"])
    if TYPE in df.columns:
        df = df[df[TYPE] == "none"]
    regs = [r for r in regularizers if r in df.columns]
    if not regs:
        raise ValueError(f"table has none of the regularizer columns {list(regularizers)}")
    on = df[regs].astype(float).fillna(0).ne(0)
    combo = on.apply(lambda r: "+".join(c for c, o in zip(regs, r, strict=True) if o) or "none", 1)
    groups = {k: g.to_numpy(float) for k, g in df["test_acc"].groupby(combo)}
    return groups, diverged


def accuracy_without_regularizers(
    table: pd.DataFrame, n_classes: int = 10, missing: int = 0
) -> Verdict:
    """(d1) Test accuracy with every regularizer off, minus chance, has a t interval > 0.2."""
    groups, diverged = regularizer_groups(table)
    none = groups.get("none", np.array([]))
    counts = Counts(none.size, missing, diverged)
    if none.size < 2:
        return inconclusive("d1", counts, f"{none.size} run(s) without regularizers; need >= 2.")
    chance = 1.0 / n_classes
    iv = mean_interval(none - chance)
    finding = (
        f"Test accuracy without regularizers minus chance ({chance:.2f}): {interval_text(iv)}."
    )
    return verdict(
        "d1", counts, decide(CLAIMS["d1"], iv.low, iv.high), finding, {"chance": chance}, iv
    )


def regularizers_add_little(table: pd.DataFrame, missing: int = 0) -> Verdict:
    """(d2) Every combination's gain over "none" is below the margin (intersection-union test:
    each gain's own 97.5% upper bound below it, no multiplicity cost); contradicted when some
    combination's gain is above it with Bonferroni over the combinations.

    Testing every combination, not the best one, avoids the winner's curse of a maximum of means.
    """
    groups, diverged = regularizer_groups(table)
    counts = Counts(int(sum(v.size for v in groups.values())), missing, diverged)
    others = {k: v for k, v in groups.items() if k != "none"}
    if "none" not in groups or not others or too_few_seeds(groups):
        why = "need the no-regularizer runs and another combination, each with >= 2 seeds."
        return inconclusive("d2", counts, why)
    claim = CLAIMS["d2"]
    upper = {k: contrast([v, groups["none"]], [1, -1]) for k, v in others.items()}
    lower = {
        k: contrast([v, groups["none"]], [1, -1], ALPHA / len(others)) for k, v in others.items()
    }
    best = max(upper, key=lambda k: upper[k].estimate)
    high = max(iv.high for iv in upper.values())
    low = max(iv.low for iv in lower.values())
    if high < claim.threshold:
        outcome = REPRODUCED
    else:
        outcome = CONTRADICTED if low > claim.contradict_at else INCONCLUSIVE
    gains = {k: {"gain": iv.estimate, "interval": iv.as_list()} for k, iv in upper.items()}
    finding = (
        f"Best combination ({best}) gains {upper[best].estimate:+.3f}; the largest upper bound "
        f"of any gain is {high:+.3f}, the largest Bonferroni lower bound {low:+.3f}."
    )
    numbers = {"gains": gains, "best": best, "n_runs": {k: v.size for k, v in groups.items()}}
    # the reported interval: [largest Bonferroni lower bound, largest upper bound] of the gains
    span = Interval(upper[best].estimate, low, high, np.nan, np.nan)
    return verdict("d2", counts, outcome, finding, numbers, span)


__all__ = [
    "INCONCLUSIVE",
    "accuracy_without_regularizers",
    "random_labels_fitted",
    "regularizers_add_little",
    "test_error_grows",
    "time_to_fit_grows",
]
