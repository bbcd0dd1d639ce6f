"""Plot of the SLQ spectral density (PNG), PyHessian's convention: log density axis, +1e-7 floor."""

from __future__ import annotations

from pathlib import Path

from ..algorithms.density import SLQResult, smoothed_density


def slq_from_details(details: dict) -> SLQResult:
    """Rebuild an ``SLQResult`` from a ``slq_trace`` result's details (e.g. read from JSON)."""
    nodes = tuple(tuple(t) for t in details["nodes"])
    weights = tuple(tuple(w) for w in details["weights"])
    return SLQResult(nodes, weights, int(details["size"]), 0)


def plot_spectral_density(
    result: SLQResult, path: str | Path, *, title: str | None = None, n_grid: int = 10_000
) -> Path:
    """Write the smoothed density to ``path`` (PNG) atomically; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    grid, density, _ = smoothed_density(result, n_grid=n_grid)
    path = Path(path)
    with sns.axes_style("whitegrid"):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.semilogy(grid, density + 1e-7, color=sns.color_palette()[0], lw=1.2)
        ax.set_xlabel("eigenvalue")
        ax.set_ylabel("density (log)")
        if title:
            ax.set_title(title)
        fig.tight_layout()
        tmp = path.with_name(path.name + ".tmp.png")
        fig.savefig(tmp, dpi=150)
        plt.close(fig)
    tmp.replace(path)
    return path
