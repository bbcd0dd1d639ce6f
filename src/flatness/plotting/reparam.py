"""Figures for the reparameterization study (Dinh et al. 2017), drawn from the study's own JSON.

- ``measures_vs_alpha``: one log-log panel per measure; invariant measures show as flat lines
  (every log panel spans at least a decade, so round-off is not blown up into visible wiggles).
- ``verdict_table`` / ``write_verdicts_csv``: the measured invariance verdicts as a figure and a CSV.
- ``dinh_flip_figure``: model A's measure against alpha, B's value as a horizontal line, and A's
  test accuracy before and after the flip annotated: sharper, yet exactly as accurate.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from flatness.io import atomic_write
from flatness.plotting._common import save_png
from flatness.reparam_study import sweep_frame

VERDICT_COLOURS = {"invariant": "#c7e9c0", "not invariant": "#fcbba1", "undetermined": "#d9d9d9"}
VERDICT_COLUMNS = ("measure", "verdict", "max_rel_change", "fold_range", "rtol", "reason")


def measures_vs_alpha(
    sweep: Mapping[str, Any],
    path: str | os.PathLike,
    verdicts: Sequence[Mapping[str, Any]] | None = None,
    ncols: int = 4,
) -> Path:
    """Each measure against alpha, one panel per measure; the title carries its verdict."""
    frame = sweep_frame(sweep).dropna(subset=["value"])
    names = list(sweep["measures"])
    if not names:
        raise ValueError("sweep has no measures to plot")
    by_name = {v["measure"]: v["verdict"] for v in verdicts or ()}
    ncols = max(1, min(ncols, len(names)))
    nrows = math.ceil(len(names) / ncols)
    fig = Figure(figsize=(3.6 * ncols, 3.0 * nrows), layout="constrained")
    with sns.axes_style("whitegrid"):
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    reference = sweep["reference"]["measures"]
    for ax, name in zip(axes, names, strict=False):
        data = frame[frame["measure"] == name]
        ax.set_title(
            name if by_name.get(name) is None else f"{name}\n({by_name[name]})", fontsize=9
        )
        if data.empty:
            ax.text(0.5, 0.5, "no finite values", ha="center", transform=ax.transAxes)
            continue
        sns.lineplot(data=data, x="alpha", y="value", marker="o", ax=ax)
        ax.set_xscale("log")
        values = [*data["value"].tolist(), reference.get(name)]
        values = [v for v in values if v is not None]
        if values and min(values) > 0:
            ax.set_yscale("log")
            low, high = min(values), max(values)
            middle = math.sqrt(low * high)
            ax.set_ylim(min(low, middle / 10**0.5) / 1.2, max(high, middle * 10**0.5) * 1.2)
        if reference.get(name) is not None:
            ax.axhline(reference[name], color="grey", linestyle="--", linewidth=0.8)
        ax.set_xlabel("alpha")
        ax.set_ylabel("")
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.suptitle(
        f"measures under the '{sweep['transform']}' rescaling "
        f"(max |logit change| {sweep['max_abs_logit_change']:.1e})"
    )
    return save_png(fig, path)


def verdicts_frame(verdicts: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The verdicts as a table, one row per measure, in the column order of the CSV."""
    frame = pd.DataFrame.from_records(list(verdicts))
    if frame.empty:
        raise ValueError("verdicts is empty: no measures to tabulate")
    columns = [c for c in VERDICT_COLUMNS if c in frame.columns]
    rest = [c for c in frame.columns if c not in columns]
    return frame[columns + rest]


def write_verdicts_csv(verdicts: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """The verdicts as CSV, written atomically."""
    frame = verdicts_frame(verdicts)
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def verdict_table(verdicts: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """The verdicts rendered as a coloured table figure (green invariant, red not, grey unknown)."""
    frame = verdicts_frame(verdicts)
    cells = [
        [
            row["measure"],
            row["verdict"],
            _number(row.get("max_rel_change")),
            _number(row.get("fold_range")),
            _number(row.get("rtol")),
        ]
        for _, row in frame.iterrows()
    ]
    fig = Figure(figsize=(8.0, 0.8 + 0.3 * len(cells)), layout="constrained")
    ax = fig.subplots()
    ax.set_axis_off()
    table = ax.table(
        cellText=cells,
        colLabels=["measure", "verdict", "max rel. change", "max/min |value|", "tolerance"],
        cellColours=[[VERDICT_COLOURS.get(c[1], "white")] * len(c) for c in cells],
        loc="center",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(list(range(5)))
    ax.set_title("invariance to function-preserving rescaling (measured)")
    return save_png(fig, path)


def dinh_flip_figure(
    flip: Mapping[str, Any], path: str | os.PathLike, measure_name: str = "measure"
) -> Path:
    """A's measure vs alpha against B's level; annotates A's test accuracy before and after."""
    curve = pd.DataFrame.from_records(flip["curve"]).dropna(subset=["measure_a"])
    if curve.empty:
        raise ValueError("flip has no finite points on its curve to plot")
    fig = Figure(figsize=(5.5, 4.0), layout="constrained")
    with sns.axes_style("whitegrid"):
        ax = fig.subplots()
    sns.lineplot(data=curve, x="alpha", y="measure_a", marker="o", ax=ax, label="A rescaled")
    ax.axhline(
        flip["measure_b"],
        color="C3",
        linestyle="--",
        label=f"B (test acc {flip['test_acc_b']:.3f})",
    )
    ax.set_xscale("log")
    if curve["measure_a"].min() > 0 and flip["measure_b"] > 0:
        ax.set_yscale("log")
    lines = [f"A test acc at alpha=1: {flip['test_acc_a']:.3f}"]
    if flip["alpha_flip"] is not None:
        ax.axvline(flip["alpha_flip"], color="grey", linestyle=":", linewidth=1)
        ax.plot(
            [flip["alpha_flip"]],
            [flip["measure_a_flipped"]],
            "k*",
            markersize=10,
            label="A, flipped",
        )
        lines.append(
            f"at alpha={flip['alpha_flip']:.3g}: A sharper than B, "
            f"test acc {flip['test_acc_a_flipped']:.3f}"
        )
    else:
        lines.append("no alpha on the grid made A sharper than B")
    ax.text(
        0.02,
        0.02,
        "\n".join(lines),
        transform=ax.transAxes,
        va="bottom",
        fontsize=8,
        bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
    )
    ax.set_xlabel("alpha")
    ax.set_ylabel(measure_name)
    ax.set_title("Dinh et al.: the same function, arbitrarily sharp")
    ax.legend(loc="upper right", fontsize=8)
    return save_png(fig, path)


def _number(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"
