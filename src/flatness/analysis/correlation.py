"""Does a measure rank configurations like their generalization gap? Kendall tau and granulated Psi.

The unit of analysis is a *configuration* (``group_id``: the config hash without the seed). Seeds of
one configuration are averaged first, so a configuration with five seeds does not count five times,
and bootstrap confidence intervals resample configurations, never single runs (Jiang et al. 2020;
Dziugaite et al. 2020 warn that averaged correlations over-state certainty otherwise).

The statistics themselves (tau-b in one weighted form, granulated Psi) are in
``flatness.analysis.kendall``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from flatness.analysis.kendall import (
    axis_cells,
    psi_weighted,
    sign_matrix,
    weighted_tau_b,
)
from flatness.analysis.stats import permutation_tau_pvalues
from flatness.io import atomic_write
from flatness.tables import require_columns, stderr_column

CORRELATION_COLUMNS = (
    "measure",
    "target",
    "tau",
    "tau_ci_low",
    "tau_ci_high",
    "tau_measure_sd",
    "psi",
    "psi_ci_low",
    "psi_ci_high",
    "tau_p_greater",
    "tau_p_less",
    "n_undefined_psi_resamples",
)
POINT_COLUMNS = ("measure", "target", "group_id", "measure_value", "target_value", "n_runs")
MIN_PSI_CELLS = 3  # an axis needs this many cells where it varies for a Psi interval


def config_means(
    table: pd.DataFrame, columns: Sequence[str], axes: Sequence[str] = ()
) -> pd.DataFrame:
    """Average ``columns`` over the seeds of each configuration (runs with status 'ok' only).

    Returns one row per ``group_id`` with the axis values, the means, ``<col>.stderr_mc`` (the
    standard error of the mean of each measure's own stderr, used by the Monte-Carlo spread) and
    ``n_runs``.
    """
    require_columns(table, ["group_id", *columns, *axes], "table")
    ok = table[table["status"] == "ok"] if "status" in table.columns else table
    agg: dict[str, tuple[str, str]] = {c: (c, "mean") for c in columns}
    agg.update({a: (a, "first") for a in axes if a not in agg})
    agg["n_runs"] = ("group_id", "size")
    out = ok.groupby("group_id", sort=True).agg(**agg)
    for c in columns:
        se = stderr_column(c)
        if se in ok.columns:
            var = ok[se].astype(float).pow(2).groupby(ok["group_id"]).sum(min_count=1)
            out[f"{c}.stderr_mc"] = np.sqrt(var) / out["n_runs"]
    return out.reset_index()


def correlation_table(
    table: pd.DataFrame,
    measures: Sequence[str],
    target: str = "gen_gap",
    axes: Sequence[str] = (),
    n_boot: int = 1000,
    seed: int = 0,
    n_mc: int = 200,
    ci: float = 0.95,
    n_perm: int = 5000,
) -> pd.DataFrame:
    """One row per measure: tau, its bootstrap CI, the spread from measure noise, Psi and psi_i.

    - ``tau`` is over configuration means; ``tau_ci_low``/``tau_ci_high`` (and ``psi_ci_*``) are
      percentile intervals from ``n_boot`` resamples of configurations.
    - ``tau_measure_sd``: the standard deviation of tau over ``n_mc`` Monte-Carlo draws of each
      configuration's measure from N(mean, stderr of the mean) built from the runs' ``<m>.stderr``;
      0 for deterministic measures (stderr NaN). It says how much of tau is measurement noise.
    - ``tau_p_greater``/``tau_p_less``: one-sided permutation p-values of tau (``n_perm``
      permutations of the target over configurations), what the verdicts of claim (g) decide on;
      ``n_perm`` must be large enough for Holm over ~30 measures (p >= 1/(n_perm + 1)).
    - ``cells_<axis>``: the cells where the axis varies. The Psi interval is NaN when an axis has
      fewer than ``MIN_PSI_CELLS`` or when Psi is undefined in any resample
      (``n_undefined_psi_resamples``): undefined resamples are counted, never dropped.
    - ``n_configs``/``n_runs``: the configurations and runs with finite measure and target.
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci={ci!r} must be in (0, 1)")
    if n_boot < 0 or n_mc < 0 or n_perm < 0:
        raise ValueError(f"n_boot={n_boot!r}, n_mc={n_mc!r} and n_perm={n_perm!r} must be >= 0")
    measures = list(measures)
    if not measures:
        raise ValueError("measures=[] is empty; pass at least one 'm.<name>' column")
    require_columns(table, ["group_id", target, *measures, *axes], "table")
    rng = np.random.default_rng(seed)
    rows = []
    for measure in measures:
        configs = finite_config_means(table, measure, target, axes)
        row = {"measure": measure, "target": target, **_correlate(configs, measure, target, axes)}
        row.update(_bootstrap(configs, measure, target, axes, n_boot, ci, rng))
        row["tau_measure_sd"] = _measure_noise_sd(configs, measure, target, n_mc, rng)
        row["tau_p_greater"], row["tau_p_less"] = _permutation(
            configs, measure, target, n_perm, rng
        )
        row.update(_cells_per_axis(configs, axes))
        row["n_configs"] = len(configs)
        row["n_runs"] = int(configs["n_runs"].sum()) if len(configs) else 0
        rows.append(row)
    columns = [*CORRELATION_COLUMNS, *(f"psi_{a}" for a in axes), *(f"cells_{a}" for a in axes),
               "n_configs", "n_runs"]  # fmt: skip
    return pd.DataFrame(rows).reindex(columns=columns)


def finite_config_means(
    table: pd.DataFrame, measure: str, target: str, axes: Sequence[str] = ()
) -> pd.DataFrame:
    """Configuration means of ``measure`` and ``target`` over the runs where both are finite:
    the points each measure's tau is computed on."""
    finite = table[np.isfinite(table[measure].astype(float))]
    finite = finite[np.isfinite(finite[target].astype(float))]
    return config_means(finite, [measure, target], axes)


def correlation_points(table: pd.DataFrame, measures: Sequence[str], target: str) -> pd.DataFrame:
    """Long table (measure, target, group_id, measure_value, target_value, n_runs): the points
    behind each measure's tau, written by the analyze stage so the scatter draws exactly them."""
    require_columns(table, ["group_id", target, *measures], "table")
    frames = []
    for measure in measures:
        configs = finite_config_means(table, measure, target)
        frames.append(pd.DataFrame({
            "measure": measure, "target": target, "group_id": configs["group_id"],
            "measure_value": configs[measure], "target_value": configs[target],
            "n_runs": configs["n_runs"],
        }))  # fmt: skip
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=POINT_COLUMNS)


def write_correlations(correlations: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the correlation_table output as CSV atomically (temp file + rename)."""
    return atomic_write(path, lambda tmp: correlations.to_csv(tmp, index=False))


# --- the pieces -----------------------------------------------------------------------------


def _correlate(configs: pd.DataFrame, measure: str, target: str, axes: Sequence[str]) -> dict:
    if len(configs) < 2:
        return {"tau": np.nan, "psi": np.nan, **{f"psi_{a}": np.nan for a in axes}}
    x, y = configs[measure].to_numpy(float), configs[target].to_numpy(float)
    sx, sy = sign_matrix(x), sign_matrix(y)
    ones = np.ones((1, x.size))
    out = {"tau": float(weighted_tau_b(sx, sy, ones)[0])}
    psi = psi_weighted(sx, sy, axis_cells(configs, axes), ones) if axes else {"psi": [np.nan]}
    out.update({k: float(v[0]) for k, v in psi.items()})
    return out


def _bootstrap(configs, measure, target, axes, n_boot, ci, rng) -> dict[str, float]:
    """Percentile CIs of tau and Psi over multinomial resamples of configurations."""
    nan = {"tau_ci_low": np.nan, "tau_ci_high": np.nan, "psi_ci_low": np.nan, "psi_ci_high": np.nan}
    n = len(configs)
    if n < 3 or n_boot == 0:
        return nan
    x, y = configs[measure].to_numpy(float), configs[target].to_numpy(float)
    sx, sy = sign_matrix(x), sign_matrix(y)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
    q = [(1 - ci) / 2, (1 + ci) / 2]
    out = dict(nan)
    taus = weighted_tau_b(sx, sy, weights)
    if np.isfinite(taus).any():
        out["tau_ci_low"], out["tau_ci_high"] = np.nanquantile(taus, q)
    if axes:
        psis = psi_weighted(sx, sy, axis_cells(configs, axes), weights)["psi"]
        undefined = int((~np.isfinite(psis)).sum())
        out["n_undefined_psi_resamples"] = undefined
        cells = _cells_per_axis(configs, axes).values()
        if undefined == 0 and min(cells, default=0) >= MIN_PSI_CELLS:
            out["psi_ci_low"], out["psi_ci_high"] = np.quantile(psis, q)
    return {k: float(v) for k, v in out.items()}


def _permutation(configs, measure, target, n_perm, rng) -> tuple[float, float]:
    if len(configs) < 3 or n_perm == 0:
        return np.nan, np.nan
    x, y = configs[measure].to_numpy(float), configs[target].to_numpy(float)
    sx, sy = sign_matrix(x), sign_matrix(y)
    observed = float(weighted_tau_b(sx, sy, np.ones((1, x.size)))[0])
    return permutation_tau_pvalues(sx, sy, observed, n_perm, rng)


def _cells_per_axis(configs: pd.DataFrame, axes: Sequence[str]) -> dict[str, int]:
    """Per axis, the number of cells (configurations equal on the other axes) where it varies."""
    if len(configs) == 0:
        return {f"cells_{a}": 0 for a in axes}
    out = {}
    for axis, (cell, value) in axis_cells(configs, axes).items():
        varies = [np.unique(value[cell == c]).size > 1 for c in np.unique(cell)]
        out[f"cells_{axis}"] = int(sum(varies))
    return out


def _measure_noise_sd(configs, measure, target, n_mc, rng) -> float:
    """Spread of tau when each configuration's measure is redrawn from its own uncertainty."""
    se_col = f"{measure}.stderr_mc"
    if len(configs) < 2 or n_mc == 0:
        return np.nan
    if se_col not in configs.columns:
        return 0.0
    se = configs[se_col].to_numpy(float)
    se = np.where(np.isfinite(se), se, 0.0)
    if not (se > 0).any():
        return 0.0
    x, y = configs[measure].to_numpy(float), configs[target].to_numpy(float)
    sy = sign_matrix(y)
    taus = [
        weighted_tau_b(sign_matrix(x + se * rng.standard_normal(x.size)), sy, np.ones((1, x.size)))
        for _ in range(n_mc)
    ]
    return float(np.nanstd(np.concatenate(taus), ddof=1))
