"""Every figure function builds a PNG from a small synthetic table and rejects bad input."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from flatness.analysis.correlation import correlation_points, correlation_table
from flatness.plotting import correlation_figures as cf
from flatness.plotting import figures as fg

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _table(seed: int = 0) -> pd.DataFrame:
    """A study table covering every figure: corruption sweep, regularizers, widths, batch sizes."""
    rng = np.random.default_rng(seed)
    rows = []
    grid = itertools.product(
        ["none", "labels", "gaussian"], [0.0, 0.5, 1.0], [16, 64], [32, 512], [0.0, 5e-4], [0, 1, 2]
    )
    for ctype, frac, width, bs, wd, s in grid:
        if ctype == "none" and frac > 0:
            continue
        test_acc = 0.9 - 0.8 * frac * (ctype != "none") + 0.01 * rng.standard_normal()
        train_acc = min(1.0, 0.97 + 0.001 * width + 0.01 * rng.standard_normal())
        rows.append(
            {
                "run_id": f"r{len(rows)}",
                "group_id": f"{ctype}-{frac}-{width}-{bs}-{wd}",
                "seed": s,
                "status": "ok",
                "model.name": "mlp",
                "model.width": width,
                "model.dropout": 0.0,
                "model.batch_norm": bool(s % 2 == 0 and ctype == "none"),
                "optim.weight_decay": wd,
                "data.augment": False,
                "train.batch_size": bs,
                "data.corruption.type": ctype,
                "data.corruption.fraction": frac,
                "train_loss": abs(0.05 / width + 0.01 * rng.standard_normal()),
                "train_acc": train_acc,
                "test_acc": test_acc,
                "test_error": 1 - test_acc,
                "gen_gap": train_acc - test_acc,
                "time_to_fit_epoch": 10 + 20 * frac + rng.integers(0, 3) if s < 2 else np.nan,
                "m.sharpness": np.exp(rng.standard_normal()) * bs / 32,
                "m.sharpness.stderr": 0.1,
                "m.norm": width + rng.standard_normal(),
            }
        )
    return pd.DataFrame(rows)


def _history(table: pd.DataFrame) -> pd.DataFrame:
    frames = []
    full = table[
        (table["data.corruption.type"] == "none") | (table["data.corruption.fraction"] == 1)
    ]
    for _, row in full.groupby("data.corruption.type").head(4).iterrows():
        epochs = np.arange(1, 6)
        frames.append(
            pd.DataFrame(
                {
                    "epoch": epochs,
                    "train_loss": 2.3 / epochs ** (2 - row["data.corruption.fraction"]),
                    "train_acc": 1 - 0.5 / epochs,
                }
            ).assign(**{c: row[c] for c in ["data.corruption.type", "data.corruption.fraction"]})
        )
    return pd.concat(frames, ignore_index=True)


def _is_png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


def test_study_figures_write_pngs(tmp_path):
    table = _table()
    outputs = [
        fg.learning_curves(_history(table), tmp_path / "curves.png"),
        fg.learning_curves(
            [_history(table)], tmp_path / "curves_frac.png", hue="data.corruption.fraction"
        ),
        fg.corruption_sweep(table, tmp_path / "sweep.png"),
        fg.corruption_sweep(table, tmp_path / "sweep_rel.png", relative=True),
        fg.regularizer_comparison(table, tmp_path / "reg.png"),
        fg.width_sweep(table, tmp_path / "width.png"),
        fg.loss_spread(table, tmp_path / "spread.png"),
        fg.batch_size_comparison(table, tmp_path / "batch.png", measure="m.sharpness"),
    ]
    assert all(_is_png(p) for p in outputs)
    assert not list(tmp_path.glob(".*.tmp")), "no temp files left behind"


def test_correlation_figures_write_pngs(tmp_path):
    table = _table()
    measures = ["m.sharpness", "m.norm"]
    corr = correlation_table(
        table, measures, axes=["model.width", "train.batch_size"], n_boot=50, n_mc=10
    )
    points = correlation_points(table, measures, "gen_gap")
    outputs = [
        cf.measure_scatter(points, corr, tmp_path / "scatter.png"),
        cf.correlation_bars(corr, tmp_path / "bars.png"),
    ]
    assert all(_is_png(p) for p in outputs)
    with pytest.raises(ValueError, match="measure_value"):
        cf.measure_scatter(points.drop(columns="measure_value"), corr, tmp_path / "bad.png")


def test_scatter_points_are_the_points_tau_was_computed_on():
    """The analyze stage writes the points; their count per measure is the n of its tau, and
    Kendall tau recomputed on them is the tau of the table (figures draw, never recompute)."""
    from flatness.analysis.kendall import kendall_tau

    table = _table()
    table.loc[table.index[:7], "m.norm"] = np.nan  # a measure with missing values
    measures = ["m.sharpness", "m.norm"]
    corr = correlation_table(table, measures, n_boot=0, n_mc=0, n_perm=0).set_index("measure")
    points = correlation_points(table, measures, "gen_gap")
    for measure, mine in points.groupby("measure"):
        assert len(mine) == corr.loc[measure, "n_configs"]
        tau = kendall_tau(mine["measure_value"], mine["target_value"])
        assert tau == pytest.approx(corr.loc[measure, "tau"], abs=1e-12)


def test_many_panel_scatter_wraps_into_a_grid(tmp_path):
    """30 measures: 6 panels a row, 5 rows, not one 16,800-pixel-wide row."""
    from PIL import Image

    table = _table()
    measures = [f"m.copy{i}" for i in range(30)]
    for i, m in enumerate(measures):
        table[m] = table["m.sharpness"] * (i + 1)
    corr = correlation_table(table, measures, n_boot=0, n_mc=0, n_perm=0)
    points = correlation_points(table, measures, "gen_gap")
    width, height = Image.open(cf.measure_scatter(points, corr, tmp_path / "s.png")).size
    assert width < 3500 and height < 2500 and width / height < 2.5


def test_histories_from_table(tmp_path):
    table = _table().head(3)
    for run_id in table["run_id"]:
        (tmp_path / run_id).mkdir()
        pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.5]}).to_csv(
            tmp_path / run_id / "history.csv", index=False
        )
    hist = fg.histories_from_table(table, tmp_path, ["data.corruption.type"])
    assert len(hist) == 6 and set(hist["run_id"]) == set(table["run_id"])


def test_bad_input_names_the_column(tmp_path):
    table = _table().drop(columns=["test_error"])
    with pytest.raises(ValueError, match="test_error"):
        fg.width_sweep(table, tmp_path / "w.png")
    with pytest.raises(ValueError, match=r"\.png"):
        fg.loss_spread(_table(), tmp_path / "w.pdf")


def test_landscape_figures_write_pngs(tmp_path):
    import torch
    from torch import nn

    from flatness import landscape as ls
    from flatness.plotting import landscape_figures as lf

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 4, generator=gen), torch.randint(0, 3, (64,), generator=gen)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        a, b = (nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)) for _ in range(2))
    # the figures draw what the landscape stage wrote: the results' JSON form, read back
    line = json.loads(json.dumps(ls.linear_interpolation(a, b, x, y, n_points=5).to_dict()))
    bez = json.loads(json.dumps(ls.bezier_curve(a, b, x, y, steps=25, n_points=5).to_dict()))
    outputs = [
        lf.interpolation_curves({"a -> b": line, "b -> a": line}, tmp_path / "interp.png"),
        lf.surface_1d(
            {"a": ls.loss_surface_1d(a, x, y, n_points=5).to_dict()}, tmp_path / "s1.png"
        ),
        lf.surface_2d(ls.loss_surface_2d(a, x, y, n_points=4).to_dict(), tmp_path / "s2.png"),
        lf.bezier_vs_linear(bez, tmp_path / "bezier.png"),
    ]
    assert all(_is_png(p) for p in outputs)
    # a path the loss diverged on: JSON null in its losses and barrier, still drawn (as a gap)
    diverged = line | {"loss": [None, *line["loss"][1:]], "barrier": None, "barrier_max": None}
    assert _is_png(lf.interpolation_curves({"diverged": diverged}, tmp_path / "nan.png"))
    assert _is_png(lf.bezier_vs_linear(bez | {"curve": diverged}, tmp_path / "nan_bezier.png"))
    with pytest.raises(ValueError, match="paths"):
        lf.interpolation_curves({}, tmp_path / "empty.png")


def test_figures_stage_rejects_an_unknown_figure_before_reading_anything(tmp_path):
    from flatness.stages.figures import draw

    with pytest.raises(ValueError, match=r"nope\.png.*allowed: learning_curves"):
        draw(tmp_path, [tmp_path / "width.png", tmp_path / "nope.png"])  # no table.csv there
