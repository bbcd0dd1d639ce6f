"""Benchmark: the stacked step engine against the reference one (one run at a time), and a study.

    python bench/bench_grouped.py                          # training throughput, ~2 minutes
    python bench/bench_grouped.py --study smoke            # + the smoke study, both ways (~5 min)
    python bench/bench_grouped.py --study default          # + the default study (~30+ minutes)

Training: ``--runs`` (16) MNIST-1D MLPs (40-w-w-10, SGD, batch 100, full evaluation every epoch as
real runs do) trained by ``flatness.training.driver.train`` with the stacked engine in one loop,
against the same runs trained one after another by the reference engine, in one process, at each
``--widths``.

Study: ``snakemake --cores 2`` in two fresh temp folders, ``group_size=1`` (one process per run and
stage) and ``group_size=N``; wall clock of each, then the two results compared: every verdict,
the figures produced, and the largest difference in the table's metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from flatness.config import compose_run
from flatness.data import load_dataset
from flatness.training.driver import build_run_model, prepare_splits, train

REPO = Path(__file__).resolve().parents[1]


def bench_training(width: int, n_runs: int, epochs: int) -> dict:
    base = [f"model.width={width}", f"train.epochs={epochs}", "tracking.mode=disabled"]
    cfgs = [compose_run([*base, f"seed={s}"]) for s in range(n_runs)]
    dataset = load_dataset(cfgs[0].data)
    splits = [prepare_splits(c, dataset)[0] for c in cfgs]
    models = [build_run_model(c, dataset.input_shape, dataset.n_classes) for c in cfgs]
    started = time.perf_counter()
    grouped = train(cfgs, models, splits, "stacked")
    t_group = time.perf_counter() - started
    started = time.perf_counter()
    train(cfgs, models, splits, "reference")
    t_seq = time.perf_counter() - started
    steps = sum(r.steps for r in grouped)
    return {"width": width, "runs": n_runs, "steps_per_run": grouped[0].steps,
            "sequential_s": t_seq, "grouped_s": t_group, "sequential_steps_per_s": steps / t_seq,
            "grouped_steps_per_s": steps / t_group, "speedup": t_seq / t_group}  # fmt: skip


def bench_study(study: str, group_size: int, cores: int) -> dict:
    snakemake = Path(sys.executable).with_name("snakemake")
    out = {}
    workdirs = {}
    for size in (1, group_size):
        workdir = Path(tempfile.mkdtemp(prefix=f"bench-{study}-g{size}-"))
        cmd = [str(snakemake), "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--cores", str(cores), "--config", f"study={study}", f"group_size={size}"]  # fmt: skip
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        out[f"group_size={size}"] = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"snakemake failed for group_size={size}:\n{proc.stderr[-3000:]}")
        workdirs[size] = workdir / "results" / study
        print(f"  {study}, group_size={size}: {out[f'group_size={size}']:.0f} s ({workdir})")
    a, b = workdirs[1], workdirs[group_size]
    out["speedup"] = out["group_size=1"] / out[f"group_size={group_size}"]
    out["verdicts"] = _compare_verdicts(a, b)
    out["figures_same_set"] = sorted(p.name for p in (a / "figures").glob("*.png")) == sorted(
        p.name for p in (b / "figures").glob("*.png")
    )
    out["table"] = _compare_tables(a, b)
    return out


def _compare_verdicts(a: Path, b: Path) -> dict:
    va = {
        v["claim_id"]: v["verdict"]
        for v in json.loads((a / "verdicts.json").read_text())["verdicts"]
    }
    vb = {
        v["claim_id"]: v["verdict"]
        for v in json.loads((b / "verdicts.json").read_text())["verdicts"]
    }
    return {"identical": va == vb, "differing": {k: (va.get(k), vb.get(k)) for k in va if va.get(k) != vb.get(k)}}  # fmt: skip


def _compare_tables(a: Path, b: Path) -> dict:
    ta = pd.read_csv(a / "table.csv").set_index("run_id").sort_index()
    tb = pd.read_csv(b / "table.csv").set_index("run_id").sort_index()
    cols = [c for c in ("train_loss", "test_loss", "train_acc", "test_acc", "epochs", "m.lambda_max")
            if c in ta and c in tb]  # fmt: skip
    diffs = {}
    for c in cols:
        rel = ((ta[c] - tb[c]).abs() / ta[c].abs().clip(lower=1e-12)).max()
        diffs[c] = float(rel)
    same_status = bool((ta["status"] == tb["status"]).all())
    return {"max_rel_diff": diffs, "same_status": same_status}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 100, 256])
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=12, help="40 steps each (n_train 4000)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--study", help="also run this study end to end, both ways")
    parser.add_argument("--group-size", type=int, default=16)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("WANDB_MODE", "offline")
    report = {"threads": args.threads, "training": []}
    if not args.skip_training:
        for width in args.widths:
            row = bench_training(width, args.runs, args.epochs)
            report["training"].append(row)
            print(f"width {width:4d}: {args.runs} runs x {row['steps_per_run']} steps: sequential "
                  f"{row['sequential_s']:.2f} s, grouped {row['grouped_s']:.2f} s, "
                  f"speedup {row['speedup']:.2f}x")  # fmt: skip
    if args.study:
        report["study"] = {args.study: bench_study(args.study, args.group_size, args.cores)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
