"""Flatness claims: a measure predicts the generalization gap (Jiang et al. 2020; Andriushchenko et
al. 2023), large batches find sharper minima with worse test error (Keskar et al.) ((g), (h))."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from flatness.analysis._verdict_base import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    Verdict,
    boot_ci,
    make_verdict,
    ok_rows,
)

# --- (g), (h): flatness ---------------------------------------------------------------------------


def flatness_predicts(
    correlations: pd.DataFrame, expected_sign: int | Mapping[str, int] = 1, min_configs: int = 8
) -> list[Verdict]:
    """(g) One verdict per row of correlations.csv: reproduced when the tau CI excludes 0 on the
    expected side (+1: sharper means a larger gap), inconclusive with < ``min_configs`` configs."""
    need = ["measure", "target", "tau", "tau_ci_low", "tau_ci_high", "n_configs"]
    missing = [c for c in need if c not in correlations.columns]
    if missing:
        raise ValueError(
            f"correlations is missing column(s) {missing}; expected correlation_table output"
        )
    out = []
    for _, r in correlations.iterrows():
        sign = (
            expected_sign.get(r["measure"], 1)
            if isinstance(expected_sign, Mapping)
            else expected_sign
        )
        if sign not in (1, -1):
            raise ValueError(f"expected_sign for {r['measure']!r} is {sign!r}; allowed: 1 or -1")
        claim = f"{r['measure']} predicts {r['target']} (Kendall tau {'>' if sign > 0 else '<'} 0)."
        numbers = {k: r[k] for k in r.index if k not in ("measure", "target")}
        numbers["expected_sign"] = sign
        cid = f"g:{r['measure']}"
        if r["n_configs"] < min_configs or not np.isfinite(r["tau_ci_low"]):
            out.append(
                make_verdict(
                    cid,
                    claim,
                    INCONCLUSIVE,
                    f"Only {int(r['n_configs'])} configurations (need >= {min_configs}).",
                    numbers,
                )
            )
            continue
        hit = r["tau_ci_low"] > 0 if sign > 0 else r["tau_ci_high"] < 0
        psi = f", Psi {r['psi']:.2f}" if "psi" in r and np.isfinite(r["psi"]) else ""
        out.append(
            make_verdict(
                cid,
                claim,
                REPRODUCED if hit else NOT_REPRODUCED,
                (
                    f"tau = {r['tau']:.2f} (CI {r['tau_ci_low']:.2f} to {r['tau_ci_high']:.2f}, "
                    f"{int(r['n_configs'])} configs){psi}."
                ),
                numbers,
            )
        )
    return out


def large_batch_sharper(
    table: pd.DataFrame,
    measure: str,
    batch: str = "train.batch_size",
    n_boot: int = 1000,
    seed: int = 0,
) -> Verdict:
    """(h) Keskar et al.: the largest batch size gives a larger ``measure`` and a larger test error
    than the smallest; both differences need CIs above 0 (seeds resampled per batch size)."""
    claim = f"Large-batch training finds sharper minima ({measure}) with worse test error."
    df = ok_rows(table, [batch, measure, "test_error"])
    small, large = df[batch].min(), df[batch].max()
    parts = {k: df[df[batch] == b] for k, b in [("small", small), ("large", large)]}
    numbers: dict[str, Any] = {"small_batch": small, "large_batch": large}
    if small == large or any(len(p) < 2 or p[measure].notna().sum() < 2 for p in parts.values()):
        return make_verdict(
            "h",
            claim,
            INCONCLUSIVE,
            "Need two batch sizes with >= 2 seeds and finite measures each.",
            numbers,
        )
    ok = True
    for col in ["test_error", measure]:
        s, lg = (parts[k][col].dropna().to_numpy(float) for k in ("small", "large"))
        low, high = boot_ci([lg, s], lambda x: x[0].mean() - x[1].mean(), n_boot, seed)
        numbers[col] = {
            "small": s.mean(),
            "large": lg.mean(),
            "diff": lg.mean() - s.mean(),
            "diff_ci": [low, high],
        }
        ok &= low > 0
    te, me = numbers["test_error"], numbers[measure]
    return make_verdict(
        "h",
        claim,
        REPRODUCED if ok else NOT_REPRODUCED,
        (
            f"Batch {large} vs {small}: test error {te['large']:.3f} vs {te['small']:.3f} (diff CI "
            f"{te['diff_ci'][0]:+.3f} to {te['diff_ci'][1]:+.3f}); {measure} {me['large']:.3g} vs "
            f"{me['small']:.3g} (diff CI {me['diff_ci'][0]:+.3g} to {me['diff_ci'][1]:+.3g})."
        ),
        numbers,
    )
