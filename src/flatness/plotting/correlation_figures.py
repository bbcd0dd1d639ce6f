"""Flatness-vs-generalization figures: measure vs gap scatter, and tau / Psi bars with CIs.

Both draw what the analyze stage wrote and compute no statistic: the scatter shows the
configuration means each tau was computed on (``correlation_points.csv``), so the tau and n in
each panel's title are those of the points drawn.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from flatness.plotting._common import new_figure, require_rows, save_png, short
from flatness.tables import require_columns


def measure_scatter(
    points: pd.DataFrame,
    correlations: pd.DataFrame,
    path: str | os.PathLike,
    target: str = "gen_gap",
    ncols: int = 6,
) -> Path:
    """One panel per measure of ``correlations``: its configuration means (log x if positive and
    spread over a decade) vs ``target``, wrapped ``ncols`` panels to a row.

    Draws the points and tau the analyze stage wrote (``correlation_points.csv``,
    ``correlations.csv``), so each title's tau, CI and n belong to the points drawn.
    """
    require_columns(points, ["measure", "target", "measure_value", "target_value"], "points")
    require_columns(correlations, ["measure", "target", "tau", "tau_ci_low", "tau_ci_high",
                                   "n_configs"], "correlations")  # fmt: skip
    points = points[points["target"] == target]
    corr = correlations[correlations["target"] == target].reset_index(drop=True)
    require_rows(corr, f"correlations with target {target!r}")
    if ncols < 1:
        raise ValueError(f"ncols={ncols!r} must be >= 1")
    ncols = min(ncols, len(corr))
    nrows = -(-len(corr) // ncols)
    fig = Figure(figsize=(3.2 * ncols, 2.8 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (_, row) in zip(axes, corr.iterrows(), strict=False):
        mine = points[points["measure"] == row["measure"]]
        ax.set(xlabel=short(row["measure"]), ylabel=target.replace("_", " "))
        ax.set_title(_tau_title(row), fontsize=9)
        if mine.empty:
            ax.text(0.5, 0.5, "no finite values", ha="center", transform=ax.transAxes)
            continue
        sns.scatterplot(data=mine, x="measure_value", y="target_value", ax=ax, s=25)
        x = mine["measure_value"]
        if (x > 0).all() and x.max() > 10 * x.min():
            ax.set_xscale("log")
        ax.set(xlabel=short(row["measure"]), ylabel=target.replace("_", " "))
    for ax in axes[len(corr) :]:
        ax.set_visible(False)
    return save_png(fig, path)


def correlation_bars(correlations: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Kendall tau and granulated Psi per measure with bootstrap CIs, plus a psi_i heatmap.

    Takes the correlation_table output (correlations.csv).
    """
    require_columns(
        correlations, ["measure", "tau", "tau_ci_low", "tau_ci_high", "psi"], "correlations"
    )
    require_rows(correlations, "correlation bars")
    df = correlations.reset_index(drop=True)
    axes_cols = [
        c for c in df.columns if c.startswith("psi_") and c not in ("psi_ci_low", "psi_ci_high")
    ]
    # Measures run down the y axis so that 30+ measures stay readable.
    height = max(3.0, 0.28 * len(df) + 1.2)
    fig, axes = new_figure(3 if axes_cols else 2, width=4.2, height=height)
    labels = [short(m) for m in df["measure"]]
    target = df["target"].iloc[0] if "target" in df.columns else "target"
    rows = np.arange(len(df))
    for ax, stat in zip(axes[:2], ["tau", "psi"], strict=True):
        low, high = df.get(f"{stat}_ci_low"), df.get(f"{stat}_ci_high")
        values = df[stat].to_numpy(float)
        color = sns.color_palette()[0 if stat == "tau" else 1]
        ax.barh(rows, np.nan_to_num(values), color=color)
        if low is not None and high is not None:
            err = np.vstack([values - low.to_numpy(float), high.to_numpy(float) - values])
            ax.errorbar(values, rows, xerr=np.nan_to_num(np.abs(err)), fmt="none",
                        ecolor="black", capsize=2)  # fmt: skip
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks(rows, labels if stat == "tau" else [""] * len(rows))
        ax.set_ylim(len(rows) - 0.5, -0.5)  # row i level with the heatmap row i
        title = "Kendall tau" if stat == "tau" else "Granulated Psi"
        ax.set(xlim=(-1.05, 1.05), xlabel=stat, title=f"{title} vs {target} (95% CI)")
    if axes_cols:
        heat = df.set_index(pd.Index(labels))[axes_cols].astype(float)
        heat.columns = [short(c.removeprefix("psi_")) for c in axes_cols]
        sns.heatmap(heat, vmin=-1, vmax=1, cmap="RdBu_r", annot=True, fmt=".2f", ax=axes[2],
                    cbar=False, yticklabels=False)  # fmt: skip
        axes[2].set(title="psi per hyperparameter axis")
        axes[2].tick_params(axis="x", rotation=30)
    return save_png(fig, path)


def _tau_title(row: pd.Series) -> str:
    ci = f"[{row['tau_ci_low']:.2f}, {row['tau_ci_high']:.2f}]"
    return f"tau={row['tau']:.2f} {ci}, n={int(row['n_configs'])}"
