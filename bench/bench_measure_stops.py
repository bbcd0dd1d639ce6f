"""Benchmark: do the measures stop when converged, and are their reported errors honest?

Three MNIST-1D MLPs 40-w-w-10 (about 2.7k, 15k and 79k parameters, briefly trained as in
``bench_measures``), default measure settings (conf/measures/default.yaml):

- ``hessian_eigen``: per start seed, the products lambda_max reports (``n_hvp``) and its flag; then
  lambda_max asked for alone (``top_k=1, lambda_min_steps=0``) and the top-k alone
  (``lambda_min_steps=0``): the products each run spent and the true relative error where it
  stopped, against scipy's ARPACK (``eigsh`` on the same Hessian-vector product, tol 1e-12); and
  the products the default run spent (it goes on for lambda_min's own budget);
- the coverage of every trace that reports a standard error (``hessian_trace``, ``slq_trace``):
  over ``--seeds`` seeds, how often the exact trace (from ``--trace-probes`` Hutchinson probes of
  the exact Hessian on the 2.7k model, where it is formed column by column) lies within 3 reported
  standard errors;
- Keskar's flag against L-BFGS-B's status, at the default ``maxiter`` and at 200.

Usage: python bench/bench_measure_stops.py [--threads 1] [--seeds 200] [--widths 32 100 256]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import scipy.sparse.linalg
import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_measures import mnist1d, train

from flatness.measures import MEASURES, MeasureContext, select_subset
from flatness.measures.core.objective import Objective
from flatness.measures.core.operators import HessianOperator

ROOT = Path(__file__).resolve().parents[1]


def arpack_top(obj: Objective, k: int) -> np.ndarray:
    """The top-``k`` eigenvalues by ARPACK's implicitly restarted Lanczos (descending)."""
    op = HessianOperator(obj)
    lin = scipy.sparse.linalg.LinearOperator(
        (obj.size, obj.size), matvec=lambda v: op.matvec(torch.from_numpy(v.ravel())).numpy()
    )
    values = scipy.sparse.linalg.eigsh(lin, k=k, which="LA", tol=1e-12, return_eigenvectors=False)
    return np.sort(values)[::-1]


def bench_eigen(width, x, y, steps, settings, n_starts):
    model = train(width, x, y, steps)
    data = select_subset(x, y, int(settings["subset_size"]), seed=0)
    block = settings["hessian_eigen"]
    ref = arpack_top(Objective(model, data), block["top_k"])
    rows = []
    for seed in range(n_starts):
        run = MEASURES["hessian_eigen"]
        lam_max, lam_min = run(model, data, block, seed, MeasureContext())
        # each quantity asked for alone stops at its own convergence: its error there
        alone = run(
            model, data, block | {"top_k": 1, "lambda_min_steps": 0}, seed, MeasureContext()
        )
        top = run(model, data, block | {"lambda_min_steps": 0}, seed, MeasureContext())[0]
        top_k = np.asarray(top.details["top_k"])
        rows.append(
            (
                lam_max.n_hvp,
                lam_max.converged,
                alone[0].details["n_steps"],
                abs(alone[0].value - ref[0]) / abs(ref[0]),
                top.details["steps_top"],
                top.details["n_steps"],
                float(np.max(np.abs(top_k - ref) / np.abs(ref))),
                lam_max.details["n_steps"],
                lam_min.converged,
            )
        )
    return sum(p.numel() for p in model.parameters()), ref[0], rows


def exact_trace(obj: Objective) -> float:
    """``sum_i e_i^T H e_i``: one product per parameter (the 2.7k model: seconds)."""
    op = HessianOperator(obj)
    eye = torch.zeros(obj.size, dtype=obj.dtype)
    total = 0.0
    for i in range(obj.size):
        eye[i] = 1.0
        total += float(op.matvec(eye)[i])
        eye[i] = 0.0
    return total


def bench_coverage(x, y, steps, settings, n_seeds, width=32):
    """Per trace variant: (reported an error, of which within 3 errors, worst |error| / se)."""
    model = train(width, x, y, steps)
    data = select_subset(x, y, int(settings["subset_size"]), seed=0)
    truth = exact_trace(Objective(model, data))
    trace, slq = settings["hessian_trace"], settings["spectral_density"]
    variants = {
        "hessian_trace (default: hutchinson, 50)": ("hessian_trace", trace),
        "hessian_trace hutchpp, 50": ("hessian_trace", trace | {"method": "hutchpp"}),
        "slq_trace (default: 2 probes)": ("spectral_density", slq),
        "slq_trace, 10 probes": ("spectral_density", slq | {"n_probes": 10}),
    }
    out = {}
    for label, (measure, block) in variants.items():
        z = []
        for seed in range(n_seeds):
            (res,) = MEASURES[measure](model, data, block, seed, MeasureContext())
            if res.stderr is not None:
                z.append(abs(res.value - truth) / res.stderr)
        z = np.asarray(z)
        out[label] = (len(z), int((z <= 3).sum()), float(z.max()) if z.size else float("nan"))
    return truth, out


def bench_keskar(x, y, steps, settings, width=100):
    model = train(width, x, y, steps)
    data = select_subset(x, y, int(settings["subset_size"]), seed=0)
    rows = []
    for maxiter in (settings["keskar"]["maxiter"], 200):
        block = settings["keskar"] | {"maxiter": maxiter}
        for res in MEASURES["keskar"](model, data, block, 0, MeasureContext()):
            rows.append((res.name, maxiter, res.details["n_iter"], res.details["status"],
                         res.converged, res.value))  # fmt: skip
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=1500, help="SGD steps of brief training")
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 100, 256])
    parser.add_argument("--starts", type=int, default=3, help="Lanczos start seeds per model")
    parser.add_argument("--seeds", type=int, default=200, help="seeds for the trace coverage")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/measures/default.yaml"))
    x, y = mnist1d()
    print(f"torch {torch.__version__}, {args.threads} thread(s), default measure settings")
    print(f"{'params':>7} {'lam_max':>9} | lambda_max: n_hvp, converged; alone: hvp, true rel."
          f" error | top-k: steps_top; alone: hvp, worst rel. error | default run: hvp,"
          f" lambda_min converged")  # fmt: skip
    for width in args.widths:
        n, lam, rows = bench_eigen(width, x, y, args.steps, settings, args.starts)
        for hvp, ok, alone_hvp, err, top_steps, top_hvp, top_err, total, ok_min in rows:
            print(f"{n:7d} {lam:9.4f} | {hvp:3d} {ok!s:>5}; {alone_hvp:3d} {err:8.1e} |"
                  f" {top_steps!s:>4}; {top_hvp:3d} {top_err:8.1e} | {total:3d} {ok_min}")  # fmt: skip
    truth, coverage = bench_coverage(x, y, args.steps, settings, args.seeds)
    print(f"\ntrace coverage over {args.seeds} seeds, 2.7k model, exact trace {truth:.6g}:")
    for label, (n_err, n_in, worst) in coverage.items():
        share = f"{n_in / n_err:6.1%}" if n_err else "   n/a"
        print(
            f"  {label:42s} reported an error {n_err:3d}x, within 3 se {share}, worst {worst:.1f} se"
        )
    print("\nKeskar (15k model): name, maxiter, L-BFGS-B iterations, status, converged, value")
    for row in bench_keskar(x, y, args.steps, settings):
        print("  {} maxiter={} nit={} status={} converged={} value={:.4g}".format(*row))


if __name__ == "__main__":
    main()
