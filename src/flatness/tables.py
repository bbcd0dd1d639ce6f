"""Checks on the tables that stages, analysis and figures pass between them (pandas frames)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd


def require_columns(df: pd.DataFrame, columns: Sequence[str], name: str = "table") -> None:
    """Raise a ValueError naming the missing columns and what is available, before any work."""
    missing = [c for c in dict.fromkeys(columns) if c not in df.columns]
    if missing:
        raise ValueError(
            f"{name} is missing column(s) {missing}; available: {sorted(map(str, df.columns))}"
        )
