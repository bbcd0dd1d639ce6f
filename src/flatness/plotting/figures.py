"""Study figures (Zhang et al. 2017, width / double descent, Choromanska, Keskar) from table.csv.

Every function takes the study table (one row per run, see the output contract) or per-epoch
histories with their run's config columns, plus the PNG path, and returns the path. Seeds are never
plotted as separate configurations: lines and bars show the mean over seeds with the seed standard
deviation as the error bar, so the spread a verdict relies on is visible. Diverged runs are dropped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns

from flatness.analysis.rows import ok_runs
from flatness.plotting._common import (
    new_figure,
    require_rows,
    save_png,
    short,
)
from flatness.tables import require_columns

TYPE, FRACTION = "data.corruption.type", "data.corruption.fraction"
REGULARIZERS = ("optim.weight_decay", "model.dropout", "model.batch_norm", "data.augment")
SPREAD = "sd"  # seaborn errorbar: the seed standard deviation around the mean


def histories_from_table(
    table: pd.DataFrame, runs_dir: str | os.PathLike, columns: Sequence[str]
) -> pd.DataFrame:
    """Read ``runs_dir/<run_id>/history.csv`` for every ok run and attach its ``columns``."""
    require_columns(table, ["run_id", *columns])
    frames = []
    for _, row in ok_runs(table).iterrows():
        path = Path(runs_dir) / str(row["run_id"]) / "history.csv"
        if not path.is_file():
            raise ValueError(f"run_id={row['run_id']!r} has no history file at {path}")
        frames.append(
            pd.read_csv(path).assign(run_id=row["run_id"], **{c: row[c] for c in columns})
        )
    if not frames:
        raise ValueError("table has no ok runs, so there are no histories to read")
    return pd.concat(frames, ignore_index=True)


def learning_curves(
    histories: pd.DataFrame | Sequence[pd.DataFrame],
    path: str | os.PathLike,
    y: str = "train_loss",
    hue: str = TYPE,
    style: str | None = None,
    fraction: float | None = 1.0,
    x: str = "epoch",
    log_y: bool = True,
) -> Path:
    """Zhang Fig. 1a: ``y`` (train loss) vs ``x``, mean +- seed sd per ``hue`` (corruption type).

    Zhang's panel compares every corruption at full strength, so with ``fraction`` set (default
    1.0) and ``hue`` not the fraction itself, only clean runs and runs at that corruption fraction
    are drawn; ``fraction=None`` keeps all. ``style`` (e.g. ``model.name``) separates models.
    """
    df = (
        pd.concat(list(histories), ignore_index=True)
        if not isinstance(histories, pd.DataFrame)
        else histories
    )
    require_columns(df, [x, y, hue, *([style] if style else [])], "histories")
    if fraction is not None and FRACTION in df.columns and hue != FRACTION:
        clean = df[TYPE] == "none" if TYPE in df.columns else df[FRACTION] == 0
        df = df[clean | (df[FRACTION] == fraction)]
    require_rows(df, "learning curves")
    fig, (ax,) = new_figure(width=5.5)
    sns.lineplot(
        data=df, x=x, y=y, hue=hue, style=style, errorbar=SPREAD, ax=ax, palette=_palette(df[hue])
    )
    if log_y and (df[y] > 0).all():
        ax.set_yscale("log")
    ax.set(xlabel=x, ylabel=y.replace("_", " "), title=f"Learning curves by {short(hue)}")
    ax.legend(fontsize="small")
    return save_png(fig, path)


def corruption_sweep(
    table: pd.DataFrame,
    path: str | os.PathLike,
    corruption_type: str = "labels",
    hue: str | None = "model.name",
    relative: bool = False,
    chance_error: float | None = 0.9,
) -> Path:
    """Zhang Fig. 1b and 1c: time-to-fit and test error vs corruption fraction (mean +- seed sd).

    Runs with ``data.corruption.type == 'none'`` count as fraction 0. With ``relative=True`` the
    time to fit is divided by the clean (fraction 0) mean of the same ``hue``, as in Fig. 1b. Runs
    that never reach 100% train accuracy have no time to fit; their count is given in the title.
    """
    df = _corruption_rows(table, corruption_type)
    hue = hue if hue in df.columns and df[hue].nunique() > 1 else None
    ttf = "time_to_fit_epoch"
    if relative:
        keys = df[hue] if hue else pd.Series(0, index=df.index)
        clean = df[df[FRACTION] == 0].groupby(keys[df[FRACTION] == 0])[ttf].mean()
        df[ttf] = df[ttf] / keys.map(clean).to_numpy()
    fig, axes = new_figure(2)
    for ax, col, label in [
        (axes[0], ttf, "time to fit (epochs)"),
        (axes[1], "test_error", "test error"),
    ]:
        sns.lineplot(data=df, x=FRACTION, y=col, hue=hue, marker="o", errorbar=SPREAD, ax=ax)
        ax.set(
            xlabel="label corruption fraction",
            ylabel=("relative " if relative and col == ttf else "") + label,
        )
    n_unfit = int(df[ttf].isna().sum())
    axes[0].set_title(f"Time to fit ({n_unfit} runs never fit)" if n_unfit else "Time to fit")
    axes[1].set_title("Test error at convergence")
    if chance_error is not None:
        axes[1].axhline(chance_error, color="grey", ls=":", lw=1, label="chance")
    return save_png(fig, path)


def regularizer_comparison(
    table: pd.DataFrame,
    path: str | os.PathLike,
    regularizers: Sequence[str] = REGULARIZERS,
    chance: float | None = 0.1,
) -> Path:
    """Zhang Table 1 analogue: train and test accuracy per regularizer combination (true labels).

    ``regularizers`` not in the table are skipped; rows with label corruption are left out except
    full random labels (fraction 1), which get their own panel if present.
    """
    df = ok_runs(table)
    regs = [r for r in regularizers if r in df.columns]
    if not regs:
        raise ValueError(f"table has none of the regularizer columns {list(regularizers)}")
    require_columns(df, ["train_acc", "test_acc"])
    df["combination"] = df.apply(lambda row: _combination_label(row, regs), axis=1)
    df["labels"] = "true labels"
    if TYPE in df.columns:
        random = (df[TYPE] == "labels") & (df.get(FRACTION, 0) == 1)
        df.loc[random, "labels"] = "random labels"
        df = df[(df[TYPE] == "none") | random]
    require_rows(df, "regularizer comparison")
    long = df.melt(
        id_vars=["combination", "labels"],
        value_vars=["train_acc", "test_acc"],
        var_name="split",
        value_name="accuracy",
    )
    panels = sorted(long["labels"].unique(), key=lambda s: s != "true labels")
    order = sorted(long["combination"].unique(), key=lambda s: (s != "none", s))
    fig, axes = new_figure(len(panels), width=max(4.5, 0.9 * len(order) + 2))
    for ax, panel in zip(axes, panels, strict=True):
        sub = long[long["labels"] == panel]
        sns.barplot(
            data=sub,
            x="combination",
            y="accuracy",
            hue="split",
            order=[o for o in order if o in set(sub["combination"])],
            errorbar=SPREAD,
            ax=ax,
        )
        if chance is not None:
            ax.axhline(chance, color="grey", ls=":", lw=1, label="chance")
        ax.set(ylim=(0, 1.02), xlabel="", title=panel)
        ax.tick_params(axis="x", rotation=30)
    return save_png(fig, path)


def width_sweep(
    table: pd.DataFrame,
    path: str | os.PathLike,
    width: str = "model.width",
    noise: str = FRACTION,
) -> Path:
    """Test (solid) and train (dashed) error vs width, one colour per label-noise fraction.

    With noise this is the model-wise double-descent plot (Nakkiran et al.; the MNIST-1D notebook);
    without, Neyshabur et al.'s "wider keeps generalizing" plot.
    """
    df = ok_runs(table)
    require_columns(df, [width, "train_acc", "test_error"])
    if TYPE in df.columns:  # label noise only: input corruptions are a different experiment
        df = df[df[TYPE].isin(["none", "labels"])].copy()
    df["train_error"] = 1 - df["train_acc"]
    df["noise"] = df[noise] if noise in df.columns else 0.0
    require_rows(df, "width sweep")
    long = df.melt(
        id_vars=[width, "noise"],
        value_vars=["test_error", "train_error"],
        var_name="split",
        value_name="error",
    )
    fig, (ax,) = new_figure(width=5.5)
    sns.lineplot(
        data=long,
        x=width,
        y="error",
        hue="noise",
        style="split",
        markers=True,
        errorbar=SPREAD,
        ax=ax,
        palette=_palette(long["noise"]),
    )
    _log_ticks(ax, df[width])
    ax.set(xlabel=short(width), ylabel="error", title="Error vs width (hue: label noise)")
    return save_png(fig, path)


def loss_spread(
    table: pd.DataFrame,
    path: str | os.PathLike,
    width: str = "model.width",
    loss: str = "train_loss",
) -> Path:
    """Choromanska et al.: final losses per width (left) and their seed std (right)."""
    df = ok_runs(table)
    require_columns(df, [width, loss])
    require_rows(df, "loss spread")
    key = "group_id" if "group_id" in df.columns else width  # seed spread within a config
    spread = df.groupby(key).agg(std=(loss, "std"), width=(width, "first")).dropna()
    spread = spread.rename(columns={"width": width})
    fig, axes = new_figure(2)
    sns.stripplot(data=df, x=width, y=loss, ax=axes[0], alpha=0.6, size=3)
    axes[0].set(
        xlabel=short(width),
        ylabel=f"final {loss.replace('_', ' ')}",
        title="Final losses over seeds",
    )
    sns.lineplot(data=spread, x=width, y="std", marker="o", errorbar=SPREAD, ax=axes[1])
    _log_ticks(axes[1], spread[width])
    if (spread["std"] > 0).all():
        axes[1].set_yscale("log")
    axes[1].set(xlabel=short(width), ylabel="seed std of final loss", title="Loss spread vs width")
    return save_png(fig, path)


def batch_size_comparison(
    table: pd.DataFrame,
    path: str | os.PathLike,
    measure: str | None = None,
    batch: str = "train.batch_size",
) -> Path:
    """Keskar et al.: test error (and a sharpness measure) per batch size, mean +- seed sd."""
    df = ok_runs(table)
    require_columns(df, [batch, "test_error", *([measure] if measure else [])])
    require_rows(df, "batch size comparison")
    cols = ["test_error", *([measure] if measure else [])]
    fig, axes = new_figure(len(cols))
    for ax, col in zip(axes, cols, strict=True):
        sns.pointplot(data=df, x=batch, y=col, errorbar=SPREAD, ax=ax, capsize=0.2)
        if col == measure and (df[col].dropna() > 0).all():
            ax.set_yscale("log")
        ax.set(xlabel="batch size", ylabel=short(col), title=f"{short(col)} vs batch size")
    return save_png(fig, path)


def _corruption_rows(table: pd.DataFrame, corruption_type: str) -> pd.DataFrame:
    df = ok_runs(table)
    require_columns(df, [TYPE, FRACTION, "test_error", "time_to_fit_epoch"])
    df = df[(df[TYPE] == corruption_type) | (df[TYPE] == "none")].copy()
    df.loc[df[TYPE] == "none", FRACTION] = 0.0
    require_rows(df, f"corruption type {corruption_type!r}")
    return df


def _combination_label(row: pd.Series, regs: Sequence[str]) -> str:
    """'none', or the regularizers switched on, e.g. 'weight_decay=0.0005 + augment'."""
    on = []
    for r in regs:
        v = row[r]
        if isinstance(v, bool | np.bool_):
            if v:
                on.append(r.split(".")[-1])
        elif pd.notna(v) and float(v) != 0:
            on.append(f"{r.split('.')[-1]}={v:g}")
    return " + ".join(on) if on else "none"


def _log_ticks(ax, values: pd.Series) -> None:
    """Log x axis ticked at the widths actually run (plain numbers, not 2x10^1)."""
    ticks = np.sort(values.dropna().unique())
    ax.set_xscale("log")
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()


def _palette(values: pd.Series) -> str | None:
    """A sequential palette for numeric hues (fractions), seaborn's default for categories."""
    return "viridis" if pd.api.types.is_numeric_dtype(values) else None
