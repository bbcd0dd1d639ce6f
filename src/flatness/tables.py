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


# table.csv names a measure's value column m.<name> and its standard error m.<name>.stderr
# (flatness.stages.aggregate writes them; analysis, reparam and figures read them).
MEASURE_PREFIX, STDERR_SUFFIX = "m.", ".stderr"


def measure_column(name: str) -> str:
    """The table.csv column of measure ``name``'s value."""
    return f"{MEASURE_PREFIX}{name}"


def stderr_column(column: str) -> str:
    """The table.csv column of the standard error of a measure value ``column``."""
    return f"{column}{STDERR_SUFFIX}"


def is_measure_value(column: str) -> bool:
    """Whether a table.csv column holds a measure's value (not its standard error)."""
    return column.startswith(MEASURE_PREFIX) and not column.endswith(STDERR_SUFFIX)
