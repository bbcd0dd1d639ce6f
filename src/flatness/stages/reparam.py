"""The ``reparam`` stage (Dinh et al. 2017): rescale trained models, recompute every measure.

Per run (``python -m flatness.stages.reparam run <overrides>``): for each function-preserving
transform (layer-wise alpha-scaling, per-unit rescaling, and the batch-norm symmetry when the model
has batch norm) over the study's alpha grid, it checks the largest logit change on the whole test
set in float64 and recomputes the measure suite, writing ``reparam.json``.

Per study (``python -m flatness.stages.reparam summary results/<study> <reparam.json>...``): the
invariance of every measure (measured, not assumed) in ``reparam/invariance.csv``, and Dinh's point
made directly: the better-generalizing, flatter of two trained models is rescaled until it is the
sharper one, its test accuracy unchanged. ``reparam/summary.json`` holds numbers only: the claim's
verdict is decided in ``flatness.analysis`` and the three figures are drawn by the figures stage.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch
from omegaconf import OmegaConf

from flatness.io import atomic_write_json, read_json
from flatness.measures import make_context, run_suite, select_subset
from flatness.plotting import reparam as plots
from flatness.reparam import blocks
from flatness.reparam_study import alpha_grid, dinh_flip, invariance_verdicts, reparam_sweep
from flatness.stages.common import TrainedRun, load_run, set_threads
from flatness.tables import measure_column

SHARPNESS = "lambda_max"


def suite_fn(run: TrainedRun, only: list[str] | None = None):
    """``model -> {measure: value}`` with the run's settings, subset and seed (the same noise for
    every rescaled model, so a measure that is invariant comes out exactly invariant)."""
    settings = OmegaConf.to_container(run.cfg.measures, resolve=True)
    if only is not None:
        for name, block in settings.items():
            if isinstance(block, dict) and "enabled" in block:
                block["enabled"] = name in only
    data = select_subset(run.splits.x_train, run.splits.y_train, int(settings["subset_size"]),
                         int(run.cfg.data.subset_seed))  # fmt: skip
    context = make_context(settings, init_model=run.init_model)

    def measure(model: torch.nn.Module) -> dict[str, float]:
        results = run_suite(model, data, settings, int(run.cfg.seed), context)
        return {name: r.value for name, r in results.items()}

    return measure


def reparam_run(overrides: list[str], alphas: list[float]) -> dict:
    run = load_run(overrides)
    transforms = ["layer", "unit"] + (["bn"] if any(b.bn for b in blocks(run.model)) else [])
    out = {"run_id": run.metrics["run_id"], "test_acc": run.metrics["test_acc"], "sweeps": {}}
    if run.metrics["status"] == "ok":
        measure = suite_fn(run)
        for transform in transforms:
            sweep = reparam_sweep(run.model, measure, run.splits.x_test, alphas, transform)
            out["sweeps"][transform] = sweep | {"verdicts": invariance_verdicts(sweep)}
    atomic_write_json(run.run_dir / "reparam.json", out)
    return out


def _dinh_numbers(sweeps: list[dict]) -> list[dict]:
    """Per model: how far layer-wise alpha-scaling moved the logits and lambda_max (the numbers
    ``flatness.analysis.claims_topology.dinh_rescaling`` decides on)."""
    out = []
    for s in sweeps:
        if "layer" not in s["sweeps"]:
            continue
        layer = s["sweeps"]["layer"]
        fold = [v["fold_range"] for v in layer["verdicts"] if v["measure"] == SHARPNESS]
        out.append({"max_abs_logit_change": layer["max_abs_logit_change"],
                    "function_preserved": layer["function_preserved"],
                    "fold_range_lambda_max": fold[0] if fold else None})  # fmt: skip
    return out


def _flip_pair(table: pd.DataFrame) -> tuple[str, str] | None:
    """A: the best test accuracy; B: a worse-generalizing run that is sharper than A."""
    column = measure_column(SHARPNESS)
    ok = table[(table["status"] == "ok") & table[column].notna()]
    if len(ok) < 2:
        return None
    a = ok.loc[ok["test_acc"].idxmax()]
    sharper = ok[(ok["test_acc"] < a["test_acc"]) & (ok[column] > a[column])]
    if sharper.empty:
        return None
    return a["run_id"], sharper.loc[sharper["test_acc"].idxmin()]["run_id"]


def summary(results: Path, reparam_files: list[Path]) -> dict:
    sweeps = [read_json(p) for p in reparam_files]
    first = next((s for s in sweeps if "layer" in s["sweeps"]), None)
    if first is not None:
        all_verdicts = [v | {"transform": t} for s in sweeps for t, sw in s["sweeps"].items()
                        for v in sw["verdicts"]]  # fmt: skip
        plots.write_verdicts_csv(all_verdicts, results / "reparam" / "invariance.csv")
    flip = None
    pair = _flip_pair(pd.read_csv(results / "table.csv"))
    if pair is not None:
        run_a, run_b = (load_run(run_dir=results / "runs" / rid) for rid in pair)
        lam = suite_fn(run_a, only=["hessian_eigen"])
        flip = dinh_flip(run_a.model, run_b.model, lambda m: lam(m)[SHARPNESS],
                         run_a.splits.x_test, run_a.splits.y_test)  # fmt: skip
        flip |= {"run_a": pair[0], "run_b": pair[1]}
    out = {
        "dinh_models": _dinh_numbers(sweeps),
        "dinh_flip": flip,
        "sharpness": SHARPNESS,
        # the first model's layer-wise sweep (measures against alpha, their invariance), drawn
        "layer_sweep": None
        if first is None
        else first["sweeps"]["layer"] | {"run_id": first["run_id"]},
    }
    atomic_write_json(results / "reparam" / "summary.json", out)
    return out


def _floats(text: str) -> list[float]:
    return [float(a) for a in text.split(",")]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("run", help="rescale one trained run")
    one.add_argument("--alphas", type=_floats, default=alpha_grid(), help="comma-separated")
    one.add_argument("overrides", nargs="+", help="the run's Hydra overrides")
    study = sub.add_parser("summary", help="invariance table and the Dinh flip of a study")
    study.add_argument("results_dir", type=Path)
    study.add_argument("reparam_files", type=Path, nargs="*")
    args = parser.parse_args(argv)
    set_threads()
    if args.command == "run":
        out = reparam_run(args.overrides, args.alphas)
        print(f"{out['run_id']}: {', '.join(out['sweeps'])}")
    else:
        models = summary(args.results_dir, args.reparam_files)["dinh_models"]
        print(f"{len(models)} rescaled model(s): {models}")


if __name__ == "__main__":
    main()
