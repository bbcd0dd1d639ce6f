"""Flatness-vs-generalization figures: measure vs gap scatter, and tau / Psi bars with CIs.

The scatter shows configuration means (seeds averaged), the same units the correlations use, so
the tau in each panel's title is the tau of the points drawn.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns

from flatness.analysis.correlation import config_means, kendall_tau
from flatness.plotting._common import new_figure, require_columns, require_rows, save_png, short


def measure_scatter(
    table: pd.DataFrame,
    measures: Sequence[str],
    path: str | os.PathLike,
    target: str = "gen_gap",
    hue: str | None = None,
    correlations: pd.DataFrame | None = None,
) -> Path:
    """One panel per measure: configuration-mean measure (log x if positive) vs ``target``.

    The title carries tau (and its CI when ``correlations``, the correlation_table output, is
    given; otherwise tau is computed here on the points shown).
    """
    if not measures:
        raise ValueError("measures=[] is empty; pass at least one 'm.<name>' column")
    require_columns(table, ["group_id", target, *measures, *([hue] if hue else [])])
    fig, axes = new_figure(len(measures), width=4.0)
    for ax, measure in zip(axes, measures, strict=True):
        finite = table[
            np.isfinite(table[measure].astype(float)) & np.isfinite(table[target].astype(float))
        ]
        configs = config_means(finite, [measure, target], [hue] if hue else [])
        require_rows(configs, f"measure {measure!r}")
        sns.scatterplot(data=configs, x=measure, y=target, hue=hue, ax=ax, s=25)
        if (configs[measure] > 0).all() and configs[measure].max() > 10 * configs[measure].min():
            ax.set_xscale("log")
        ax.set(
            xlabel=short(measure),
            ylabel=target.replace("_", " "),
            title=_tau_title(configs, measure, target, correlations),
        )
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


def _tau_title(configs: pd.DataFrame, measure: str, target: str, correlations) -> str:
    if correlations is not None:
        row = correlations[
            (correlations["measure"] == measure) & (correlations["target"] == target)
        ]
        if len(row):
            r = row.iloc[0]
            ci = f"[{r['tau_ci_low']:.2f}, {r['tau_ci_high']:.2f}]"
            return f"tau={r['tau']:.2f} {ci}, n={int(r['n_configs'])}"
    tau = kendall_tau(configs[measure], configs[target]) if len(configs) > 1 else float("nan")
    return f"tau={tau:.2f}, n={len(configs)}"
