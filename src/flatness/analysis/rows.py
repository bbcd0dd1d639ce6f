"""Which rows of ``table.csv`` a verdict or a figure uses: one place, so the two cannot drift.

- ``family_rows``: the runs of a study family's grids (a combined study such as ``default`` holds
  several families, each tested on its own grids);
- ``ok_runs``: runs that finished (status ``ok``); diverged runs are counted, never drawn;
- ``converged_rows``: Jiang et al.'s protocol for the flatness correlations, runs that reached
  ``train.target_train_loss``;
- ``correlation_rows``: the generalization runs the correlations, their verdicts and the flatness
  figures all use;
- ``missing_runs``: runs of a family in the manifest that never wrote metrics.
"""

from __future__ import annotations

import pandas as pd


def family_rows(table: pd.DataFrame, manifest: dict, family: str) -> pd.DataFrame:
    """The rows of ``table`` whose runs belong to a grid of ``family``."""
    grids = {g for g, fam in manifest["grids"].items() if fam == family}
    member = table["grids"].fillna("").str.split(";").map(lambda gs: bool(grids.intersection(gs)))
    return table[member].copy()


def ok_runs(table: pd.DataFrame) -> pd.DataFrame:
    """Runs that finished (status 'ok'); diverged runs are left out of every figure."""
    return table[table["status"] == "ok"].copy() if "status" in table.columns else table.copy()


def converged_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Jiang et al.'s protocol: measures are compared only across models trained to the same
    criterion, so runs with a ``train.target_train_loss`` that never reached it are left out."""
    target = rows.get("train.target_train_loss")
    if target is None or target.isna().all():
        return rows
    return rows[rows["stopped_by"] == "target_train_loss"]


def correlation_rows(table: pd.DataFrame, manifest: dict) -> pd.DataFrame:
    """The runs the flatness correlations are computed on, and the scatter draws: finished runs
    of the ``generalization`` grids that reached their stopping criterion."""
    return converged_rows(ok_runs(family_rows(table, manifest, "generalization")))


def missing_runs(table: pd.DataFrame, manifest: dict, family: str) -> int:
    """Runs of the family's grids in the manifest that have no row in the table (no metrics)."""
    grids = {g for g, fam in manifest["grids"].items() if fam == family}
    wanted = {rid for rid, r in manifest["runs"].items() if grids.intersection(r["grids"])}
    return len(wanted - set(table["run_id"])) if "run_id" in table.columns else 0
