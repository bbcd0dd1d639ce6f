"""Correlations against scipy and closed forms; verdicts on synthetic tables with known answers."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from flatness.analysis import verdicts as vd
from flatness.analysis.correlation import config_means, correlation_table
from flatness.analysis.kendall import granulated_psi, kendall_tau

# --- correlation ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_kendall_tau_matches_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, 4, 40), rng.integers(0, 6, 40) + 0.5 * rng.integers(0, 2, 40)
    assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    assert np.isnan(kendall_tau(np.ones(5), np.arange(5)))


def test_permutation_p_values_use_n_perm_not_n_boot():
    """A perfectly ordered measure over 14 configurations: no permutation of 5000 matches it
    (exact p ~ 1e-11), so p = 1/(n_perm + 1). Floored at 1/(n_boot + 1) instead, Holm over 27
    measures could never go below 0.025 and claim (g) could never be reproduced."""
    table = pd.DataFrame({"group_id": [f"c{i:02d}" for i in range(14)],
                          "gen_gap": np.arange(14.0), "m.x": np.arange(14.0) ** 2})  # fmt: skip
    row = correlation_table(table, ["m.x"], n_boot=10, n_mc=0, n_perm=5000).iloc[0]
    assert row["tau"] == 1.0
    assert row["tau_p_greater"] == pytest.approx(1 / 5001)
    assert row["tau_p_less"] == pytest.approx(1.0)


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
        "psi_ci_low", "psi_ci_high", "tau_p_greater", "tau_p_less", "n_undefined_psi_resamples",
        "psi_a", "psi_b", "cells_a", "cells_b", "n_configs", "n_runs",
    ]  # fmt: skip
    row = corr.set_index("measure").loc["m.x"]
    # Population tau of (X, X + 0.5/sqrt(3) Z) is (2/pi) asin(rho).
    rho = 1 / np.sqrt(1 + 0.5**2 / 3)
    assert row["tau_ci_low"] < 2 / np.pi * np.arcsin(rho) < row["tau_ci_high"]
    assert row["n_configs"] == 60 and row["n_runs"] == 180
    assert row["tau_measure_sd"] > 0
    assert corr.set_index("measure").loc["m.det", "tau_measure_sd"] == 0.0
    assert row["tau_p_greater"] < 0.01 < 0.99 < row["tau_p_less"]


def test_psi_interval_needs_cells_and_counts_undefined_resamples():
    """From 5 configurations Psi used to be reported as [1, 1] after dropping undefined
    resamples; now too few cells per axis give no interval and the undefined ones are counted."""
    table = _study(60, noise=0.5)
    few = table[table["group_id"].isin(sorted(table["group_id"].unique())[:5])]
    row = correlation_table(few, ["m.x"], axes=["a", "b"], n_boot=200, n_mc=0).iloc[0]
    assert np.isnan(row["psi_ci_low"]) and np.isnan(row["psi_ci_high"])
    assert row["cells_a"] + row["cells_b"] <= 4
    full = correlation_table(table, ["m.x"], axes=["a", "b"], n_boot=200, n_mc=0).iloc[0]
    assert full["cells_a"] >= 3 and full["n_undefined_psi_resamples"] == 0
    assert full["psi_ci_low"] <= full["psi"] <= full["psi_ci_high"]


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
    assert fn(_corruption(1.0, 3)).verdict == vd.REPRODUCED
    bad = _corruption(0.0, 5, train_acc=0.6) if fn is vd.random_labels_fitted else _corruption(0, 5)
    assert fn(bad).verdict == vd.CONTRADICTED
    assert fn(_corruption(1.0, 1)).verdict == vd.INCONCLUSIVE


def test_trend_against_the_claim_is_contradicted_and_noise_is_inconclusive():
    falling = _corruption(-0.3, 4)
    assert vd.test_error_grows(falling).verdict == vd.CONTRADICTED
    noisy = _corruption(0.0, 2)
    noisy["test_error"] += np.random.default_rng(5).normal(0, 0.1, len(noisy))
    assert vd.test_error_grows(noisy).verdict == vd.INCONCLUSIVE


def test_never_fit_runs_count_as_slow():
    table = _corruption(0.0, 3)
    table.loc[table["data.corruption.fraction"] >= 0.75, "time_to_fit_epoch"] = np.nan
    v = vd.time_to_fit_grows(table)
    assert v.verdict == vd.REPRODUCED and v.numbers["n_never_fit"] == 6


def test_every_verdict_prints_its_rule_paper_and_counts():
    table = _corruption(1.0, 3)
    table.loc[0, "status"] = "diverged"
    v = vd.test_error_grows(table, missing=2)
    assert v.numbers["n"] == {"used": 14, "missing": 2, "diverged": 1}
    assert v.numbers["paper"] == vd.CLAIMS["c"].paper and "Zhang" in v.summary
    assert "contradicted if" in v.summary and "2 missing, 1 diverged" in v.summary
    low, high = v.numbers["interval"]
    assert low < v.numbers["estimate"] < high and v.numbers["threshold"] == 0.0


def _regularizers(effect: float, seeds: int, none_acc: float = 0.8) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for wd, aug, _s in itertools.product([0.0, 5e-4], [False, True], range(seeds)):
        acc = none_acc + effect * (wd > 0) + effect * aug + 0.005 * rng.standard_normal()
        rows.append(
            {"status": "ok", "optim.weight_decay": wd, "data.augment": aug, "test_acc": acc}
        )
    return pd.DataFrame(rows)


def test_regularizer_verdicts():
    add_little, needed = vd.regularizers_add_little, vd.accuracy_without_regularizers
    assert add_little(_regularizers(0.01, 3)).verdict == vd.REPRODUCED
    assert add_little(_regularizers(0.1, 3)).verdict == vd.CONTRADICTED
    assert add_little(_regularizers(0.01, 1)).verdict == vd.INCONCLUSIVE
    assert needed(_regularizers(0.0, 3)).verdict == vd.REPRODUCED
    assert needed(_regularizers(0.0, 3, none_acc=0.12)).verdict == vd.CONTRADICTED
    assert needed(_regularizers(0.0, 1)).verdict == vd.INCONCLUSIVE


WIDTHS = [4, 8, 16, 32, 64, 128]


def _widths(test_err, train_acc, seeds, noise=0.0, loss_cv=None) -> pd.DataFrame:
    rng = np.random.default_rng(2)
    rows = []
    for (w, err, acc), _s in itertools.product(
        zip(WIDTHS, test_err, train_acc, strict=True), range(seeds)
    ):
        cv = loss_cv(w) if loss_cv else 0.01
        rows.append(
            {
                "status": "ok",
                "model.width": w,
                "data.corruption.type": "labels" if noise else "none",
                "data.corruption.fraction": noise,
                "train_acc": acc,
                "test_error": err + 0.005 * rng.standard_normal(),
                "train_loss": abs(0.1 + 0.01 * rng.standard_normal()),
                "test_loss": 1.0 + cv * rng.standard_normal(),
            }
        )
    return pd.DataFrame(rows)


FITS = [0.6, 0.9, 1.0, 1.0, 1.0, 1.0]


def test_width_verdicts():
    falling = [0.5, 0.4, 0.35, 0.33, 0.31, 0.3]
    rising = [0.5, 0.4, 0.35, 0.4, 0.45, 0.5]
    peaked = [0.5, 0.45, 0.55, 0.5, 0.45, 0.42]
    assert vd.wide_nets_generalize(_widths(falling, FITS, 3)).verdict == vd.REPRODUCED
    assert vd.wide_nets_generalize(_widths(rising, FITS, 3)).verdict == vd.CONTRADICTED
    assert vd.wide_nets_generalize(_widths(falling, [0.5] * 6, 3)).verdict == vd.INCONCLUSIVE
    dd = vd.double_descent(_widths(peaked, FITS, 3, noise=0.15))
    assert dd.verdict == vd.REPRODUCED and dd.numbers["peak_width"] == 16
    assert vd.double_descent(_widths(falling, FITS, 3, noise=0.15)).verdict == vd.CONTRADICTED
    assert vd.double_descent(_widths(peaked, FITS, 1, noise=0.15)).verdict == vd.INCONCLUSIVE


def test_loss_concentration_verdict():
    shrinking = _widths(FITS, FITS, 12, loss_cv=lambda w: 0.2 / w)
    growing = _widths(FITS, FITS, 12, loss_cv=lambda w: 0.001 * w)
    assert vd.losses_concentrate(shrinking).verdict == vd.REPRODUCED
    assert vd.losses_concentrate(growing).verdict == vd.CONTRADICTED
    assert vd.losses_concentrate(_widths(FITS, FITS, 2)).verdict == vd.INCONCLUSIVE


def test_train_test_correlation_verdict():
    rng = np.random.default_rng(4)
    rows = []
    for w, rho in zip(WIDTHS, [0.95, 0.9, 0.8, 0.6, 0.3, 0.0], strict=True):
        for _s in range(30):
            a, b = rng.standard_normal(2)
            rows.append({"status": "ok", "model.width": w, "train_loss": 1 + 0.1 * a,
                         "test_loss": 1 + 0.1 * (rho * a + np.sqrt(1 - rho**2) * b)})  # fmt: skip
    table = pd.DataFrame(rows)
    assert vd.train_test_correlation_weakens(table).verdict == vd.REPRODUCED
    assert vd.train_test_correlation_weakens(table.iloc[::10]).verdict == vd.INCONCLUSIVE


def _correlations(p_greater, p_less, n_configs=30):
    k = len(p_greater)
    return pd.DataFrame(
        {
            "measure": [f"m.{i}" for i in range(k)],
            "target": "gen_gap",
            "tau": np.linspace(-0.5, 0.5, k),
            "tau_ci_low": -0.6,
            "tau_ci_high": 0.6,
            "tau_p_greater": p_greater,
            "tau_p_less": p_less,
            "psi": np.nan,
            "n_configs": n_configs,
            "n_runs": 3 * n_configs,
        }
    )


def test_flatness_verdicts_are_holm_corrected():
    corr = _correlations([0.001, 0.3, 0.99, 0.02, 0.001], [0.99, 0.7, 0.001, 0.98, 0.99])
    corr.loc[4, "n_configs"] = 4
    got = {v.claim_id: v.verdict for v in vd.flatness_predicts(corr, {"m.2": -1})}
    # m.3's p = 0.02 passes alone but not after Holm over the 4 testable measures.
    assert got == {
        "g:m.0": vd.REPRODUCED,
        "g:m.1": vd.INCONCLUSIVE,
        "g:m.2": vd.REPRODUCED,
        "g:m.3": vd.INCONCLUSIVE,
        "g:m.4": vd.INCONCLUSIVE,
    }
    against = vd.flatness_predicts(corr.iloc[:3], {"m.2": +1})[2]
    assert against.verdict == vd.CONTRADICTED and "Holm" in against.summary
    assert against.numbers["holm_family_size"] == 3
    with pytest.raises(ValueError, match="expected_sign"):
        vd.flatness_predicts(corr, 0)


def _batches(sharp_ratio: float, err_gap: float, seeds: int, converged=True) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = []
    for bs, w, lr, _s in itertools.product([32, 1024], [16, 64], [0.01, 0.1], range(seeds)):
        big = bs == 1024
        rows.append(
            {
                "status": "ok",
                "train.batch_size": bs,
                "model.width": w,
                "optim.lr": lr,
                "train.target_train_loss": 0.01,
                "stopped_by": "target_train_loss" if converged or not big else "max_epochs",
                "test_error": 0.3 + err_gap * big + 0.005 * rng.standard_normal(),
                "m.sharp": (sharp_ratio if big else 1.0) * np.exp(0.05 * rng.standard_normal()),
            }
        )
    return pd.DataFrame(rows)


def test_large_batch_verdict():
    good = vd.large_batch_sharper(_batches(10, 0.05, 2), "m.sharp")
    assert good.verdict == vd.REPRODUCED and good.numbers["n_cells"] == 4
    assert vd.large_batch_sharper(_batches(10, -0.05, 2), "m.sharp").verdict == vd.CONTRADICTED
    unconverged = vd.large_batch_sharper(_batches(10, 0.05, 2, converged=False), "m.sharp")
    assert unconverged.verdict == vd.INCONCLUSIVE
    assert unconverged.numbers["n_not_converged"] == 8
    with pytest.raises(ValueError, match=r"m\.nope"):
        vd.large_batch_sharper(_batches(10, 0.05, 3), "m.nope")


def test_dinh_and_mode_verdicts_from_stage_numbers():
    moved = {"max_abs_logit_change": 1e-9, "function_preserved": True, "fold_range_lambda_max": 1e4}
    still = moved | {"fold_range_lambda_max": 1.5}
    broken = moved | {"function_preserved": False}
    assert vd.dinh_rescaling([moved, moved]).verdict == vd.REPRODUCED
    assert vd.dinh_rescaling([still]).verdict == vd.CONTRADICTED
    assert vd.dinh_rescaling([broken]).verdict == vd.INCONCLUSIVE
    assert vd.dinh_rescaling([]).verdict == vd.INCONCLUSIVE

    def pairs(*curves):
        return [{"curve_barrier": c, "linear_barrier": 2.0} for c in curves]

    assert vd.mode_connectivity(pairs(0.01, 0.02, 0.015)).verdict == vd.REPRODUCED
    # Garipov's yardstick is the endpoints' loss, not half the straight line's barrier:
    assert vd.mode_connectivity(pairs(0.9, 0.91, 0.92)).verdict == vd.CONTRADICTED
    one = vd.mode_connectivity(pairs(0.01) + pairs(float("nan")))
    assert one.verdict == vd.INCONCLUSIVE and one.numbers["n"]["diverged"] == 2


def test_write_verdicts_json(tmp_path):
    verdicts = [vd.test_error_grows(_corruption(1.0, 3))]
    verdicts += vd.flatness_predicts(_correlations([np.nan], [np.nan], n_configs=1))
    path = tmp_path / "verdicts.json"
    vd.write_verdicts(verdicts, path)
    data = json.loads(path.read_text())
    assert [v["claim_id"] for v in data["verdicts"]] == ["c", "g:m.0"]
    assert set(data["verdicts"][0]) == {"claim_id", "claim", "verdict", "summary", "numbers"}
    assert {v["verdict"] for v in data["verdicts"]} <= set(vd.OUTCOMES)
    assert data["verdicts"][1]["numbers"]["interval"] is None


def test_analyze_counts_missing_runs_and_writes_the_reproduction_table(tmp_path):
    from flatness.stages.analyze import claim_verdicts
    from flatness.stages.captions import write_reproduction_table

    table = _corruption(1.0, 3).assign(grids="rl")
    table["run_id"] = [f"r{i}" for i in range(len(table))]
    table.loc[0, "status"] = "diverged"
    runs = {rid: {"grids": ["rl"], "overrides": []} for rid in [*table["run_id"], "gone1", "gone2"]}
    manifest = {"grids": {"rl": "random_labels"}, "runs": runs}
    verdicts = claim_verdicts(table, manifest, pd.DataFrame())
    assert [v.claim_id for v in verdicts] == ["a", "b", "c"]
    assert all(v.numbers["n"]["missing"] == 2 for v in verdicts)
    assert verdicts[2].numbers["n"] == {"used": 14, "missing": 2, "diverged": 1}
    rows = pd.read_csv(write_reproduction_table(verdicts, tmp_path / "reproduction.csv"))
    assert list(rows["claim"]) == ["a", "b", "c"] and set(rows["outcome"]) <= set(vd.OUTCOMES)
    assert rows.loc[2, "n used/missing/diverged"] == "14/2/1"
    assert rows.loc[2, "paper"].startswith("Zhang")


def test_captions_render_the_given_templates_with_their_verdicts(tmp_path):
    """The captions stage reads verdicts.json and the template files it is given (the rule's
    inputs): an edited template shows up, a figure's claims are appended, others are not."""
    from flatness.stages.captions import main as captions_main

    verdicts = [vd.test_error_grows(_corruption(1.0, 3))]
    vd.write_verdicts(verdicts, tmp_path / "verdicts.json")
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "corruption_sweep.rst").write_text("Edited sweep caption.\n")
    (tmp_path / "t" / "width.rst").write_text("Width caption.\n")
    captions_main([str(tmp_path), *map(str, sorted((tmp_path / "t").glob("*.rst")))])
    sweep = (tmp_path / "captions" / "corruption_sweep.rst").read_text()
    assert sweep.startswith("Edited sweep caption.") and f"(c): {verdicts[0].summary}" in sweep
    assert (tmp_path / "captions" / "width.rst").read_text() == "Width caption.\n"
    with pytest.raises(ValueError, match=r"notes\.txt.*\.rst"):
        captions_main([str(tmp_path), str(tmp_path / "notes.txt")])


def test_row_selection_is_shared_and_drops_unconverged_and_diverged_runs():
    from flatness.analysis.rows import correlation_rows, family_rows

    table = pd.DataFrame({
        "run_id": ["a", "b", "c", "d"], "grids": ["gen", "gen", "gen;rl", "rl"],
        "status": ["ok", "ok", "diverged", "ok"], "train.target_train_loss": 0.01,
        "stopped_by": ["target_train_loss", "max_epochs", "diverged", "target_train_loss"],
    })  # fmt: skip
    manifest = {"grids": {"gen": "generalization", "rl": "random_labels"}}
    assert list(family_rows(table, manifest, "generalization")["run_id"]) == ["a", "b", "c"]
    assert list(correlation_rows(table, manifest)["run_id"]) == ["a"]
