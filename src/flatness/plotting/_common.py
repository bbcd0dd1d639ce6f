"""Shared plumbing for the figure functions: atomic PNG writes, column checks, labels.

Figures are built on bare ``matplotlib.figure.Figure`` objects (Agg canvas) with seaborn's
axes-level functions, never through ``pyplot``: no global backend switch, no figure registry to
leak, safe to call from Snakemake jobs in parallel.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from flatness.io import atomic_write

DPI = 150


def new_figure(n_panels: int = 1, width: float = 4.5, height: float = 3.6) -> tuple[Figure, list]:
    """A figure with ``n_panels`` side-by-side axes (always returned as a list)."""
    fig = Figure(figsize=(width * n_panels, height), layout="constrained")
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    return fig, list(axes)


def save_png(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` as PNG atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path={str(path)!r} must end in .png")
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))


def require_rows(df: pd.DataFrame, what: str) -> None:
    if df.empty:
        raise ValueError(f"no rows to plot for {what}")


def short(column: str) -> str:
    """Axis label for a dotted key: ``data.corruption.fraction`` -> ``corruption fraction``."""
    parts = column.split(".")
    if parts[0] == "m" and len(parts) > 1:
        return ".".join(parts[1:])
    return " ".join(parts[-2:]) if len(parts) > 2 else parts[-1]


def message_figure(text: str, path: str | os.PathLike, title: str = "") -> Path:
    """A figure that says why there is nothing to plot (the report keeps its slot and says so)."""
    fig, (ax,) = new_figure(width=5.5, height=2.0)
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=9)
    if title:
        ax.set_title(title)
    return save_png(fig, path)
