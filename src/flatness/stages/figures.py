"""The ``figures`` stage: every figure of a study, from the files earlier stages wrote.

It draws numbers and computes no statistic. A family figure draws on the runs of one study family
(the grids declared with that ``family`` in the study config, rows chosen by
``flatness.analysis.rows``), so a combined study such as ``default`` gets each family's figures
from its own grids; it reads ``table.csv``, the runs' ``history.csv`` and what ``analyze`` wrote
(``correlations.csv``, ``correlation_points.csv``). A stage figure draws
``reparam/summary.json`` or ``landscape/landscape.json``. By hand::

    python -m flatness.stages.figures results/default results/default/figures/width.png

rebuilds one figure (the file name picks it) without touching the runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from flatness.analysis.rows import family_rows
from flatness.io import read_json
from flatness.measures import plot_spectral_density, slq_from_details
from flatness.plotting import correlation_figures as corr_fig
from flatness.plotting import figures as fig
from flatness.plotting import landscape_figures as topo
from flatness.plotting import reparam as reparam_fig
from flatness.plotting._common import message_figure
from flatness.stages.figure_list import SOURCES, STAGES

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
    """Measure vs generalization gap: the points and tau that analyze wrote, tau in each title."""
    corr = pd.read_csv(results / "correlations.csv")
    points = pd.read_csv(results / "correlation_points.csv")
    return corr_fig.measure_scatter(points, corr, path, target="gen_gap")


def _flatness_correlations(table: pd.DataFrame, results: Path, path: Path) -> Path:
    corr = pd.read_csv(results / "correlations.csv")
    return corr_fig.correlation_bars(corr[corr["target"] == "gen_gap"], path)


def _batch_size(table: pd.DataFrame, results: Path, path: Path) -> Path:
    """Keskar et al.: small against large batch, test error and the top Hessian eigenvalue."""
    measure = "m.lambda_max" if "m.lambda_max" in table else None
    return fig.batch_size_comparison(table, path, measure=measure)


def _layer_sweep(results: Path) -> dict | None:
    return read_json(results / "reparam" / "summary.json")["layer_sweep"]


def _reparam_measures(table: pd.DataFrame, results: Path, path: Path) -> Path:
    sweep = _layer_sweep(results)
    if sweep is None:
        return message_figure("No run was rescaled layer-wise: nothing to draw.", path)
    return reparam_fig.measures_vs_alpha(sweep, path, verdicts=sweep["verdicts"])


def _reparam_verdicts(table: pd.DataFrame, results: Path, path: Path) -> Path:
    sweep = _layer_sweep(results)
    if sweep is None:
        return message_figure("No run was rescaled layer-wise: nothing to tabulate.", path)
    return reparam_fig.verdict_table(sweep["verdicts"], path)


def _dinh_flip(table: pd.DataFrame, results: Path, path: Path) -> Path:
    summary = read_json(results / "reparam" / "summary.json")
    if summary["dinh_flip"] is None:
        return message_figure("No pair of runs where the better-generalizing one is also flatter\n"
                              f"(by {summary['sharpness']}): nothing to flip.", path)  # fmt: skip
    return reparam_fig.dinh_flip_figure(summary["dinh_flip"], path, summary["sharpness"])


def _topology(draw_one: Callable[[dict, Path], Path], key: str) -> Figure:
    """A figure of one entry of ``landscape/landscape.json``."""

    def draw_from_file(table: pd.DataFrame, results: Path, path: Path) -> Path:
        return draw_one(read_json(results / "landscape" / "landscape.json")[key], path)

    return draw_from_file


def _spectral_density(density: dict | None, path: Path) -> Path:
    if density is None:
        return message_figure("The spectral density (measures.spectral_density) is not enabled.",
                              path)  # fmt: skip
    title = f"Hessian spectral density, run {density['run_id']}"
    return plot_spectral_density(slq_from_details(density["details"]), path, title=title)


# figure name -> how to draw it (which figures a study has: flatness.stages.figure_list)
DRAW: dict[str, Figure] = {
    "learning_curves": _learning_curves,
    "corruption_sweep": _corruption_sweep,
    "regularizers": _regularizers,
    "width": _width,
    "loss_spread": _loss_spread,
    "flatness_scatter": _flatness_scatter,
    "flatness_correlations": _flatness_correlations,
    "batch_size": _batch_size,
    "reparam_measures": _reparam_measures,
    "reparam_verdicts": _reparam_verdicts,
    "dinh_flip": _dinh_flip,
    "interpolation": _topology(topo.interpolation_curves, "paths"),
    "surface_1d": _topology(topo.surface_1d, "surfaces_1d"),
    "surface_2d": _topology(topo.surface_2d, "surface_2d"),
    "bezier": _topology(topo.bezier_vs_linear, "bezier"),
    "spectral_density": _topology(_spectral_density, "spectral_density"),
}
assert DRAW.keys() == SOURCES.keys(), "every listed figure has exactly one drawing function"


def rows_for(table: pd.DataFrame, manifest: dict, source: str) -> pd.DataFrame:
    """The rows a figure draws on, chosen as its verdicts choose them (the flatness figures draw
    the points analyze wrote, from ``flatness.analysis.rows.correlation_rows``)."""
    return table if source in STAGES else family_rows(table, manifest, source)


def draw(results: Path, paths: list[Path]) -> list[Path]:
    unknown = [str(p) for p in paths if Path(p).stem not in DRAW]
    if unknown:  # before any figure is drawn
        raise ValueError(f"figures {unknown} are not known (the file name picks the figure); "
                         f"allowed: {', '.join(DRAW)}")  # fmt: skip
    table = pd.read_csv(results / "table.csv")
    manifest = read_json(results / "manifest.json")
    done = []
    for path in paths:
        name = Path(path).stem
        done.append(DRAW[name](rows_for(table, manifest, SOURCES[name]), results, Path(path)))
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
