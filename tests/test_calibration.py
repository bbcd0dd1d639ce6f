"""Calibration of every claim rule, by simulation: the real verdict functions on simulated tables.

For each rule, two simulations:

- **size**: tables where the claim is false *at the boundary* (the effect exactly at the
  no-effect threshold, the worst case for a one-sided rule). The rule must say "reproduced" at most
  2.5% of the time; with R replicates the Monte Carlo standard error of the rate is
  sqrt(0.025 * 0.975 / R) (0.0049 at R = 1000), and the test fails when the rate exceeds
  2.5% by more than 2.33 standard errors (a one-sided 1% test of "rate <= 2.5%").
- **power**: tables at the effect size the ``claims`` study is designed for (the paper's effect,
  scaled to MNIST-1D / digits), with the seeds and levels of ``conf/study/claims.yaml`` and the seed
  noise measured in the pilot runs (see ``NOISE``). The simulated power must agree with the
  ``design_power`` declared in ``flatness.analysis.claims`` within 3 Monte Carlo standard errors,
  so the power every verdict prints is checked here, not typed in.

The boundary tables include unequal variances across levels where the rule could be sensitive to
them (Welch intervals are used there for that reason). Run with ``-s`` to see the rates.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from flatness.analysis import verdicts as vd
from flatness.analysis.stats import holm, permutation_tau_pvalues
from flatness.config import CONF_DIR

STUDY = OmegaConf.load(CONF_DIR / "study" / "claims.yaml")
SIZE_REPS, POWER_REPS = 1000, 300
# Seed-to-seed standard deviations from the pilot runs of the claims study's configurations (README,
# "Verdicts and the claims study"): test error 0.009 (clean, width 48, 3 seeds) and 0.02 (15% label
# noise); epochs to fit and train accuracy on random labels barely varied over 2 seeds (90/90
# epochs, 100%/100%), so 0.15 and 0.003 are deliberately pessimistic.
NOISE = {"test_error": 0.01, "test_error_noisy": 0.02, "log_time_to_fit": 0.15,
         "train_acc_random": 0.003}  # fmt: skip


def seeds_of(grid: str) -> int:
    return len(STUDY.grids[grid].get("seeds", STUDY.seeds))


def sweep_of(grid: str, key: str) -> list:
    return list(STUDY.grids[grid].sweep[key])


def rate(make_table, rule, reps: int, seed: int) -> tuple[float, float]:
    """Fraction of ``reps`` simulated tables the rule calls reproduced, with its MC stderr."""
    rng = np.random.default_rng(seed)
    hits = sum(rule(make_table(rng)).verdict == vd.REPRODUCED for _ in range(reps))
    p = hits / reps
    return p, float(np.sqrt(max(p * (1 - p), 0.025 * 0.975) / reps))


def check(claim_id: str, size: tuple[float, float], power: tuple[float, float] | None) -> None:
    p, se = size
    print(f"\n{claim_id}: P(reproduced | false at boundary) = {p:.4f} +- {se:.4f}", end="")
    assert p <= 0.025 + 2.33 * se, f"{claim_id} is anti-conservative: {p:.4f} +- {se:.4f}"
    if power is not None:
        pw, pse = power
        declared = vd.CLAIMS[claim_id].design_power
        print(f"; power at the design effect = {pw:.3f} +- {pse:.3f} (declared {declared})", end="")
        assert abs(pw - declared) <= 3 * pse + 0.005, f"{claim_id}: declared power {declared}"


# --- (a)-(c): corruption sweeps -----------------------------------------------------------------


def corruption_table(rng, seeds, column, means, sds) -> pd.DataFrame:
    fractions = sweep_of("random_labels", "data.corruption.fraction")
    rows = []
    for (i, f), _ in itertools.product(enumerate(fractions), range(seeds)):
        rows.append({"status": "ok", "data.corruption.type": "labels",
                     "data.corruption.fraction": f, "train_acc": 1.0, "test_acc": 0.5,
                     "epochs": 10_000, column: means[i] + sds[i] * rng.standard_normal()})  # fmt: skip
    return pd.DataFrame(rows)


def test_random_labels_fitted_calibration():
    seeds, sd = seeds_of("random_labels"), NOISE["train_acc_random"]
    k = len(sweep_of("random_labels", "data.corruption.fraction"))

    def table(mean_at_one):
        return lambda rng: corruption_table(
            rng, seeds, "train_acc", [1.0] * (k - 1) + [mean_at_one], [sd] * k
        )

    size = rate(table(0.99), vd.random_labels_fitted, SIZE_REPS, 0)
    # design: random labels fitted to 99.8% (the digits pilot fits them to 100%)
    check("a", size, rate(table(0.998), vd.random_labels_fitted, POWER_REPS, 1))


@pytest.mark.parametrize("claim_id", ["b", "c"])
def test_corruption_trend_calibration(claim_id):
    seeds = seeds_of("random_labels")
    x = np.array(sweep_of("random_labels", "data.corruption.fraction"), dtype=float)
    if claim_id == "b":
        column, rule, sd, effect = (
            "time_to_fit_epoch",
            vd.time_to_fit_grows,
            NOISE["log_time_to_fit"],
            np.log(3.0),
        )
    else:
        column, rule, sd, effect = "test_error", vd.test_error_grows, NOISE["test_error"], 0.5

    def table(slope, hetero):
        sds = sd * (1 + hetero * np.arange(x.size))  # boundary: variances grow 9-fold over levels
        means = slope * x
        if claim_id == "b":
            return lambda rng: _exp_column(
                corruption_table(rng, seeds, column, 3.0 + means, sds), column
            )
        return lambda rng: corruption_table(rng, seeds, column, 0.3 + means, sds)

    size = rate(table(0.0, 0.5), rule, SIZE_REPS, 2)
    # design: Zhang's ~3x slowdown (b) and a test error rising by 0.5 from clean to random (c)
    check(claim_id, size, rate(table(effect, 0.0), rule, POWER_REPS, 3))


def _exp_column(df: pd.DataFrame, column: str) -> pd.DataFrame:
    return df.assign(**{column: np.exp(df[column])})


# --- (d1), (d2): regularizers -------------------------------------------------------------------


def regularizer_table(rng, seeds, none_mean, gains, sd) -> pd.DataFrame:
    combos = list(
        itertools.product(*(sweep_of("regularizers", k) for k in STUDY.grids.regularizers.sweep))
    )
    keys = list(STUDY.grids.regularizers.sweep)
    rows = []
    for i, combo in enumerate(combos):
        mean = none_mean + (0.0 if i == 0 else gains[i - 1])
        for _ in range(seeds):
            rows.append({"status": "ok", **dict(zip(keys, combo, strict=True)),
                         "test_acc": mean + sd * rng.standard_normal()})  # fmt: skip
    return pd.DataFrame(rows)


def test_regularizer_rules_calibration():
    seeds, sd = seeds_of("regularizers"), NOISE["test_error"]
    n_other = int(np.prod([len(v) for v in STUDY.grids.regularizers.sweep.values()])) - 1
    d1 = rate(lambda rng: regularizer_table(rng, seeds, 0.3, [0.0] * n_other, sd),
              vd.accuracy_without_regularizers, SIZE_REPS, 4)  # fmt: skip
    # design: the MNIST-1D MLP baseline, ~0.66 test accuracy without regularizers
    check("d1", d1, rate(lambda rng: regularizer_table(rng, seeds, 0.66, [0.0] * n_other, sd),
                         vd.accuracy_without_regularizers, POWER_REPS, 5))  # fmt: skip
    # boundary for the intersection-union test: one gain exactly at the margin, the rest clearly
    # below (they pass, so the one at the margin alone decides); design: gains of 1 point
    at_margin = [0.05] + [-0.2] * (n_other - 1)
    d2 = rate(
        lambda rng: regularizer_table(rng, seeds, 0.66, at_margin, sd),
        vd.regularizers_add_little,
        SIZE_REPS,
        6,
    )
    power = rate(lambda rng: regularizer_table(rng, seeds, 0.66, [0.01] * n_other, sd),
                 vd.regularizers_add_little, POWER_REPS, 7)  # fmt: skip
    check("d2", d2, power)


# --- (e1), (e2): width --------------------------------------------------------------------------


def width_table(rng, seeds, errors, sds, noise, train_acc) -> pd.DataFrame:
    widths = sweep_of("width", "model.width")
    rows = []
    for (w, err, sd, acc), _ in itertools.product(
        zip(widths, errors, sds, train_acc, strict=True), range(seeds)
    ):
        rows.append({"status": "ok", "model.width": w, "data.corruption.type": "labels",
                     "data.corruption.fraction": noise, "train_acc": acc,
                     "test_error": err + sd * rng.standard_normal()})  # fmt: skip
    return pd.DataFrame(rows)


def test_wide_nets_calibration():
    seeds, sd = seeds_of("width"), NOISE["test_error"]
    k = len(sweep_of("width", "model.width"))
    fits = [0.9] * (k // 2) + [1.0] * (k - k // 2)
    tol = vd.CLAIMS["e1"].threshold

    def table(widest_minus_interp):
        errors = [0.5] * (k - 1) + [0.4 + widest_minus_interp]
        errors[k // 2] = 0.4
        # the boundary has unequal variances (the widest is noisier), the design equal ones
        sds = [sd] * (k - 1) + [(3 if widest_minus_interp == tol else 1) * sd]
        return lambda rng: width_table(rng, seeds, errors, sds, 0.0, fits)

    size = rate(table(tol), vd.wide_nets_generalize, SIZE_REPS, 8)
    # design: the MNIST-1D notebook, 41.01% at the interpolation width -> 37.25% at width 300
    check("e1", size, rate(table(-0.0376), vd.wide_nets_generalize, POWER_REPS, 9))


def test_double_descent_calibration():
    seeds, sd = seeds_of("width"), NOISE["test_error_noisy"]
    k = len(sweep_of("width", "model.width"))
    m = vd.CLAIMS["e2"].threshold

    fits = [0.9] * (k // 2) + [1.0] * (k - k // 2)  # interpolation at the middle width

    def table(height):
        # a bump of the given height above the best narrower and best wider nets
        errors = np.full(k, 0.45)
        errors[0], errors[k // 2] = 0.5, 0.45 + height
        return lambda rng: width_table(rng, seeds, errors, [sd] * k, 0.15, fits)

    size = rate(table(m), vd.double_descent, SIZE_REPS, 10)
    # design: the MNIST-1D notebook's peak, ~5 points above the best narrower net
    check("e2", size, rate(table(0.05), vd.double_descent, POWER_REPS, 11))


# --- (f1), (f2): concentration ------------------------------------------------------------------


def concentration_table(rng, seeds, cv, rho) -> pd.DataFrame:
    widths = sweep_of("concentration", "model.width")
    rows = []
    for w, c, r in zip(widths, cv, rho, strict=True):
        a, b = rng.standard_normal((2, seeds))
        rows += [{"status": "ok", "model.width": w, "train_loss": 0.1 + 0.01 * a[i],
                  "test_loss": 1.0 + c * (r * a[i] + np.sqrt(1 - r**2) * b[i])} for i in range(seeds)]  # fmt: skip
    return pd.DataFrame(rows)


def test_concentration_calibration():
    seeds = seeds_of("concentration")
    widths = np.array(sweep_of("concentration", "model.width"), dtype=float)
    flat, rho = [0.05] * widths.size, [0.6] * widths.size
    f1 = rate(
        lambda rng: concentration_table(rng, seeds, flat, rho), vd.losses_concentrate, SIZE_REPS, 12
    )
    # design f1: the spread halves from the narrowest to the widest width
    halving = 0.05 * 0.5 ** (np.log2(widths / widths[0]) / np.log2(widths[-1] / widths[0]))
    check("f1", f1, rate(lambda rng: concentration_table(rng, seeds, halving, rho),
                         vd.losses_concentrate, POWER_REPS, 13))  # fmt: skip
    f2 = rate(
        lambda rng: concentration_table(rng, seeds, flat, rho),
        vd.train_test_correlation_weakens,
        SIZE_REPS,
        14,
    )
    # design f2: Choromanska's 0.76 -> 0.41
    weakening = np.interp(np.log2(widths), np.log2([25, 500]), [0.76, 0.41])
    check("f2", f2, rate(lambda rng: concentration_table(rng, seeds, flat, weakening),
                         vd.train_test_correlation_weakens, POWER_REPS, 15))  # fmt: skip


# --- (g), (h): flatness ------------------------------------------------------------------------


def test_holm_permutation_rule_controls_the_family_error():
    """Under the global null (no measure predicts the gap), P(any measure reproduced) <= 2.5%."""
    rng = np.random.default_rng(16)
    n_configs, n_measures, n_perm, reps = 12, 6, 400, 300
    false_hits = 0
    for _ in range(reps):
        gap = rng.standard_normal(n_configs)
        sy = np.sign(gap[:, None] - gap[None, :])
        pvals = []
        for _m in range(n_measures):
            x = rng.standard_normal(n_configs)
            sx = np.sign(x[:, None] - x[None, :])
            tau = float((sx * sy).sum() / np.sqrt(np.abs(sx).sum() * np.abs(sy).sum()))
            pvals.append(permutation_tau_pvalues(sx, sy, tau, n_perm, rng)[0])
        false_hits += bool((holm(pvals) <= 0.025).any())
    p, se = false_hits / reps, np.sqrt(0.025 * 0.975 / reps)
    print(f"\ng: family-wise P(any reproduced | no measure predicts) = {p:.4f} +- {se:.4f}")
    assert p <= 0.025 + 2.33 * se


def test_holm_permutation_rule_power_at_the_design():
    """Power for one measure with Kendall tau 0.6 with the gap (Gaussian copula) among the ~28
    measures of the suite, over the claims study's configurations. The other measures' p-values
    are drawn uniform (their null distribution), so only one permutation test runs per table."""
    grid = STUDY.grids.generalization.sweep
    n_configs = int(np.prod([len(v) for v in grid.values()]))
    n_measures, n_perm, reps = 28, 20_000, POWER_REPS
    rng = np.random.default_rng(20)
    rho = np.sin(np.pi * 0.6 / 2)
    hits = 0
    for _ in range(reps):
        gap, noise = rng.standard_normal((2, n_configs))
        x = rho * gap + np.sqrt(1 - rho**2) * noise
        sx, sy = (np.sign(v[:, None] - v[None, :]) for v in (x, gap))
        tau = float((sx * sy).sum() / np.sqrt(np.abs(sx).sum() * np.abs(sy).sum()))
        p = permutation_tau_pvalues(sx, sy, tau, n_perm, rng)[0]
        hits += bool(holm([p, *rng.random(n_measures - 1)])[0] <= 0.025)
    power, se = hits / reps, np.sqrt(max(hits * (reps - hits), 1) / reps**3)
    declared = vd.CLAIMS["g"].design_power
    print(
        f"\ng: power at tau 0.6 over {n_configs} configs = {power:.3f} +- {se:.3f} (declared {declared})"
    )
    assert abs(power - declared) <= 3 * se + 0.005


def batch_table(rng, seeds, err_gap, log_sharp_gap, sd) -> pd.DataFrame:
    grid = STUDY.grids.generalization.sweep
    rows = []
    for bs, w, d, lr, _ in itertools.product(
        grid["train.batch_size"],
        grid["model.width"],
        grid["model.depth"],
        grid["optim.lr"],
        range(seeds),
    ):
        big = bs == max(grid["train.batch_size"])
        cell = 0.02 * np.log2(w) + 0.01 * d + lr  # configurations differ; pairing removes this
        rows.append({"status": "ok", "train.batch_size": bs, "model.width": w, "model.depth": d,
                     "optim.lr": lr,
                     "test_error": 0.3 + cell + err_gap * big + sd * rng.standard_normal(),
                     "m.lambda_max": np.exp(1 + cell + log_sharp_gap * big + 0.2 * rng.standard_normal())})  # fmt: skip
    return pd.DataFrame(rows)


def test_large_batch_calibration():
    seeds, sd = seeds_of("generalization"), NOISE["test_error"]

    def rule(t):
        return vd.large_batch_sharper(t, "m.lambda_max")

    size = rate(lambda rng: batch_table(rng, seeds, 0.0, 3.0, sd), rule, SIZE_REPS, 17)
    # design: Keskar's C1 gap (2.8 points) with a 3x sharper large-batch minimum
    check(
        "h",
        size,
        rate(lambda rng: batch_table(rng, seeds, 0.028, np.log(3), sd), rule, POWER_REPS, 18),
    )


def test_mode_connectivity_calibration():
    pairs = int(STUDY.stages.landscape.n_pairs)
    margin = vd.CLAIMS["mode"].threshold

    def table(mean):
        return lambda rng: [{"curve_barrier": mean + 0.02 * rng.standard_normal(), "linear_barrier": 1.0}
                            for _ in range(pairs)]  # fmt: skip

    size = rate(table(margin), vd.mode_connectivity, SIZE_REPS, 19)
    # design: Garipov's "nearly constant" curve, a barrier of 0.01 nats (pair sd 0.02)
    check("mode", size, rate(table(0.01), vd.mode_connectivity, POWER_REPS, 21))
