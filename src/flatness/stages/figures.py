"""The ``figures`` stage: every figure of a study, from ``table.csv`` and the runs' histories only.

Each figure draws on the runs of one study family (the grids declared with that ``family`` in the
study config), so a combined study such as ``default`` gets each family's figures from its own
grids. By hand::

    python -m flatness.stages.figures results/default results/default/figures/width.png

rebuilds one figure (the file name picks it) without touching the runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from flatness.io import read_json
from flatness.plotting import correlation_figures as corr_fig
from flatness.plotting import figures as fig

Figure = Callable[[pd.DataFrame, Path, Path], Path]


def _learning_curves(table: pd.DataFrame, results: Path, path: Path) -> Path:
    """Zhang Fig. 1a: full corruption of each type against the clean runs."""
    full = table[(table[fig.FRACTION] == 1.0) | (table[fig.FRACTION] == 0.0)].copy()
    full.loc[full[fig.FRACTION] == 0.0, fig.TYPE] = "none"
    histories = fig.histories_from_table(full, results / "runs", [fig.TYPE])
    return fig.learning_curves(histories, path, y="train_loss", hue=fig.TYPE)


def _corruption_sweep(table: pd.DataFrame, results: Path, path: Path) -> Path:
    return fig.corruption_sweep(table, path, corruption_type="labels")


def _regularizers(table: pd.DataFrame, results: Path, path: Path) -> Path:
    return fig.regularizer_comparison(table, path)


def _width(table: pd.DataFrame, results: Path, path: Path) -> Path:
    return fig.width_sweep(table, path)


def _loss_spread(table: pd.DataFrame, results: Path, path: Path) -> Path:
    clean = table[table[fig.FRACTION] == 0.0] if fig.FRACTION in table else table
    return fig.loss_spread(clean, path)


def _flatness_scatter(table: pd.DataFrame, results: Path, path: Path) -> Path:
    """Measure vs generalization gap, the measures of the correlation table, tau in each title."""
    corr = pd.read_csv(results / "correlations.csv")
    corr = corr[corr["target"] == "gen_gap"]
    measures = [m for m in corr["measure"] if m in table]
    return corr_fig.measure_scatter(table, measures, path, target="gen_gap", correlations=corr)


def _flatness_correlations(table: pd.DataFrame, results: Path, path: Path) -> Path:
    corr = pd.read_csv(results / "correlations.csv")
    return corr_fig.correlation_bars(corr[corr["target"] == "gen_gap"], path)


def _batch_size(table: pd.DataFrame, results: Path, path: Path) -> Path:
    """Keskar et al.: small against large batch, test error and the top Hessian eigenvalue."""
    measure = "m.lambda_max" if "m.lambda_max" in table else None
    return fig.batch_size_comparison(table, path, measure=measure)


# figure name -> (study family it draws on, how to draw it)
FIGURES: dict[str, tuple[str, Figure]] = {
    "learning_curves": ("random_labels", _learning_curves),
    "corruption_sweep": ("random_labels", _corruption_sweep),
    "regularizers": ("regularizers", _regularizers),
    "width": ("width", _width),
    "loss_spread": ("width", _loss_spread),
    "flatness_scatter": ("generalization", _flatness_scatter),
    "flatness_correlations": ("generalization", _flatness_correlations),
    "batch_size": ("generalization", _batch_size),
}


def family_rows(table: pd.DataFrame, manifest: dict, family: str) -> pd.DataFrame:
    """The rows of ``table`` whose runs belong to a grid of ``family``."""
    grids = {g for g, fam in manifest["grids"].items() if fam == family}
    member = table["grids"].fillna("").str.split(";").map(lambda gs: bool(grids.intersection(gs)))
    return table[member].copy()


def draw(results: Path, paths: list[Path]) -> list[Path]:
    table = pd.read_csv(results / "table.csv")
    manifest = read_json(results / "manifest.json")
    done = []
    for path in paths:
        name = Path(path).stem
        if name not in FIGURES:
            raise ValueError(f"figure {name!r} is not known; allowed: {', '.join(FIGURES)}")
        family, draw_one = FIGURES[name]
        done.append(draw_one(family_rows(table, manifest, family), results, Path(path)))
    return done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", type=Path, help="results/<study>")
    parser.add_argument(
        "figures", type=Path, nargs="+", help="PNG paths; the stem names the figure"
    )
    args = parser.parse_args(argv)
    for path in draw(args.results_dir, args.figures):
        print(path)


if __name__ == "__main__":
    main()
