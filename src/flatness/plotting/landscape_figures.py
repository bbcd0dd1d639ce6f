"""Topology figures from ``landscape/landscape.json``: paths, 1-D / 2-D surfaces, Bezier vs line.

Each takes the results as the landscape stage wrote them (the ``to_dict()`` form of
``flatness.landscape``'s results: plain lists and floats; a mapping label -> result is drawn as one
line each) and a PNG path, so the figures rule draws them from the file alone.
Accuracy is drawn dashed on a twin axis where it is part of the claim (paths), so a loss bump that
does not change predictions is visible as such.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import seaborn as sns

from flatness.plotting._common import new_figure, save_png


def interpolation_curves(
    paths: Mapping[str, Mapping], path: str | os.PathLike, log_y: bool = False
) -> Path:
    """Loss (solid) and accuracy (dashed, right axis) along each path, e.g. init->solution and
    solution->solution; the legend carries each path's barrier."""
    _nonempty(paths, "paths")
    fig, (ax,) = new_figure(width=5.5)
    acc_ax = ax.twinx()
    for color, (label, res) in zip(
        sns.color_palette(n_colors=len(paths)), paths.items(), strict=True
    ):
        t, loss, acc = _floats(res, "t", "loss", "acc")
        ax.plot(t, loss, color=color, label=f"{label} ({_barrier(res)})")
        acc_ax.plot(t, acc, color=color, ls="--", alpha=0.6)
    for t in (0, 1):
        ax.axvline(t, color="grey", lw=0.6, ls=":")
    if log_y:
        ax.set_yscale("log")
    ax.set(xlabel="t", ylabel="loss", title="Linear interpolation")
    acc_ax.set(ylabel="accuracy (dashed)", ylim=(0, 1.02))
    ax.legend(fontsize="small")
    return save_png(fig, path)


def surface_1d(surfaces: Mapping[str, Mapping], path: str | os.PathLike) -> Path:
    """Li et al. 1-D plots: loss along a filter-normalized direction, one line per model."""
    _nonempty(surfaces, "surfaces")
    fig, (ax,) = new_figure(width=5.0)
    for label, s in surfaces.items():
        ax.plot(*_floats(s, "alphas", "loss"), label=label)
    ax.set(xlabel="alpha (filter-normalized direction)", ylabel="loss", title="1-D loss surface")
    ax.legend(fontsize="small")
    return save_png(fig, path)


def surface_2d(surface: Mapping, path: str | os.PathLike, levels: int = 20) -> Path:
    """Li et al. 2-D contour plot of the loss around the solution (marked at the origin)."""
    fig, (ax,) = new_figure(width=5.0, height=4.4)
    loss = np.asarray(surface["loss"], dtype=float).T  # contour wants [beta, alpha]
    alphas, betas = surface["alphas"], surface["betas"]
    positive = (loss > 0).all()
    z = np.log10(loss) if positive else loss
    cs = ax.contourf(alphas, betas, z, levels=levels, cmap="viridis")
    ax.contour(alphas, betas, z, levels=levels, colors="white", linewidths=0.3)
    fig.colorbar(cs, ax=ax, label="log10 loss" if positive else "loss")
    ax.plot([0], [0], marker="*", color="red", ms=10)
    ax.set(xlabel="alpha", ylabel="beta", title="2-D loss surface (filter-normalized)")
    return save_png(fig, path)


def bezier_vs_linear(result: Mapping, path: str | os.PathLike) -> Path:
    """Garipov et al.: loss along the trained Bezier curve and the straight segment (left), and
    the curve's training loss per SGD step (right)."""
    fig, axes = new_figure(2)
    for res, label in [(result["linear"], "linear"), (result["curve"], "Bezier curve")]:
        axes[0].plot(*_floats(res, "t", "loss"), marker="o", ms=3,
                     label=f"{label} ({_barrier(res)})")  # fmt: skip
    axes[0].set(xlabel="t", ylabel="loss", title="Mode connectivity")
    axes[0].legend(fontsize="small")
    train_loss = np.asarray(result["train_loss"], dtype=float)
    steps = np.arange(1, len(train_loss) + 1)
    axes[1].plot(steps, train_loss, alpha=0.3, lw=0.8)
    if len(steps) >= 20:
        k = max(1, len(steps) // 20)
        smooth = np.convolve(train_loss, np.ones(k) / k, mode="valid")
        axes[1].plot(steps[k - 1 :], smooth, color="black", lw=1.2, label=f"mean of {k} steps")
        axes[1].legend(fontsize="small")
    axes[1].set(xlabel="SGD step", ylabel="minibatch loss, t ~ U(0,1)", title="Curve training")
    return save_png(fig, path)


def _barrier(result: Mapping) -> str:
    """A path's barrier for its legend; a diverged path (a non-finite loss on it) has none, and
    the landscape stage wrote it as JSON null."""
    barrier = result.get("barrier")
    if barrier is None or not np.isfinite(barrier):
        return "no barrier: the loss diverged on this path"
    return f"barrier {barrier:.3g}"


def _nonempty(mapping: Mapping, name: str) -> None:
    if not isinstance(mapping, Mapping) or not mapping:
        raise ValueError(f"{name} must be a non-empty mapping of label -> result, got {mapping!r}")


def _floats(result: Mapping, *keys: str) -> list[np.ndarray]:
    """The named lists as float arrays (a JSON null, a non-finite loss, becomes NaN: a gap)."""
    return [np.asarray(result[k], dtype=float) for k in keys]
