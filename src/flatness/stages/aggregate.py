"""The ``aggregate`` stage: every run of a study into one ``table.csv``, after a completeness check.

One row per run: ``run_id``, ``group_id``, ``seed``, ``status``, ``grids`` (the study grids the run
belongs to, ``;``-separated), the result-determining config flattened to dotted columns
(``model.width``, ``data.corruption.fraction``, ...), the final metrics, and each measure as
``m.<name>`` with its uncertainty as ``m.<name>.stderr``.

A grid with missing or diverged runs is an error that names them, unless the study sets
``allow_gaps: true``; then diverged runs stay in the table with their status and the analyses use
the ``ok`` rows only.

By hand: ``python -m flatness.stages.aggregate results/<study>``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from flatness.config import result_config
from flatness.io import atomic_write, read_json
from flatness.tables import measure_column, stderr_column

METRIC_KEYS = (
    "status", "stopped_by", "train_loss", "train_acc", "test_loss", "test_acc", "gen_gap",
    "gen_gap_loss", "test_error", "steps", "epochs", "time_to_fit_epoch", "time_to_fit_step",
    "train_seconds", "n_params", "divergence", "diverged_step",
)  # fmt: skip


class IncompleteStudyError(RuntimeError):
    """Runs of the study are missing or diverged and the study does not allow gaps."""


def flatten(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= flatten(value, f"{name}.")
        elif not isinstance(value, list):
            out[name] = value
    return out


def run_row(run_dir: Path, grids: list[str]) -> dict[str, Any]:
    """One table row from a run folder's ``config.yaml``, ``metrics.json`` and ``measures.json``."""
    cfg = OmegaConf.load(run_dir / "config.yaml")
    metrics = read_json(run_dir / "metrics.json")
    row: dict[str, Any] = {
        "run_id": metrics["run_id"],
        "group_id": metrics["group_id"],
        "seed": metrics["seed"],
        "grids": ";".join(grids),
    }
    row |= {k: v for k, v in flatten(result_config(cfg)).items() if k != "seed"}
    row |= {k: metrics.get(k) for k in METRIC_KEYS}
    measures_path = run_dir / "measures.json"
    if measures_path.exists():
        for name, result in read_json(measures_path).get("measures", {}).items():
            row[measure_column(name)] = result.get("value")
            row[stderr_column(measure_column(name))] = result.get("stderr")
    return row


def completeness(manifest: dict, results_dir: Path) -> tuple[list[str], list[str]]:
    """Run ids of the manifest that are missing (no metrics.json) and that diverged."""
    missing, diverged = [], []
    for rid in manifest["runs"]:
        path = results_dir / "runs" / rid / "metrics.json"
        if not path.exists():
            missing.append(rid)
        elif read_json(path)["status"] != "ok":
            diverged.append(rid)
    return missing, diverged


def build_table(results_dir: Path) -> pd.DataFrame:
    """The study table; raises ``IncompleteStudyError`` on gaps the study does not allow."""
    manifest = read_json(results_dir / "manifest.json")
    missing, diverged = completeness(manifest, results_dir)
    if (missing or diverged) and not manifest["allow_gaps"]:
        lines = [f"  {rid}: missing ({_describe(manifest, rid)})" for rid in missing]
        lines += [f"  {rid}: diverged ({_describe(manifest, rid)})" for rid in diverged]
        raise IncompleteStudyError(
            f"study {manifest['study']!r} has {len(missing)} missing and {len(diverged)} diverged "
            "runs, and its config does not allow gaps (set study.allow_gaps: true to analyse the "
            "rest):\n" + "\n".join(lines)
        )
    rows = [
        run_row(results_dir / "runs" / rid, spec["grids"])
        for rid, spec in manifest["runs"].items()
        if rid not in missing
    ]
    return pd.DataFrame(rows)


def _describe(manifest: dict, rid: str) -> str:
    spec = manifest["runs"][rid]
    grid_keys = [o for o in spec["overrides"] if not o.startswith(("out_dir=", "tracking."))]
    return f"grids {', '.join(spec['grids'])}: " + " ".join(grid_keys[-6:])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", type=Path, help="results/<study>")
    args = parser.parse_args(argv)
    table = build_table(args.results_dir)
    atomic_write(args.results_dir / "table.csv", lambda tmp: table.to_csv(tmp, index=False))
    print(f"{args.results_dir / 'table.csv'}: {len(table)} runs")


if __name__ == "__main__":
    main()
