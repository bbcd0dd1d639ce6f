"""Flatness claims: a measure predicts the generalization gap (Jiang et al. 2020; Andriushchenko et
al. 2023), large batches find sharper minima with worse test error (Keskar et al.) ((g), (h))."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from flatness.analysis._verdict_base import (
    CONTRADICTED,
    INCONCLUSIVE,
    REPRODUCED,
    Counts,
    Verdict,
    decide,
    inconclusive,
    interval_text,
    usable,
    verdict,
)
from flatness.analysis.claims import CLAIMS
from flatness.analysis.stats import ALPHA, Interval, contrast, holm
from flatness.tables import require_columns

NEED = ["measure", "target", "tau", "tau_ci_low", "tau_ci_high", "tau_p_greater", "tau_p_less",
        "n_configs"]  # fmt: skip


def flatness_predicts(
    correlations: pd.DataFrame,
    expected_sign: int | Mapping[str, int] = 1,
    min_configs: int = 8,
    counts: Counts | None = None,
) -> list[Verdict]:
    """(g) One verdict per row of correlations.csv, Holm-corrected across the rows.

    Each measure's one-sided permutation p-value in its expected direction (+1: sharper means a
    larger gap) is Holm-adjusted across all measures with >= ``min_configs`` configurations:
    reproduced when the adjusted p <= 0.025. Contradicted when the opposite side's Holm-adjusted
    p <= 0.025. The bootstrap CI of tau is printed for reading, not used to decide.
    """
    require_columns(correlations, NEED, "correlations (correlation_table's output)")
    rows = correlations.reset_index(drop=True)
    signs = np.array([_sign(expected_sign, m) for m in rows["measure"]])
    greater, less = (rows[c].to_numpy(float) for c in ("tau_p_greater", "tau_p_less"))
    testable = (rows["n_configs"].to_numpy() >= min_configs) & np.isfinite(greater)
    adj_for = holm(np.where(testable, np.where(signs > 0, greater, less), np.nan))
    adj_against = holm(np.where(testable, np.where(signs > 0, less, greater), np.nan))
    n_tests = int(testable.sum())
    out = []
    for i, r in rows.iterrows():
        cid, sign = f"g:{r['measure']}", signs[i]
        numbers = {k: r[k] for k in r.index if k not in ("measure", "target")}
        numbers.update(expected_sign=sign, holm_p=adj_for[i], holm_p_against=adj_against[i],
                       holm_family_size=n_tests, correction="Holm across measures")  # fmt: skip
        used = counts or Counts(int(r.get("n_runs", 0)))
        if not testable[i]:
            why = f"only {int(r['n_configs'])} configurations (need >= {min_configs})."
            out.append(inconclusive(cid, used, why, numbers, claim_id="g"))
            continue
        if adj_for[i] <= ALPHA:
            outcome = REPRODUCED
        else:
            outcome = CONTRADICTED if adj_against[i] <= ALPHA else INCONCLUSIVE
        psi = f" Psi {r['psi']:.2f}" if "psi" in r and np.isfinite(r["psi"]) else ""
        finding = (
            f"{r['measure']} vs {r['target']}: tau = {r['tau']:.2f} (bootstrap CI "
            f"{r['tau_ci_low']:.2f} to {r['tau_ci_high']:.2f}, {int(r['n_configs'])} configs), "
            f"expected sign {sign:+d}; Holm-adjusted one-sided p = {adj_for[i]:.3g} (against: "
            f"{adj_against[i]:.3g}) over {n_tests} measures.{psi}"
        )
        iv = Interval(r["tau"], r["tau_ci_low"], r["tau_ci_high"], np.nan, np.nan)
        out.append(verdict(cid, used, outcome, finding, numbers, iv, claim_id="g"))
    return out


def _sign(expected_sign, measure) -> int:
    sign = expected_sign.get(measure, 1) if isinstance(expected_sign, Mapping) else expected_sign
    if sign not in (1, -1):
        raise ValueError(f"expected_sign for {measure!r} is {sign!r}; allowed: 1 or -1")
    return sign


def large_batch_sharper(
    table: pd.DataFrame,
    measure: str,
    batch: str = "train.batch_size",
    within: tuple[str, ...] = ("model.width", "model.depth", "optim.lr", "optim.weight_decay"),
    missing: int = 0,
) -> Verdict:
    """(h) Keskar et al., paired within configurations: in every cell of the ``within`` columns
    (width, depth, lr, weight decay: whichever the table has) where the
    smallest and the largest batch size both have converged runs, the differences large - small of
    the seed-mean test error and of log(seed-mean ``measure``); each gets a t interval over cells
    and both must be > 0 (intersection-union). Contradicted when either is < 0 (alpha/2 each).

    Runs with a ``train.target_train_loss`` that never reached it are left out first, so batch
    sizes are compared at the same training loss, as Keskar did.
    """
    df, diverged = usable(table, [batch, measure, "test_error"])
    n_unconverged = 0
    if "train.target_train_loss" in df and df["train.target_train_loss"].notna().any():
        reached = df["stopped_by"] == "target_train_loss"
        n_unconverged, df = int((~reached).sum()), df[reached]
    df = df[np.isfinite(df[measure].astype(float)) & (df[measure].astype(float) > 0)]
    keys = [c for c in within if c in df.columns]
    small, large = table[batch].min(), table[batch].max()
    cells = []
    for _, cell in df.groupby(keys) if keys else [(None, df)]:
        s, lg = cell[cell[batch] == small], cell[cell[batch] == large]
        if len(s) and len(lg):
            cells.append((lg["test_error"].mean() - s["test_error"].mean(),
                          np.log(lg[measure].mean() / s[measure].mean())))  # fmt: skip
    counts = Counts(len(df), missing, diverged)
    numbers = {"small_batch": small, "large_batch": large, "paired_within": keys,
               "n_cells": len(cells), "n_not_converged": n_unconverged}  # fmt: skip
    if len(cells) < 2:
        why = f"{len(cells)} cell(s) of {keys} with both batch sizes converged; need >= 2."
        return inconclusive("h", counts, why, numbers)
    d = np.array(cells)
    err_up, sharp_up = (contrast([d[:, j]], [1.0]) for j in (0, 1))
    err_lo, sharp_lo = (contrast([d[:, j]], [1.0], ALPHA / 2) for j in (0, 1))
    claim = CLAIMS["h"]
    if decide(claim, err_up.low, err_up.high) == REPRODUCED and sharp_up.low > claim.threshold:
        outcome = REPRODUCED
    elif err_lo.high < claim.contradict_at or sharp_lo.high < claim.contradict_at:
        outcome = CONTRADICTED
    else:
        outcome = INCONCLUSIVE
    numbers.update(test_error_diff=err_up.estimate, test_error_interval=err_up.as_list(),
                   log_sharpness_ratio=sharp_up.estimate, log_sharpness_interval=sharp_up.as_list(),
                   measure=measure)  # fmt: skip
    finding = (
        f"Batch {large:g} vs {small:g} over {len(cells)} converged cells of {keys} "
        f"({n_unconverged} runs never reached the target loss, left out): test error difference "
        f"{interval_text(err_up, '+.3f')}; log {measure} ratio {interval_text(sharp_up, '+.3g')}."
    )
    return verdict("h", counts, outcome, finding, numbers, err_up)
