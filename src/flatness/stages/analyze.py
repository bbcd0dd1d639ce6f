"""The ``analyze`` stage: correlations of measures with generalization, and every claim's verdict.

Reads ``table.csv`` and ``manifest.json`` (plus the verdicts of the ``reparam`` and ``landscape``
stages when the study has them) and writes:

- ``correlations.csv``: per measure, Kendall tau with the generalization gap (bootstrap CI over
  configurations, the measures' own noise carried in) and the granulated Psi per swept axis, on the
  runs of the study's ``generalization`` grids that reached their stopping criterion;
- ``verdicts.json``: each claim the study's families can test, with its verdict (reproduced,
  contradicted, inconclusive) computed from the data and the numbers behind it;
- ``correlation_points.csv``: the configuration means each measure's tau was computed on (the
  points the flatness scatter draws, so the figure shows exactly what the verdict used);
- ``reproduction.csv``: the reproduction table the report opens with (claim, paper and its
  number, our number with interval, outcome, the design's power).

Row selection (families, finished and converged runs) comes from ``flatness.analysis.rows``, the
same functions the figures use. The captions stage turns ``verdicts.json`` into figure captions.

By hand: ``python -m flatness.stages.analyze results/<study>``.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import pandas as pd

from flatness.analysis import verdicts as v
from flatness.analysis.correlation import (
    CORRELATION_COLUMNS,
    POINT_COLUMNS,
    correlation_points,
    correlation_table,
    write_correlations,
)
from flatness.analysis.rows import correlation_rows, family_rows, missing_runs
from flatness.io import read_json
from flatness.stages.captions import write_reproduction_table
from flatness.tables import is_measure_value

# The sign of tau with the gap that "flatter generalizes better" predicts: +1 for sharpness-like
# measures (larger = sharper), -1 where larger means flatter or better separated. lambda_min says
# minimum or saddle, not flat or sharp: it is correlated but makes no flatness claim.
EXPECTED_SIGN = {"m.margin": -1, "m.local_displacement": -1}
NO_FLATNESS_CLAIM = ("m.lambda_min",)
BATCH = "train.batch_size"
FRACTION = "data.corruption.fraction"


def measure_columns(table: pd.DataFrame) -> list[str]:
    """``m.<name>`` value columns with at least one finite value."""
    cols = [c for c in table.columns if is_measure_value(c)]
    return [c for c in cols if pd.to_numeric(table[c], errors="coerce").notna().any()]


def swept_axes(table: pd.DataFrame) -> list[str]:
    """Config columns that vary across the runs (seed excluded): the Psi axes."""
    axes = []
    for col in table.columns:
        if col.split(".")[0] in ("data", "model", "optim", "train") and table[col].nunique() > 1:
            axes.append(col)
    return axes


TARGETS = ("gen_gap", "test_error")


def correlations(
    table: pd.DataFrame, manifest: dict, n_boot: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The correlation table and the configuration-mean points behind it, per target."""
    family = family_rows(table, manifest, "generalization")
    rows = correlation_rows(table, manifest)
    print(f"correlations: {len(rows)} of {len(family)} generalization runs finished and converged")
    measures = measure_columns(rows)
    if rows.empty or not measures:
        return pd.DataFrame(columns=CORRELATION_COLUMNS), pd.DataFrame(columns=POINT_COLUMNS)
    axes = swept_axes(rows)
    tables = [
        correlation_table(rows, measures, target=target, axes=axes, n_boot=n_boot, seed=seed)
        for target in TARGETS
    ]
    points = [correlation_points(rows, measures, target) for target in TARGETS]
    return pd.concat(tables, ignore_index=True), pd.concat(points, ignore_index=True)


def claim_verdicts(table: pd.DataFrame, manifest: dict, corr: pd.DataFrame) -> list:
    families = set(manifest["grids"].values())
    out: list = []

    def rows_of(family):
        return one_dataset(family_rows(table, manifest, family), family), missing_runs(
            table, manifest, family
        )

    if "random_labels" in families:
        rows, missing = rows_of("random_labels")
        labels = rows[rows["data.corruption.type"].isin(["labels", "none"])]
        out += [v.random_labels_fitted(labels, missing=missing),
                v.time_to_fit_grows(labels, missing=missing),
                v.test_error_grows(labels, missing=missing)]  # fmt: skip
    if "regularizers" in families:
        rows, missing = rows_of("regularizers")
        out += [v.accuracy_without_regularizers(rows, missing=missing),
                v.regularizers_add_little(rows, missing=missing)]  # fmt: skip
    if "width" in families:
        rows, missing = rows_of("width")
        clean = rows[rows[FRACTION] == 0.0] if FRACTION in rows else rows
        out += [v.wide_nets_generalize(clean, missing=missing),
                v.double_descent(rows, missing=missing)]  # fmt: skip
    if "concentration" in families:  # Choromanska et al.: many seeds per width, clean labels
        rows, missing = rows_of("concentration")
        clean = rows[rows[FRACTION] == 0.0] if FRACTION in rows else rows
        out += [v.losses_concentrate(clean, missing=missing),
                v.train_test_correlation_weakens(clean, missing=missing)]  # fmt: skip
    if "generalization" in families and not corr.empty:
        rows, missing = rows_of("generalization")
        diverged = int((rows["status"] != "ok").sum()) if "status" in rows else 0
        claims = corr[(corr["target"] == "gen_gap") & ~corr["measure"].isin(NO_FLATNESS_CLAIM)]
        for verdict in v.flatness_predicts(claims, expected_sign=EXPECTED_SIGN):
            n = verdict.numbers["n"] | {"missing": missing, "diverged": diverged}
            out.append(replace(verdict, numbers=verdict.numbers | {"n": n}))
        if BATCH in rows and rows[BATCH].nunique() > 1 and "m.lambda_max" in rows:
            out.append(v.large_batch_sharper(rows, "m.lambda_max", missing=missing))
    return out


def one_dataset(rows: pd.DataFrame, family: str) -> pd.DataFrame:
    """A claim's rows come from one data set and training-set size: a family whose grids mix
    them (say MNIST-1D and digits) would compare widths or fractions across data sets."""
    keys = [k for k in ("data.name", "data.n_train") if k in rows]
    mixed = rows[keys].astype(str).drop_duplicates() if keys else rows.iloc[:0]
    if len(mixed) > 1:
        raise ValueError(
            f"the grids of family {family!r} mix data sets {mixed.to_dict('records')}; allowed: "
            "one data set and data.n_train per family (give the other grid its own family)"
        )
    return rows


def stage_verdicts(results: Path) -> list:
    """Dinh's and mode connectivity's verdicts from the numbers the reparam and landscape stages
    wrote (they write numbers only; the decision is made in flatness.analysis)."""
    out = []
    reparam = results / "reparam" / "summary.json"
    if reparam.exists():
        out.append(v.dinh_rescaling(read_json(reparam)["dinh_models"]))
    landscape = results / "landscape" / "landscape.json"
    if landscape.exists():
        out.append(v.mode_connectivity(read_json(landscape)["mode_pairs"]))
    return out


def analyze(results: Path, n_boot: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, list]:
    table = pd.read_csv(results / "table.csv")
    manifest = read_json(results / "manifest.json")
    corr, points = correlations(table, manifest, n_boot, seed)
    verdicts = claim_verdicts(table, manifest, corr) + stage_verdicts(results)
    write_correlations(corr, results / "correlations.csv")
    write_correlations(points, results / "correlation_points.csv")
    v.write_verdicts(verdicts, results / "verdicts.json")
    write_reproduction_table(verdicts, results / "reproduction.csv")
    return corr, verdicts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", type=Path, help="results/<study>")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    args = parser.parse_args(argv)
    _, verdicts = analyze(args.results_dir, args.n_boot, args.seed)
    for verdict in verdicts:
        print(f"[{verdict.verdict}] {verdict.claim_id}: {verdict.summary}")


if __name__ == "__main__":
    main()
