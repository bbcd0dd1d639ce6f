"""Benchmark: the cost of limiting numpy/scipy's BLAS to one thread around each small scipy call.

Side by side in one process, on the 15k-parameter MNIST-1D MLP of ``bench_measures`` (default
``hessian_eigen`` settings, so one tridiagonal eigensolve per Lanczos step): the measure with
``threadpoolctl.threadpool_limits(1)`` per call (which rescans every loaded library each time)
against ``flatness.measures.core.blas.one_blas_thread`` (a controller built once, BLAS pools only).

Usage: python bench/bench_blas_limit.py [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from unittest import mock

import torch
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_measures import mnist1d, train

from flatness.measures import MEASURES, MeasureContext, select_subset
from flatness.measures.algorithms import eigen


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x, y = mnist1d()
    model = train(100, x, y, 500)
    data = select_subset(x, y, 1000, seed=0)
    times = {"threadpool_limits(1) per call": [], "one_blas_thread (cached)": []}
    for _ in range(args.repeats):  # alternate, so load changes hit both alike
        for label in times:
            patch = (
                mock.patch.object(eigen, "one_blas_thread", lambda: threadpool_limits(1))
                if label.startswith("threadpool")
                else contextlib.nullcontext()
            )
            with patch:
                t0 = time.perf_counter()
                lam_max, _ = MEASURES["hessian_eigen"](model, data, {}, 0, MeasureContext())
                times[label].append(time.perf_counter() - t0)
    steps = lam_max.details["n_steps"]
    for label, ts in times.items():
        print(f"{label:32s} hessian_eigen ({steps} Lanczos steps): best {min(ts):.2f} s")


if __name__ == "__main__":
    main()
