"""Shared pieces of the claim verdicts: the result type, the decision vocabulary, bootstrap helpers.

See ``flatness.analysis.verdicts`` for the decision rule every claim follows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from flatness.analysis.correlation import kendall_tau

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
TYPE, FRACTION = "data.corruption.type", "data.corruption.fraction"
REGULARIZERS = ("optim.weight_decay", "model.dropout", "model.batch_norm", "data.augment")


@dataclass(frozen=True)
class Verdict:
    claim_id: str
    claim: str
    verdict: str
    summary: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_verdict(cid: str, claim: str, verdict: str, summary: str, numbers: dict) -> Verdict:
    return Verdict(cid, claim, verdict, summary, plain(numbers))


def plain(obj):
    """numpy scalars to Python numbers, so the dataclass is JSON-ready and compares simply."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    return obj.item() if isinstance(obj, np.generic) else obj


def ok_rows(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(
            f"table is missing column(s) {missing}; available: {sorted(map(str, table.columns))}"
        )
    return table[table["status"] == "ok"] if "status" in table.columns else table


def corruption_rows(table: pd.DataFrame, corruption_type: str, column: str) -> pd.DataFrame:
    """Rows of one corruption type plus the clean runs as fraction 0."""
    df = ok_rows(table, [TYPE, FRACTION, column])
    df = df[(df[TYPE] == corruption_type) | (df[TYPE] == "none")].copy()
    df.loc[df[TYPE] == "none", FRACTION] = 0.0
    return df


def noise_rows(table: pd.DataFrame, width: str, noise: float) -> pd.DataFrame:
    """Runs at one label-noise fraction (0: clean runs, including type 'none')."""
    df = ok_rows(table, [width, "test_error", "train_acc"])
    if TYPE not in df.columns:
        if noise:
            raise ValueError(f"noise={noise!r} needs the column {TYPE!r}, which table lacks")
        return df
    clean = (df[TYPE] == "none") | ((df[TYPE] == "labels") & (df.get(FRACTION, 0) == 0))
    return df[clean] if noise == 0 else df[(df[TYPE] == "labels") & (df[FRACTION] == noise)]


def levels_of(df: pd.DataFrame, x: str, y: str) -> dict[Any, np.ndarray]:
    """Seed values of ``y`` per level of ``x``, levels sorted."""
    return {k: g.dropna().to_numpy(float) for k, g in sorted(df.groupby(x)[y])}


def too_few_seeds(levels: Mapping[Any, np.ndarray]) -> bool:
    return min(v.size for v in levels.values()) < 2


def trend(cid, claim, df, x, y, sign, n_boot, seed, extra) -> Verdict:
    """Kendall tau of the level means of ``y`` against ``x``; CI from resampling seeds per level."""
    levels = levels_of(df, x, y)
    xs = np.array(list(levels), dtype=float)
    numbers = {
        "levels": xs.tolist(),
        "means": [v.mean() if v.size else np.nan for v in levels.values()],
        **extra,
    }
    if len(levels) < 3 or too_few_seeds(levels):
        return make_verdict(
            cid,
            claim,
            INCONCLUSIVE,
            (
                f"Need >= 3 levels of {x} with >= 2 seeds each; have "
                f"{[v.size for v in levels.values()]} "
                "seeds."
            ),
            numbers,
        )

    def tau(samples):
        return kendall_tau(xs, [s.mean() for s in samples])

    low, high = boot_ci(list(levels.values()), tau, n_boot, seed)
    numbers.update(
        tau=tau(list(levels.values())),
        tau_ci=[low, high],
        ratio_last_first=numbers["means"][-1] / numbers["means"][0]
        if numbers["means"][0]
        else np.nan,
    )
    hit = low > 0 if sign > 0 else high < 0
    return make_verdict(
        cid,
        claim,
        REPRODUCED if hit else NOT_REPRODUCED,
        (
            f"Kendall tau of {y} means vs {x} is {numbers['tau']:.2f} (CI {low:.2f} to "
            f"{high:.2f}); {y} goes from {numbers['means'][0]:.3g} to {numbers['means'][-1]:.3g}."
        ),
        numbers,
    )


def boot_ci(
    samples: Sequence[np.ndarray],
    stat: Callable[[list[np.ndarray]], float],
    n_boot: int,
    seed: int,
    ci: float = 0.95,
) -> tuple[float, float]:
    """Percentile CI of ``stat`` when each sample (one per level) is resampled on its own."""
    rng = np.random.default_rng(seed)
    values = np.array(
        [stat([s[rng.integers(0, s.size, s.size)] for s in samples]) for _ in range(n_boot)]
    )
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (np.nan, np.nan)
    low, high = np.quantile(values, [(1 - ci) / 2, (1 + ci) / 2])
    return float(low), float(high)
