"""Correlations against scipy and closed forms; verdicts on synthetic tables with known answers."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from flatness.analysis import verdicts as vd
from flatness.analysis.correlation import (
    config_means,
    correlation_table,
    granulated_psi,
    kendall_tau,
)

# --- correlation ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_kendall_tau_matches_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, 4, 40), rng.integers(0, 6, 40) + 0.5 * rng.integers(0, 2, 40)
    assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    assert np.isnan(kendall_tau(np.ones(5), np.arange(5)))


def test_kendall_tau_rejects_bad_input():
    with pytest.raises(ValueError, match="same length"):
        kendall_tau([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="finite"):
        kendall_tau([1, np.nan], [1, 2])


def _grid() -> pd.DataFrame:
    rows = itertools.product([1, 2, 3], [10, 20, 30], ["sgd", "adam"])
    return pd.DataFrame(rows, columns=["lr", "width", "opt"])


def test_psi_known_answer_one_axis():
    """Measure and target both monotone in lr only: psi_lr = 1, other axes 0 (measure constant)."""
    df = _grid().assign(m=lambda d: d["lr"] ** 2, g=lambda d: d["lr"] + 1e-3 * d["width"])
    psi = granulated_psi(df, "m", "g", ["lr", "width", "opt"])
    assert psi["psi_lr"] == 1.0 and psi["psi_width"] == 0.0 and psi["psi_opt"] == 0.0
    assert psi["psi"] == pytest.approx(1 / 3)


def test_psi_sign_per_axis():
    """A measure ranking width backwards gives psi_width = -1; flipping the gap's sign flips psi."""
    df = _grid().assign(m=lambda d: d["lr"] - d["width"], g=lambda d: d["lr"] + d["width"])
    psi = granulated_psi(df, "m", "g", ["lr", "width", "opt"])
    assert psi["psi_lr"] == 1.0 and psi["psi_width"] == -1.0
    flipped = granulated_psi(df.assign(g=-df["g"]), "m", "g", ["lr", "width", "opt"])
    assert flipped["psi_lr"] == -1.0 and flipped["psi_width"] == 1.0


def _study(n_configs: int, noise: float, seeds: int = 3, seed: int = 0) -> pd.DataFrame:
    """Runs whose gap is a noisy increasing function of the measure (configs on a 2-axis grid)."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_configs):
        base = rng.standard_normal()
        for s in range(seeds):
            rows.append(
                {
                    "group_id": f"g{c}",
                    "seed": s,
                    "status": "ok",
                    "a": c % 4,
                    "b": c // 4,
                    "m.x": base + 0.01 * rng.standard_normal(),
                    "m.x.stderr": 0.05,
                    "m.det": base,
                    "m.det.stderr": np.nan,
                    "gen_gap": base + noise * rng.standard_normal(),
                }
            )
    return pd.DataFrame(rows)


def test_correlation_table_layout_and_truth_in_ci():
    table = _study(60, noise=0.5)
    corr = correlation_table(table, ["m.x", "m.det"], axes=["a", "b"], n_boot=400, n_mc=50)
    assert list(corr.columns) == [
        "measure", "target", "tau", "tau_ci_low", "tau_ci_high", "tau_measure_sd", "psi",
        "psi_ci_low", "psi_ci_high", "psi_a", "psi_b", "n_configs", "n_runs",
    ]  # fmt: skip
    row = corr.set_index("measure").loc["m.x"]
    # Population tau of (X, X + 0.5/sqrt(3) Z) is (2/pi) asin(rho).
    rho = 1 / np.sqrt(1 + 0.5**2 / 3)
    assert row["tau_ci_low"] < 2 / np.pi * np.arcsin(rho) < row["tau_ci_high"]
    assert row["n_configs"] == 60 and row["n_runs"] == 180
    assert row["tau_measure_sd"] > 0
    assert corr.set_index("measure").loc["m.det", "tau_measure_sd"] == 0.0


def test_bootstrap_ci_narrows_with_more_configs_and_counts_configs_not_runs():
    small = correlation_table(_study(20, 0.5), ["m.x"], n_boot=300, n_mc=0).iloc[0]
    large = correlation_table(_study(200, 0.5), ["m.x"], n_boot=300, n_mc=0).iloc[0]
    width = lambda r: r["tau_ci_high"] - r["tau_ci_low"]  # noqa: E731
    assert width(large) < width(small)
    # Tripling the seeds of each configuration does not shrink the CI: the unit is the config.
    many_seeds = correlation_table(_study(20, 0.5, seeds=9), ["m.x"], n_boot=300, n_mc=0).iloc[0]
    assert width(many_seeds) > 0.6 * width(small)


def test_correlation_table_drops_diverged_and_names_missing_columns():
    table = _study(10, 0.1)
    table.loc[0, "status"] = "diverged"
    table.loc[1, "m.x"] = np.nan
    assert config_means(table, ["m.x"])["n_runs"].sum() == 29
    row = correlation_table(table, ["m.x"], n_boot=10, n_mc=0).iloc[0]
    assert row["n_runs"] == 28 and row["n_configs"] == 10
    with pytest.raises(ValueError, match=r"m\.missing"):
        correlation_table(table, ["m.missing"])
    with pytest.raises(ValueError, match="ci="):
        correlation_table(table, ["m.x"], ci=1.5)


# --- verdicts: synthetic tables with a known answer ---------------------------------------------


def _corruption(slope: float, seeds: int, train_acc: float = 1.0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for frac, _s in itertools.product([0.0, 0.25, 0.5, 0.75, 1.0], range(seeds)):
        rows.append(
            {
                "status": "ok",
                "data.corruption.type": "none" if frac == 0 else "labels",
                "data.corruption.fraction": frac,
                "train_acc": min(1.0, train_acc + 0.002 * rng.standard_normal()),
                "test_acc": 0.7 - slope * frac * 0.6 + 0.01 * rng.standard_normal(),
                "test_error": 0.3 + slope * frac * 0.6 + 0.01 * rng.standard_normal(),
                "time_to_fit_epoch": 10 + slope * 20 * frac + rng.integers(0, 2),
                "epochs": 50,
            }
        )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("fn", [vd.random_labels_fitted, vd.time_to_fit_grows, vd.test_error_grows])
def test_zhang_verdicts(fn):
    kw = {"n_boot": 200}
    assert fn(_corruption(1.0, 3), **kw).verdict == vd.REPRODUCED
    bad = _corruption(0.0, 3, train_acc=0.6) if fn is vd.random_labels_fitted else _corruption(0, 3)
    assert fn(bad, **kw).verdict == vd.NOT_REPRODUCED
    assert fn(_corruption(1.0, 1), **kw).verdict == vd.INCONCLUSIVE


def test_never_fit_runs_count_as_slow():
    table = _corruption(0.0, 3)
    table.loc[table["data.corruption.fraction"] >= 0.75, "time_to_fit_epoch"] = np.nan
    v = vd.time_to_fit_grows(table, n_boot=200)
    assert v.verdict == vd.REPRODUCED and v.numbers["n_never_fit"] == 6


def _regularizers(effect: float, seeds: int, none_acc: float = 0.8) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for wd, aug, _s in itertools.product([0.0, 5e-4], [False, True], range(seeds)):
        acc = none_acc + effect * (wd > 0) + effect * aug + 0.005 * rng.standard_normal()
        rows.append(
            {"status": "ok", "optim.weight_decay": wd, "data.augment": aug, "test_acc": acc}
        )
    return pd.DataFrame(rows)


def test_regularizer_verdict():
    assert vd.regularizers_not_needed(_regularizers(0.01, 3)).verdict == vd.REPRODUCED
    assert vd.regularizers_not_needed(_regularizers(0.1, 3)).verdict == vd.NOT_REPRODUCED
    chance_level = _regularizers(0.0, 3, none_acc=0.12)
    assert vd.regularizers_not_needed(chance_level).verdict == vd.NOT_REPRODUCED
    assert vd.regularizers_not_needed(_regularizers(0.01, 1)).verdict == vd.INCONCLUSIVE


WIDTHS = [4, 8, 16, 32, 64, 128]


def _widths(test_err, train_acc, seeds, noise=0.0, loss_sd=None) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    rows = []
    for (w, err, acc), _s in itertools.product(
        zip(WIDTHS, test_err, train_acc, strict=True), range(seeds)
    ):
        sd = loss_sd(w) if loss_sd else 0.01
        rows.append(
            {
                "status": "ok",
                "model.width": w,
                "data.corruption.type": "labels" if noise else "none",
                "data.corruption.fraction": noise,
                "train_acc": acc,
                "test_error": err + 0.005 * rng.standard_normal(),
                "train_loss": abs(0.1 + sd * rng.standard_normal()),
            }
        )
    return pd.DataFrame(rows)


FITS = [0.6, 0.9, 1.0, 1.0, 1.0, 1.0]


def test_width_verdicts():
    falling = [0.5, 0.4, 0.35, 0.33, 0.31, 0.3]
    rising = [0.5, 0.4, 0.35, 0.4, 0.45, 0.5]
    peaked = [0.5, 0.45, 0.55, 0.5, 0.45, 0.42]
    assert vd.wide_nets_generalize(_widths(falling, FITS, 3)).verdict == vd.REPRODUCED
    assert vd.wide_nets_generalize(_widths(rising, FITS, 3)).verdict == vd.NOT_REPRODUCED
    assert vd.wide_nets_generalize(_widths(falling, [0.5] * 6, 3)).verdict == vd.INCONCLUSIVE
    dd = vd.double_descent(_widths(peaked, FITS, 3, noise=0.15))
    assert dd.verdict == vd.REPRODUCED and dd.numbers["peak_width"] == 16
    assert vd.double_descent(_widths(falling, FITS, 3, noise=0.15)).verdict == vd.NOT_REPRODUCED
    assert vd.double_descent(_widths(peaked, FITS, 1, noise=0.15)).verdict == vd.INCONCLUSIVE


def test_loss_concentration_verdict():
    shrinking = _widths(FITS, FITS, 8, loss_sd=lambda w: 0.2 / w)
    constant = _widths(FITS, FITS, 8, loss_sd=lambda w: 0.02)
    assert vd.losses_concentrate(shrinking, n_boot=200).verdict == vd.REPRODUCED
    assert vd.losses_concentrate(constant, n_boot=200).verdict == vd.NOT_REPRODUCED
    assert vd.losses_concentrate(_widths(FITS, FITS, 2), n_boot=200).verdict == vd.INCONCLUSIVE


def test_flatness_verdicts_from_correlations():
    corr = pd.DataFrame(
        {
            "measure": ["m.a", "m.b", "m.c", "m.d"],
            "target": "gen_gap",
            "tau": [0.4, 0.05, -0.4, 0.4],
            "tau_ci_low": [0.2, -0.1, -0.6, 0.1],
            "tau_ci_high": [0.6, 0.2, -0.2, 0.7],
            "psi": [0.3, 0.0, -0.3, np.nan],
            "n_configs": [30, 30, 30, 4],
        }
    )
    got = {v.claim_id: v.verdict for v in vd.flatness_predicts(corr, {"m.c": -1})}
    assert got == {
        "g:m.a": vd.REPRODUCED,
        "g:m.b": vd.NOT_REPRODUCED,
        "g:m.c": vd.REPRODUCED,
        "g:m.d": vd.INCONCLUSIVE,
    }
    assert vd.flatness_predicts(corr.iloc[:1], -1)[0].verdict == vd.NOT_REPRODUCED
    with pytest.raises(ValueError, match="expected_sign"):
        vd.flatness_predicts(corr, 0)


def _batches(sharp_ratio: float, err_gap: float, seeds: int) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = []
    for bs, _s in itertools.product([32, 1024], range(seeds)):
        big = bs == 1024
        rows.append(
            {
                "status": "ok",
                "train.batch_size": bs,
                "test_error": 0.3 + err_gap * big + 0.005 * rng.standard_normal(),
                "m.sharp": (sharp_ratio if big else 1.0) * np.exp(0.05 * rng.standard_normal()),
            }
        )
    return pd.DataFrame(rows)


def test_large_batch_verdict():
    assert vd.large_batch_sharper(_batches(10, 0.05, 3), "m.sharp").verdict == vd.REPRODUCED
    assert vd.large_batch_sharper(_batches(10, 0.0, 3), "m.sharp").verdict == vd.NOT_REPRODUCED
    assert vd.large_batch_sharper(_batches(10, 0.05, 1), "m.sharp").verdict == vd.INCONCLUSIVE
    with pytest.raises(ValueError, match=r"m\.nope"):
        vd.large_batch_sharper(_batches(10, 0.05, 3), "m.nope")


def test_write_verdicts_json(tmp_path):
    verdicts = [vd.test_error_grows(_corruption(1.0, 3), n_boot=50)]
    verdicts += vd.flatness_predicts(
        pd.DataFrame(
            {
                "measure": ["m.a"],
                "target": ["gen_gap"],
                "tau": [np.nan],
                "tau_ci_low": [np.nan],
                "tau_ci_high": [np.nan],
                "n_configs": [1],
            }
        )
    )
    path = tmp_path / "verdicts.json"
    vd.write_verdicts(verdicts, path)
    data = json.loads(path.read_text())
    assert [v["claim_id"] for v in data["verdicts"]] == ["c", "g:m.a"]
    assert set(data["verdicts"][0]) == {"claim_id", "claim", "verdict", "summary", "numbers"}
    assert data["verdicts"][1]["numbers"]["tau"] is None
