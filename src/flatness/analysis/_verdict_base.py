"""Shared pieces of the claim verdicts: the result type, the three outcomes, the decision rule and
the row selections every claim uses.

See ``flatness.analysis.verdicts`` for the rule every claim follows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from flatness.analysis.claims import CLAIMS, Claim
from flatness.analysis.stats import Interval
from flatness.io import to_jsonable
from flatness.tables import require_columns

REPRODUCED, CONTRADICTED, INCONCLUSIVE = "reproduced", "contradicted", "inconclusive"
OUTCOMES = (REPRODUCED, CONTRADICTED, INCONCLUSIVE)
TYPE, FRACTION = "data.corruption.type", "data.corruption.fraction"
REGULARIZERS = ("optim.weight_decay", "model.dropout", "model.batch_norm", "data.augment")


@dataclass(frozen=True)
class Verdict:
    claim_id: str
    claim: str
    verdict: str
    summary: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.verdict not in OUTCOMES:
            raise ValueError(f"verdict={self.verdict!r} for {self.claim_id}; allowed: {OUTCOMES}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Counts:
    """Runs a verdict used, runs of its grids that never wrote metrics, and runs that diverged."""

    used: int
    missing: int = 0
    diverged: int = 0

    def text(self) -> str:
        return f"n = {self.used} runs used, {self.missing} missing, {self.diverged} diverged"


def decide(claim: Claim, low: float, high: float) -> str:
    """The three outcomes from an interval and the claim's declared boundaries."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return INCONCLUSIVE
    if claim.side > 0:
        if low > claim.threshold:
            return REPRODUCED
        return CONTRADICTED if high < claim.contradict_at else INCONCLUSIVE
    if high < claim.threshold:
        return REPRODUCED
    return CONTRADICTED if low > claim.contradict_at else INCONCLUSIVE


def verdict(
    cid: str,
    counts: Counts,
    outcome: str,
    finding: str,
    numbers: Mapping[str, Any] | None = None,
    interval: Interval | None = None,
    claim_id: str | None = None,
) -> Verdict:
    """A verdict that prints the declared claim, the rule, the paper's number and the counts.

    ``cid`` is the verdict's id (``g:m.trace`` for one measure of claim ``g``); ``claim_id`` the
    declared claim when it differs.
    """
    claim = CLAIMS[claim_id or cid]
    nums: dict[str, Any] = {
        "statistic": claim.statistic,
        "estimate": interval.estimate if interval else None,
        "interval": interval.as_list() if interval else None,
        "threshold": claim.threshold,
        "contradict_at": claim.contradict_at,
        "side": claim.side,
        "paper": claim.paper,
        "design_power": claim.design_power,
        "n": asdict(counts),
        **(numbers or {}),
    }
    summary = (
        f"{finding} Rule: {claim.rule()}. Paper: {claim.paper} {counts.text()}.{_power_text(claim)}"
    )
    return Verdict(
        cid, claim.statement, outcome, summary, to_jsonable(nums)
    )  # JSON-ready: compares simply


def inconclusive(cid: str, counts: Counts, why: str, numbers=None, claim_id=None) -> Verdict:
    return verdict(cid, counts, INCONCLUSIVE, f"Too little data: {why}", numbers, None, claim_id)


def _power_text(claim: Claim) -> str:
    if claim.design_power is None:
        return ""
    return f" Power of the claims study's design: {claim.design_power:.0%}."


def interval_text(iv: Interval, digits: str = ".3g") -> str:
    return f"{iv.estimate:{digits}} (95% CI {iv.low:{digits}} to {iv.high:{digits}})"


def usable(table: pd.DataFrame, columns: Sequence[str]) -> tuple[pd.DataFrame, int]:
    """Rows with status 'ok' and the number of other (diverged) rows; names missing columns."""
    require_columns(table, columns)
    if "status" not in table.columns:
        return table, 0
    ok = table["status"] == "ok"
    return table[ok], int((~ok).sum())


def corruption_rows(table: pd.DataFrame, corruption_type: str, column: str):
    """Rows of one corruption type plus the clean runs as fraction 0, and the diverged count."""
    df = (
        table[(table[TYPE] == corruption_type) | (table[TYPE] == "none")]
        if TYPE in table
        else table
    )
    df, diverged = usable(df, [TYPE, FRACTION, column])
    df = df.copy()
    df.loc[df[TYPE] == "none", FRACTION] = 0.0
    return df, diverged


def noise_rows(table: pd.DataFrame, width: str, noise: float):
    """Runs at one label-noise fraction (0: clean runs, including type 'none'), diverged count."""
    if TYPE not in table.columns:
        if noise:
            raise ValueError(f"noise={noise!r} needs the column {TYPE!r}, which table lacks")
        return usable(table, [width, "test_error", "train_acc"])
    clean = (table[TYPE] == "none") | ((table[TYPE] == "labels") & (table.get(FRACTION, 0) == 0))
    rows = (
        table[clean]
        if noise == 0
        else table[(table[TYPE] == "labels") & (table[FRACTION] == noise)]
    )
    return usable(rows, [width, "test_error", "train_acc"])


def levels_of(df: pd.DataFrame, x: str, y: str) -> dict[Any, np.ndarray]:
    """Finite seed values of ``y`` per level of ``x``, levels sorted."""
    out = {}
    for k, g in sorted(df.groupby(x)[y]):
        values = g.to_numpy(float)
        out[k] = values[np.isfinite(values)]
    return out


def too_few_seeds(levels: Mapping[Any, np.ndarray], need: int = 2) -> bool:
    return not levels or min(v.size for v in levels.values()) < need
