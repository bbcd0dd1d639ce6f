"""Benchmark: the measure stage for a group of MNIST-1D MLPs, stacked against one by one.

16 MLPs 40-w-w-10 (default width 100, 15k parameters), trained briefly from different seeds, default
measure settings (conf/measures/default.yaml), in one process, side by side:

- one by one: ``run_suite`` per run (what ``measure_group`` did before);
- grouped: ``run_group_suite`` (what can be stacked over the runs is, the rest per run);

each for the Hessian measures, local entropy, rho-sharpness alone and the whole suite (wall and
process CPU seconds: on a shared machine the CPU ratio is the steadier one), plus the largest relative difference between a run's grouped and lone values
(the stacked kernels round differently) and whether every count and flag agrees.

Usage: python bench/bench_measure_group.py [--threads 1] [--runs 16] [--width 100] [--steps 500]
       [--only hessian|local_entropy|rho_sharpness|suite]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_measures import mnist1d, train

from flatness.measures import MeasureContext, run_group_suite, run_suite, select_subset
from flatness.models import build_mlp

ROOT = Path(__file__).resolve().parents[1]
HESSIAN = ("hessian_eigen", "hessian_trace", "spectral_density")
CASES = {"hessian": HESSIAN, "local_entropy": ("local_entropy",),
         "rho_sharpness": ("rho_sharpness",), "suite": None}  # fmt: skip


def only(settings: dict, names) -> dict:
    """The settings with every measure but ``names`` disabled."""
    blocks = {k: v for k, v in settings.items() if isinstance(v, dict)}
    return settings | {k: v | {"enabled": k in names and v.get("enabled", True)}
                       for k, v in blocks.items()}  # fmt: skip


def compare(grouped, alone) -> tuple[float, bool]:
    worst, same = 0.0, True
    for g_run, a_run in zip(grouped, alone, strict=True):
        for name, a in a_run.items():
            g = g_run[name]
            same &= (g.n_hvp, g.n_grad, g.n_loss, g.converged) == (
                a.n_hvp, a.n_grad, a.n_loss, a.converged)  # fmt: skip
            if math.isfinite(a.value) and a.value != 0:
                worst = max(worst, abs(g.value - a.value) / abs(a.value))
    return worst, same


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--steps", type=int, default=500, help="SGD steps of brief training")
    parser.add_argument("--only", choices=sorted(CASES), action="append", help="cases to time")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/measures/default.yaml"))
    x, y = mnist1d()
    models = [train(args.width, x, y, args.steps, seed=r) for r in range(args.runs)]
    inits = [build_mlp((40,), 10, depth=2, width=args.width) for _ in models]
    data = [select_subset(x, y, int(settings["subset_size"]), seed=0)] * args.runs
    seeds = list(range(args.runs))
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.runs} MLPs of width"
          f" {args.width}, default measure settings")  # fmt: skip
    for label in args.only or list(CASES):
        block = settings if CASES[label] is None else only(settings, CASES[label])
        t0, c0 = time.perf_counter(), time.process_time()
        alone = [run_suite(m, d, block, s, MeasureContext(init_model=i))
                 for m, d, s, i in zip(models, data, seeds, inits, strict=True)]  # fmt: skip
        t1, c1 = time.perf_counter(), time.process_time()
        grouped = run_group_suite(models, data, block, seeds, MeasureContext(), init_models=inits)
        t2, c2 = time.perf_counter(), time.process_time()
        worst, same = compare(grouped, alone)
        print(
            f"{label:13s} one by one {t1 - t0:7.2f} s (cpu {c1 - c0:7.2f}), grouped"
            f" {t2 - t1:7.2f} s (cpu {c2 - c1:7.2f}), ratio {(t1 - t0) / (t2 - t1):4.2f}x"
            f" (cpu {(c1 - c0) / (c2 - c1):4.2f}x);"
            f" worst relative difference {worst:.1e}, counts and flags agree: {same}"
        )


if __name__ == "__main__":
    main()
