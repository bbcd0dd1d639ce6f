"""Kendall tau-b and granulated Psi (Jiang et al.) in one weighted form: bootstraps as matmuls.

All the Kendall statistics here are written in one weighted form. With ``S_ij = sign(x_i - x_j)``
and ``T_ij = sign(y_i - y_j)`` and multiplicities ``w`` (all ones for the data itself, multinomial
counts for a bootstrap resample),

    tau_b = w' (S*T) w / sqrt(w' |S| w * w' |T| w),

which is exactly scipy's tau-b: duplicated configurations are tied pairs (sign 0) and drop out of
both the numerator and the tie-corrected denominators. The form lets every bootstrap resample be a
matrix product instead of a Python loop.

Granulated Psi (Jiang et al. 2020, eq. for psi_i): for hyperparameter axis i, the "cells" are the
sets of configurations that agree on every other axis; psi_i is the mean over cells (that vary in
axis i) of tau within the cell, and Psi is the mean of psi_i over axes. Inside a cell, a measure or
target that does not vary gives tau = 0 (Jiang's sign(0) = 0 convention: #params has psi = 0 on the
batch-size axis) instead of tau-b's undefined 0/0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from flatness.tables import require_columns


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Tie-aware Kendall tau-b of two equally long sequences (equals ``scipy.stats.kendalltau``).

    Returns NaN when either sequence is constant (tau-b is 0/0 there) or has fewer than 2 values.
    """
    x, y = as_pair(x, y)
    return float(weighted_tau_b(sign_matrix(x), sign_matrix(y), np.ones((1, x.size)))[0])


def granulated_psi(
    configs: pd.DataFrame, measure: str, target: str, axes: Sequence[str]
) -> dict[str, float]:
    """Granulated Kendall coefficient: ``{"psi": Psi, "psi_<axis>": psi_i, ...}``.

    ``configs`` has one row per configuration with the axis columns, ``measure`` and ``target``.
    An axis with no cell where it varies gets psi_i = NaN and is left out of the mean Psi.
    """
    require_columns(configs, [measure, target, *axes], "configs")
    x, y = as_pair(configs[measure], configs[target])
    out = psi_weighted(
        sign_matrix(x), sign_matrix(y), axis_cells(configs, axes), np.ones((1, x.size))
    )
    return {k: float(v[0]) for k, v in out.items()}


def sign_matrix(v: np.ndarray) -> np.ndarray:
    return np.sign(v[:, None] - v[None, :])


def quadratic_forms(weights: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``w_b' M w_b`` for every row ``w_b`` of ``weights``."""
    return np.einsum("bi,bi->b", weights @ matrix, weights)


def weighted_tau_b(sx: np.ndarray, sy: np.ndarray, weights: np.ndarray) -> np.ndarray:
    num = quadratic_forms(weights, sx * sy)
    den = np.sqrt(quadratic_forms(weights, np.abs(sx)) * quadratic_forms(weights, np.abs(sy)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def axis_cells(configs: pd.DataFrame, axes: Sequence[str]) -> dict[str, tuple[np.ndarray, ...]]:
    """Per axis: (cell id of each configuration, axis value code of each configuration)."""
    codes = {a: pd.factorize(configs[a].astype(str))[0] for a in axes}
    cells = {}
    for a in axes:
        others = [codes[b] for b in axes if b != a]
        key = np.stack(others, axis=1) if others else np.zeros((len(configs), 1), int)
        cells[a] = (np.unique(key, axis=0, return_inverse=True)[1].ravel(), codes[a])
    return cells


def psi_weighted(sx, sy, cells, weights) -> dict[str, np.ndarray]:
    """psi_i and Psi for each weight row, all cells at once (block-diagonal masks)."""
    out: dict[str, np.ndarray] = {}
    for axis, (cell, value) in cells.items():
        same_cell = cell[:, None] == cell[None, :]
        varies = (same_cell & (value[:, None] != value[None, :])).astype(float)
        onehot = (cell[:, None] == np.arange(cell.max() + 1)[None, :]).astype(float)

        def per_cell(m, onehot=onehot, same_cell=same_cell):
            return ((weights @ (m * same_cell)) * weights) @ onehot

        num, dx, dy = per_cell(sx * sy), per_cell(np.abs(sx)), per_cell(np.abs(sy))
        active = per_cell(varies) > 0  # the cell holds >= 2 different values of this axis
        with np.errstate(invalid="ignore", divide="ignore"):
            tau = np.where(dx * dy > 0, num / np.sqrt(dx * dy), 0.0)
        n_active = active.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"psi_{axis}"] = np.where(n_active > 0, (tau * active).sum(1) / n_active, np.nan)
    if out:
        stacked = np.stack(list(out.values()), axis=1)
        with np.errstate(invalid="ignore"):
            all_nan = np.isnan(stacked).all(axis=1)
            out["psi"] = np.where(
                all_nan, np.nan, np.nanmean(np.where(all_nan[:, None], 0, stacked), 1)
            )
    return out


def as_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if x.size != y.size:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("x and y must be finite; drop NaN/inf rows (e.g. diverged runs) first")
    return x, y
